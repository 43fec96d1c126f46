"""The figures of ``benchmarks/noise_estimate_probe.py`` on signals whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.noise_estimate_probe import probe, si_snr, speech_share


def _signals(seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    clean = np.sin(2 * np.pi * 440 * t) * (t < 0.5)  # a tone in the first half, silence after
    noise = 0.05 * rng.standard_normal(16000)
    return clean, noise


def test_si_snr_ignores_scale_and_counts_what_is_not_the_reference():
    clean, noise = _signals()
    assert si_snr(3.0 * noise, noise) > 100
    other = np.random.default_rng(1).standard_normal(16000)
    other -= (other @ noise) / (noise @ noise) * noise  # orthogonal to the noise
    other *= np.linalg.norm(noise) / np.linalg.norm(other)
    assert si_snr(noise + other, noise) == pytest.approx(0.0, abs=1e-6)
    assert si_snr(noise + 0.1 * other, noise) == pytest.approx(20.0, abs=1e-6)


def test_speech_share_is_high_for_leaked_speech_and_low_for_noise():
    clean, noise = _signals()
    assert speech_share(clean, clean, noise) > 0.95  # all of the tone's energy is in tone-dominated bins
    assert speech_share(noise, clean, noise) < 0.05  # the noise spreads over 257 bins; the tone takes a few


def test_probe_of_an_oracle_and_of_the_identity():
    clean, noise = _signals()
    crops = [(clean + noise, clean, 16000)]
    oracle = probe(lambda noisy, sr: clean, crops)  # estimate = the true noise
    assert oracle["si_snr"]["mean"] > 100
    assert oracle["speech_share"]["mean"] == pytest.approx(oracle["true_speech_share"]["mean"])
    keeps_half = probe(lambda noisy, sr: clean + 0.5 * noise, crops)  # half the noise: same shape
    assert keeps_half["si_snr"]["mean"] > 100
    leaky = probe(lambda noisy, sr: 0.5 * clean, crops)  # removes half the speech with the noise
    assert leaky["speech_share"]["mean"] > 0.9 and leaky["si_snr"]["mean"] < 0
