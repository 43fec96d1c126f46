"""Helpers for tests that drive :class:`UpCycleBrain`'s real training step without a dataset."""
from __future__ import annotations

from pathlib import Path

import torch
from speechbrain.dataio.batch import PaddedBatch

from upcycle_se.brain import UpCycleBrain
from upcycle_se.recipe import load_hparams

SMALL_HPARAMS = Path(__file__).resolve().parents[1] / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle_small.yaml"


def training_batch(seed: int) -> PaddedBatch:
    """Two random noisy/clean items of 2,000 samples, as the recipe's loader pads them."""
    gen = torch.Generator().manual_seed(seed)
    noisy, clean = 0.1 * torch.randn(2, 2000, generator=gen), 0.1 * torch.randn(2, 2000, generator=gen)
    return PaddedBatch([{"id": f"u{i}", "noisy_sig": noisy[i], "clean_sig": clean[i]} for i in range(2)])


def small_brain(tmp_path: Path, **overrides) -> UpCycleBrain:
    """The small recipe's Brain on CPU with ``overrides`` of its hparams, set up as fit() would."""
    hp = load_hparams(str(SMALL_HPARAMS), {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"),
                                           "n_jobs": 1, **overrides})
    brain = UpCycleBrain(modules=hp["modules"], hparams=hp, run_opts={"device": "cpu"},
                         checkpointer=hp["checkpointer"])
    brain.on_fit_start()
    return brain


def supervised_step(brain: UpCycleBrain, batch: PaddedBatch):
    """Runs the brain's generator loss on ``batch`` (no gradients) and recomputes its parts from the same
    modules: returns ``(total, terms, estimate [batch, time], clean [batch, time], base)`` where ``base`` is the
    supervised L1 alone (waveform L1 + spectral L1, uncompressed) that opt-in terms are added to."""
    from upcycle_se.losses import spectral_l1

    noisy, lens = batch.noisy_sig
    clean, _ = batch.clean_sig
    with torch.no_grad():
        total, terms, _, _ = brain._generator_loss(noisy, clean, lens, lens)
        n2c = brain.modules["gen_n2c"]
        est, spec = n2c(noisy, return_spec=True)
        base = (est - clean).abs().mean() + spectral_l1(spec, n2c.stft.stft(clean))
    return total, terms, est, clean, base
