"""STFT front end: sizes, values against a direct DFT, perfect reconstruction, both back ends."""

import math

import numpy as np
import pytest
import torch

from upcycle_se.nnet.stft import ComplexSTFT

LENGTHS = [1, 7, 255, 399, 1001, 16000, 16001, 32000]


@pytest.mark.parametrize("backend", ["torch", "conv"])
@pytest.mark.parametrize("length", LENGTHS)
def test_istft_inverts_stft(backend, length):
    torch.manual_seed(length)
    stft = ComplexSTFT(backend=backend)
    wav = torch.rand(3, length) * 2 - 1
    spec = stft.stft(wav)
    assert spec.shape == (3, 2, 257, length // 100 + 1) and spec.dtype == torch.float32
    assert stft.n_frames(length) == spec.shape[-1]
    torch.testing.assert_close(stft.istft(spec, length), wav, atol=1e-5, rtol=0)


def test_paper_sizes():
    stft = ComplexSTFT()
    assert (stft.n_fft, stft.win_length, stft.hop_length, stft.n_freqs) == (512, 400, 100, 257)
    # 1 s at 16 kHz: 161 centred frames of 25 ms every 6.25 ms
    assert stft.stft(torch.zeros(1, 16000)).shape == (1, 2, 257, 161)


def test_values_match_a_direct_dft_of_a_windowed_frame():
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(3000).astype(np.float32)
    spec = ComplexSTFT().stft(torch.from_numpy(wav)[None]).numpy()[0]
    # Frame t is centred on sample 100 t: samples 100 t - 256 ... 100 t + 255, the 400-sample periodic
    # Hann window in the middle 400 of the 512 (56 zeros each side).
    t = 7
    window = np.zeros(512)
    window[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frame = wav[100 * t - 256 : 100 * t + 256] * window
    expected = np.fft.rfft(frame)
    np.testing.assert_allclose(spec[0, :, t], expected.real, atol=1e-3)
    np.testing.assert_allclose(spec[1, :, t], expected.imag, atol=1e-3)
    # Zero padding (not reflection) at the edges: frame 0 sees zeros then the first 256 samples.
    frame0 = np.concatenate([np.zeros(256), wav[:256]]) * window
    np.testing.assert_allclose(spec[0, :, 0], np.fft.rfft(frame0).real, atol=1e-3)


def test_sinusoid_peaks_at_its_bin_with_its_phase():
    n = torch.arange(16000, dtype=torch.float64)
    # 1 kHz = bin 32 (16000 / 512 = 31.25 Hz per bin); a cosine starting in phase at sample 0.
    wav = torch.cos(2 * math.pi * 1000 * n / 16000).float()[None]
    spec = ComplexSTFT().stft(wav)[0]
    mag = spec.pow(2).sum(0).sqrt()
    assert int(mag[:, 80].argmax()) == 32
    # Frame 80 is centred on sample 8000 = 500 periods: the phase relative to the frame centre is 0,
    # and the frame's first sample is 256 samples before it: phase -2 pi 32 * 256 / 512 = -32 pi = 0.
    phase = torch.atan2(spec[1, 32, 80], spec[0, 32, 80])
    assert abs(float(phase)) < 1e-3
    # Amplitude of a unit cosine: half the window sum, 200 / 2.
    assert float(mag[32, 80]) == pytest.approx(100.0, rel=1e-4)


@pytest.mark.parametrize("length", [1, 513, 16000, 23457])
def test_conv_backend_matches_torch_backend(length):
    torch.manual_seed(1)
    wav = torch.randn(2, length)
    ref, conv = ComplexSTFT(), ComplexSTFT(backend="conv")
    spec = ref.stft(wav)
    torch.testing.assert_close(conv.stft(wav), spec, atol=1e-4, rtol=1e-4)
    # On an arbitrary (inconsistent) spectrum too, as the generator produces.
    noise_spec = torch.randn_like(spec)
    torch.testing.assert_close(conv.istft(noise_spec, length), ref.istft(noise_spec, length), atol=1e-5, rtol=1e-4)


def test_backend_switch_and_state_dict():
    stft = ComplexSTFT()
    stft.backend = "conv"
    assert stft.backend == "conv"
    with pytest.raises(ValueError):
        stft.backend = "fft"
    # Windows and bases are derived from the sizes: nothing to checkpoint.
    assert stft.state_dict() == {}


def test_rejects_wrong_shapes():
    stft = ComplexSTFT()
    with pytest.raises(ValueError):
        stft.stft(torch.zeros(16000))
    with pytest.raises(ValueError):
        stft.istft(torch.zeros(1, 2, 256, 10), 900)
    with pytest.raises(ValueError):
        ComplexSTFT(n_fft=256, win_length=400)
