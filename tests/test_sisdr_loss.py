"""The opt-in SI-SDR supervised term (Le Roux et al. 2019), against hand-computed values and inside the real
training step."""
from __future__ import annotations

import math

import pytest
import torch
from brain_step import small_brain, supervised_step, training_batch

from upcycle_se.errors import ConfigError
from upcycle_se.losses import LossConfig, si_sdr_loss


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


def test_sisdr_weight_defaults_off_and_needs_a_paired_loss():
    assert LossConfig().sisdr_weight == 0.0
    with pytest.raises(ConfigError, match="sisdr_weight=1.0 needs a paired loss_type"):
        LossConfig(loss_type="gan", sisdr_weight=1.0)
    with pytest.raises(ConfigError, match="loss weight sisdr_weight=-1"):
        LossConfig(loss_type="l1", sisdr_weight=-1.0)
    assert LossConfig(loss_type="l1gan", sisdr_weight=0.01).sisdr_weight == 0.01


@pytest.mark.parametrize("sisdr", [0.0, 0.01, 0.05])
def test_training_step_adds_the_weighted_term_to_the_supervised_l1(tmp_path, sisdr):
    """The step's supervised term is waveform L1 + spectral L1 + sisdr_weight x (-SI-SDR in dB), recomputed
    here from the same modules; the total is supervised_weight x it."""
    brain = small_brain(tmp_path, loss_type="l1", unpaired="paired", sisdr_weight=sisdr)
    brain.modules.eval()
    total, terms, est, clean, base = supervised_step(brain, training_batch(0))
    neg_sisdr = si_sdr_loss(est, clean)
    assert math.isfinite(float(neg_sisdr)) and abs(float(neg_sisdr)) > 0.1
    expected = base + sisdr * neg_sisdr
    assert float(terms["supervised"]) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert float(total) == pytest.approx(20.0 * float(expected), rel=1e-4, abs=1e-4)
