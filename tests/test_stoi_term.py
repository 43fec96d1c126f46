"""The opt-in STOI supervised term (Fu et al. 2018, SpeechBrain's stoi_loss): against pystoi, on pauses, and
inside the real training step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brain_step import small_brain, supervised_step
from pystoi import stoi
from speechbrain.dataio.batch import PaddedBatch

from upcycle_se.errors import ConfigError
from upcycle_se.losses import LossConfig, stoi_loss_term

SR = 16000


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise under a 3-6 Hz syllable-like envelope with pauses: enough structure for STOI's envelopes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)), 0, None) ** 2
    return 0.1 * env * rng.standard_normal(len(t))


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_stoi_term_is_minus_pystoi_stoi(snr_db):
    clean = _speechlike(2.0, 0)
    noise = np.random.default_rng(1).standard_normal(len(clean))
    noisy = clean + noise * np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    c, n = torch.tensor(clean[None], dtype=torch.float32), torch.tensor(noisy[None], dtype=torch.float32)
    expected = stoi(clean, noisy, SR)
    assert 0.3 < expected < 0.99
    assert -float(stoi_loss_term(n, c)) == pytest.approx(expected, abs=0.01)
    assert -float(stoi_loss_term(c, c)) == pytest.approx(1.0, abs=1e-3)


def test_stoi_term_has_gradients_and_leaves_out_items_too_short_for_stoi():
    clean = torch.tensor(_speechlike(1.0, 2)[None], dtype=torch.float32)
    est = (clean + 0.05 * torch.randn_like(clean)).requires_grad_(True)
    loss = stoi_loss_term(est, clean)
    loss.backward()
    assert torch.isfinite(est.grad).all() and float(est.grad.abs().sum()) > 0
    # a second item with less speech than one 384 ms STOI envelope (0.2 s, then a -78 dBFS floor) is left out:
    # the batch scores as the first alone
    short = 10 ** (-78 / 20) * torch.randn(1, clean.shape[-1])
    short[:, :3200] += torch.tensor(_speechlike(0.2, 3)[None], dtype=torch.float32)
    both = stoi_loss_term(torch.cat([est.detach(), short + 0.05 * torch.randn_like(short)]), torch.cat([clean, short]))
    assert float(both) == pytest.approx(float(loss.detach()), abs=1e-6)
    # too short for one STOI envelope: 0, not an error
    assert float(stoi_loss_term(torch.randn(2, 2000), torch.randn(2, 2000))) == 0.0


def test_stoi_weight_defaults_off_needs_a_paired_loss_and_16_khz():
    assert LossConfig().stoi_weight == 0.0
    with pytest.raises(ConfigError, match="stoi_weight=0.2 needs a paired loss_type"):
        LossConfig(loss_type="gan", stoi_weight=0.2)
    with pytest.raises(ConfigError, match="loss weight stoi_weight=-1"):
        LossConfig(loss_type="l1", stoi_weight=-1.0)
    with pytest.raises(ConfigError, match="needs 16 kHz audio"):
        stoi_loss_term(torch.randn(1, 8000), torch.randn(1, 8000), sample_rate=8000)


@pytest.mark.parametrize("weight", [0.0, 0.2])
def test_training_step_adds_the_weighted_stoi_term_to_the_supervised_l1(tmp_path, weight):
    brain = small_brain(tmp_path, loss_type="l1", unpaired="paired", stoi_weight=weight)
    brain.modules.eval()
    gen = torch.Generator().manual_seed(0)
    noisy, clean = 0.1 * torch.randn(2, SR, generator=gen), 0.1 * torch.randn(2, SR, generator=gen)
    batch = PaddedBatch([{"id": f"u{i}", "noisy_sig": noisy[i], "clean_sig": clean[i]} for i in range(2)])
    total, terms, est, clean, base = supervised_step(brain, batch)
    neg_stoi = stoi_loss_term(est, clean)
    assert math.isfinite(float(neg_stoi)) and -1.0 < float(neg_stoi) < 1.0 and float(neg_stoi) != 0.0
    expected = base + weight * neg_stoi
    assert float(terms["supervised"]) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert float(total) == pytest.approx(20.0 * float(expected), rel=1e-4, abs=1e-4)
