"""The opt-in identity-weight decay inside the real training step of :class:`UpCycleBrain`."""
from __future__ import annotations

from pathlib import Path

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from upcycle_se.brain import UpCycleBrain
from upcycle_se.recipe import load_hparams

HPARAMS = Path(__file__).resolve().parents[1] / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle_small.yaml"


def _batch(seed: int) -> PaddedBatch:
    gen = torch.Generator().manual_seed(seed)
    noisy, clean = 0.1 * torch.randn(2, 2000, generator=gen), 0.1 * torch.randn(2, 2000, generator=gen)
    return PaddedBatch([{"id": f"u{i}", "noisy_sig": noisy[i], "clean_sig": clean[i]} for i in range(2)])


@pytest.mark.parametrize("decay_steps", [0, 2])
def test_identity_term_follows_the_schedule_one_count_per_step(tmp_path, decay_steps):
    """Paper default: identity in every step. Decay over 2 updates: weight 10, 5, then 0, and the step
    skips the identity passes; ``optimizer_step`` counts training steps."""
    hp = load_hparams(str(HPARAMS), {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"),
                                     "identity_decay_steps": decay_steps, "n_jobs": 1})
    brain = UpCycleBrain(modules=hp["modules"], hparams=hp, run_opts={"device": "cpu"},
                         checkpointer=hp["checkpointer"])
    brain.on_fit_start()
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    calls = []
    brain.modules["gen_n2c"].register_forward_hook(lambda *_: calls.append(1))
    weights, passes = [], []
    for seed in range(3):
        weights.append(brain.loss_cfg.identity_weight_at(brain.optimizer_step))
        calls.clear()
        brain.fit_batch(_batch(seed))
        passes.append(len(calls))
    assert brain.optimizer_step == 3
    assert weights == ([10.0] * 3 if decay_steps == 0 else [10.0, 5.0, 0.0])
    # noisy->clean passes per step: enhance + cycle (clean->noisy->clean) + identity (clean) when weighted
    assert passes == [3 if w > 0 else 2 for w in weights]
