"""The opt-in speech-keeping supervised terms: the asymmetric shortfall (Wilson et al. 2018) and SI-SDR
(Le Roux et al. 2019), against hand-computed values and inside the real training step."""
from __future__ import annotations

import math

import pytest
import torch
from brain_step import small_brain, training_batch

from upcycle_se.errors import ConfigError
from upcycle_se.losses import LossConfig, si_sdr_loss, spectral_l1, speech_shortfall_l1


def _spec(mags: torch.Tensor) -> torch.Tensor:
    """``[batch, 2, freq, frames]`` spectrum with the given ``[batch, freq, frames]`` magnitudes (phase 0)."""
    return torch.stack([mags, torch.zeros_like(mags)], 1)


def test_shortfall_counts_removed_speech_only():
    """Estimate below the target by 0.5 in one bin of four: shortfall 0.5 / 4; above it by any amount: 0."""
    target = _spec(torch.ones(1, 2, 2))
    below = _spec(torch.tensor([[[0.5, 1.0], [1.0, 1.0]]]))
    above = _spec(torch.tensor([[[3.0, 1.0], [1.0, 2.0]]]))
    assert float(speech_shortfall_l1(below, target)) == pytest.approx(0.125, abs=1e-4)
    assert float(speech_shortfall_l1(above, target)) == pytest.approx(0.0, abs=1e-4)
    # the symmetric magnitude L1 charges both; the shortfall is the part of it where speech went missing
    assert float(spectral_l1(above, target)) > 0.5


def test_shortfall_compares_compressed_magnitudes():
    target = _spec(torch.full((1, 1, 1), 4.0))
    estimate = _spec(torch.full((1, 1, 1), 1.0))
    assert float(speech_shortfall_l1(estimate, target, compress=0.5)) == pytest.approx(2.0 - 1.0, abs=1e-3)


def test_si_sdr_loss_matches_its_definition_and_ignores_scale_and_padding():
    torch.manual_seed(0)
    clean = torch.randn(2, 800)
    noise = torch.randn(2, 800)
    estimate = clean + 0.1 * noise
    s = clean - clean.mean(-1, keepdim=True)
    e = estimate - estimate.mean(-1, keepdim=True)
    proj = (e * s).sum(-1, keepdim=True) / s.pow(2).sum(-1, keepdim=True) * s
    expected = -(10 * torch.log10(proj.pow(2).sum(-1) / (e - proj).pow(2).sum(-1))).mean()
    assert float(si_sdr_loss(estimate, clean)) == pytest.approx(float(expected), abs=1e-3)
    assert 15 < -float(expected) < 25  # noise 20 dB below the speech
    # scale-invariant: a quieter estimate scores the same
    assert float(si_sdr_loss(0.1 * estimate, clean)) == pytest.approx(float(expected), abs=1e-3)
    # whatever lies past the relative lengths is not scored
    padded_est = torch.cat([estimate, 5 * torch.randn(2, 800)], -1)
    padded_clean = torch.cat([clean, torch.zeros(2, 800)], -1)
    lengths = torch.tensor([0.5, 0.5])
    assert float(si_sdr_loss(padded_est, padded_clean, lengths)) == pytest.approx(float(expected), abs=1e-2)


def test_speech_keep_weights_default_off_and_need_a_paired_loss():
    cfg = LossConfig()
    assert (cfg.shortfall_weight, cfg.sisdr_weight) == (0.0, 0.0)
    for name in ("shortfall_weight", "sisdr_weight"):
        with pytest.raises(ConfigError, match=f"{name}=1.0 needs a paired loss_type"):
            LossConfig(loss_type="gan", **{name: 1.0})
        with pytest.raises(ConfigError, match=f"loss weight {name}=-1"):
            LossConfig(loss_type="l1", **{name: -1.0})
    assert LossConfig(loss_type="l1gan", shortfall_weight=1.0, sisdr_weight=0.01).sisdr_weight == 0.01


@pytest.mark.parametrize("shortfall, sisdr", [(0.0, 0.0), (1.0, 0.0), (0.0, 0.01), (2.0, 0.05)])
def test_training_step_adds_the_weighted_terms_to_the_supervised_l1(tmp_path, shortfall, sisdr):
    """The step's supervised term is waveform L1 + spectral L1 + shortfall_weight x shortfall +
    sisdr_weight x (-SI-SDR), recomputed here from the same modules; the total is supervised_weight x it."""
    brain = small_brain(tmp_path, loss_type="l1", unpaired="paired", shortfall_weight=shortfall, sisdr_weight=sisdr)
    brain.modules.eval()
    batch = training_batch(0)
    noisy, lens = batch.noisy_sig
    clean, _ = batch.clean_sig
    with torch.no_grad():
        total, terms, _, _ = brain._generator_loss(noisy, clean, lens, lens)
        n2c = brain.modules["gen_n2c"]
        est, spec = n2c(noisy, return_spec=True)
        clean_spec = n2c.stft.stft(clean)
        base = (est - clean).abs().mean() + spectral_l1(spec, clean_spec)
        short = speech_shortfall_l1(spec, clean_spec)
        neg_sisdr = si_sdr_loss(est, clean)
    assert float(short) > 1e-4 and math.isfinite(float(neg_sisdr))
    expected = base + shortfall * short + sisdr * neg_sisdr
    assert float(terms["supervised"]) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert float(total) == pytest.approx(20.0 * float(expected), rel=1e-4, abs=1e-4)
