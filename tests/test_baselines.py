"""Tests of the classical benchmark baselines (benchmarks/baselines.py) on synthetic speech plus noise.

Speech comes from flite (16 kHz); noise is seeded white or pink Gaussian noise mixed at 5 dB SNR. The
margins asserted sit well below what was measured when the baselines were written (listed per test), so
they catch a broken estimator or gain without being brittle.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# benchmarks/ is a top-level folder, not part of the installed package: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.baselines import BASELINES, mcra_noise_psd, mmse_lsa, _frame_params, _stft  # noqa: E402

SR = 16000
TEXT = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
        "It is easy to tell the depth of a well.")

needs_flite = pytest.mark.skipif(shutil.which("flite") is None,
                                 reason="flite is not installed: no speech signal for the quality tests")


def _snr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2)))


def _segsnr(ref: np.ndarray, est: np.ndarray, n: int = 512, hop: int = 256) -> float:
    """Segmental SNR, frame values clipped to [-10, 35] dB (Hansen & Pellom 1998)."""
    fr = np.lib.stride_tricks.sliding_window_view(ref, n)[::hop]
    fe = np.lib.stride_tricks.sliding_window_view(est, n)[::hop]
    seg = 10 * np.log10(np.sum(fr ** 2, 1) / (np.sum((fr - fe) ** 2, 1) + 1e-12) + 1e-12)
    return float(np.mean(np.clip(seg, -10, 35)))


def _pesq(ref: np.ndarray, deg: np.ndarray) -> float:
    from pesq import pesq
    return float(pesq(SR, ref, deg, "wb"))


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=float)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)  # 1/f power


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    path = tmp_path_factory.mktemp("flite") / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", TEXT, "-o", str(path)], check=True, capture_output=True)
    sig, sr = sf.read(str(path), dtype="float64")
    if sr != SR:
        import torch
        from upcycle_se.audio import resample_audio
        sig = resample_audio(torch.from_numpy(sig), sr, SR).numpy()
    return sig


@pytest.fixture(scope="module", params=["white", "pink"])
def mixture(request, speech):
    """``(clean, noisy, noise)`` at 5 dB SNR."""
    noise = _noise(request.param, speech.size, np.random.default_rng(7))
    noise *= np.sqrt(np.sum(speech ** 2) / np.sum(noise ** 2) / 10 ** (5 / 10))
    return speech, speech + noise, noise


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("length", [1, 2, 7, 511, 16001])
def test_same_length_and_dtype(name, length):
    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    y = BASELINES[name](x, sr=SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_silence_gives_finite_silence(name):
    y = BASELINES[name](np.zeros(8001), sr=SR)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) < 1e-9


def test_batch_matches_rows_and_rejects_nan():
    x = np.random.default_rng(0).standard_normal((2, 4001))
    np.testing.assert_allclose(mmse_lsa(x), np.stack([mmse_lsa(r) for r in x]), atol=1e-10)
    with pytest.raises(ValueError):
        mmse_lsa(np.array([0.0, np.nan, 1.0]))


@needs_flite
def test_mcra_tracks_noise_under_speech(mixture):
    """MCRA sees only the mixture; its estimate should match the true noise PSD (measured median ratio
    1.00 for white, 1.04 for pink noise)."""
    _, noisy, noise = mixture
    n_fft, hop = _frame_params(SR, 32.0)
    power = np.abs(_stft(noisy[None], n_fft, hop)) ** 2
    true_psd = np.mean(np.abs(_stft(noise[None], n_fft, hop)) ** 2, axis=-1, keepdims=True)
    est = mcra_noise_psd(power, hop / SR)
    ratio = est[..., 50:] / true_psd  # past the first 0.4 s of start-up
    assert 0.8 < np.median(ratio) < 1.25


@needs_flite
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_improves_noisy_speech(name, mixture):
    """Measured (white / pink, 5 dB): SNR +9.5..9.6 / +6.2..6.5 dB, segSNR +7.5..8.8 / +5.4..6.3 dB,
    PESQ-wb 1.02 -> 1.05..1.21 / 1.03 -> 1.14..1.27 (white noise at 5 dB sits near PESQ's floor)."""
    clean, noisy, _ = mixture
    out = BASELINES[name](noisy, sr=SR)
    assert out.shape == noisy.shape
    assert _snr(clean, out) > _snr(clean, noisy) + 3.0
    assert _segsnr(clean, out) > _segsnr(clean, noisy) + 3.0
    assert _pesq(clean, out) >= _pesq(clean, noisy)


@needs_flite
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_clean_speech_passes_nearly_unchanged(name, speech):
    """Measured output-vs-input SNR on clean speech: 22-27 dB."""
    assert _snr(speech, BASELINES[name](speech, sr=SR)) > 15.0
