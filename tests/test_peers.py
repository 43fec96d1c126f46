"""The peers of the quality benchmark (benchmarks/peers.py): time alignment with an impulse, shapes, skips.

Each peer is a third-party package of the ``peers`` extra; its tests skip, saying how to install it, where
it does not import.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is a top-level folder, not part of the installed package: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import peers  # noqa: E402
from benchmarks.baselines import BASELINES, ENHANCERS  # noqa: E402

SR = 16000
MISSING = peers.missing_peers()


def _peer(name: str):
    """``pytest.param`` of one peer, skipped with the reason when its package does not import."""
    return pytest.param(name, marks=pytest.mark.skipif(name in MISSING, reason=MISSING.get(name, "")), id=name)


ALL = [_peer(n) for n in peers.PEER_NAMES]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("at", [5, 4000, 4001, 4002, 7777, 15990, 15999])
def test_impulse_comes_out_at_its_input_sample(name, at):
    """An impulse in silence: the output's peak is at the impulse's sample (within one), so the peer's delay
    (RNNoise: two 48 kHz frames; WebRTC: 96 samples) is compensated, no resampling shift is left, and an
    impulse in the last samples is not cut off."""
    x = np.zeros(SR, dtype=np.float32)
    x[at] = 0.5
    y = peers.PEERS[name](x, SR)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.abs(y).max() > 1e-5, f"{name} removed the impulse entirely: its position cannot be checked"
    assert abs(int(np.argmax(np.abs(y))) - at) <= 1


# RNNoise takes a repeated click for noise and removes every click after the first one entirely (its output
# is 0 there), so a click train cannot locate its output; the impulses above and the speech below do.
@pytest.mark.parametrize("name", [n for n in ALL if n.values[0] != "rnnoise"])
def test_click_train_stays_aligned(name):
    """Clicks 0.2 s apart through a whole file: every click's output peak sits on its input sample
    (within one), so the alignment holds past the first frames and up to the end of the file."""
    x = np.zeros(2 * SR + 123)
    clicks = np.arange(1500, x.size - 200, 3200)
    x[clicks] = 0.5
    y = peers.PEERS[name](x, SR)
    assert y.shape == x.shape
    for c in clicks:
        window = np.abs(y[c - 800:c + 800])
        assert abs(int(np.argmax(window)) - 800) <= 1, f"{name}: click at {c} came out at {c - 800 + np.argmax(window)}"


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed: no speech signal")
@pytest.mark.parametrize("name", ALL)
def test_noisy_speech_output_is_not_shifted(name, tmp_path):
    """Speech (flite) in white noise at 5 dB: the output's cross-correlation with the input peaks at lag 0.

    Both are high-passed at 400 Hz (zero-phase) first: WebRTC's own high-pass filter leads the phase of the
    voice's low harmonics, which moves the full-band peak by a few samples without any delay.
    """
    import soundfile as sf
    from scipy.signal import butter, sosfiltfilt

    path = tmp_path / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "The birch canoe slid on the smooth planks.", "-o", str(path)],
                   check=True, capture_output=True)
    speech, sr = sf.read(path)
    assert sr == SR
    speech = 0.3 * speech / np.abs(speech).max()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(speech.size)
    x = speech + noise * np.sqrt(np.mean(speech ** 2) / np.mean(noise ** 2) / 10 ** 0.5)
    y = peers.PEERS[name](x, SR)
    sos = butter(4, 400, "highpass", fs=SR, output="sos")
    x, y = sosfiltfilt(sos, x), sosfiltfilt(sos, y)
    n = x.size
    xc = np.fft.irfft(np.fft.rfft(y, 2 * n) * np.conj(np.fft.rfft(x, 2 * n)))
    lags = np.r_[np.arange(0, 400), np.arange(-400, 0)]
    assert int(lags[np.argmax(np.r_[xc[:400], xc[-400:]])]) == 0


@pytest.mark.parametrize("name", ALL)
def test_shapes_batch_and_empty(name):
    """``[..., time]`` in, same shape out, rows independent; an empty signal gives an empty one."""
    rng = np.random.default_rng(0)
    x = 0.05 * rng.standard_normal((2, 8000))
    y = peers.PEERS[name](x, SR)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    np.testing.assert_allclose(y[1], peers.PEERS[name](x[1], SR), atol=1e-6)
    assert peers.PEERS[name](np.zeros(0), SR).shape == (0,)
    silence = peers.PEERS[name](np.zeros(4000), SR)  # noisereduce alone would give NaN (0 / 0)
    assert np.all(silence == 0)
    with pytest.raises(ValueError):
        peers.PEERS[name](np.array([0.0, np.nan]), SR)


def test_peers_are_enhancers_and_missing_ones_say_how_to_install(monkeypatch):
    assert {"rnnoise", "webrtc", "noisereduce"} <= set(ENHANCERS) - set(BASELINES)
    real_import = peers.importlib.import_module

    def no_webrtc(module, *args):
        if module == "webrtc_noise_gain":
            raise ImportError("No module named 'webrtc_noise_gain'")
        return real_import(module, *args)

    monkeypatch.setattr(peers.importlib, "import_module", no_webrtc)
    missing = peers.missing_peers()
    assert "webrtc" in missing and "pip install '.[peers]'" in missing["webrtc"]
    assert "webrtc-noise-gain==1.3.0" in missing["webrtc"]


@pytest.mark.skipif("webrtc" in MISSING, reason=MISSING.get("webrtc", ""))
def test_webrtc_level_zero_has_no_delay_to_remove():
    """Suppression off (level 0) passes the signal through undelayed: no 96-sample shift is applied to it."""
    x = np.zeros(SR)
    x[4000] = 0.5
    assert int(np.argmax(np.abs(peers.webrtc_ns(x, SR, level=0)))) == 4000
    with pytest.raises(ValueError):
        peers.webrtc_ns(x, SR, level=5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("sr", [8000, 48000])
def test_impulse_aligned_at_other_rates(name, sr):
    """At 8 and 48 kHz (RNNoise resampled to 48 kHz, WebRTC to 16 kHz, and back) the impulse stays put."""
    x = np.zeros(sr)
    x[sr // 3] = 0.5
    y = peers.PEERS[name](x, sr)
    assert y.shape == x.shape and abs(int(np.argmax(np.abs(y))) - sr // 3) <= 1
