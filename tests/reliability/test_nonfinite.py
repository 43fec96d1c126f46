"""Non-finite losses and gradients in cycle-GAN training: skipped, counted, logged, then a clear stop.

An :class:`UpCycleBrain` is built in-process from the recipe's ``upcycle_small.yaml`` (small generators and
discriminators) and fed real SpeechBrain ``PaddedBatch`` objects; faults are injected as NaN/inf input
samples and as NaN gradients (a tensor hook), which is what an exploding step produces.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import speechbrain as sb
import torch
import yaml
from speechbrain.dataio.batch import PaddedBatch

from upcycle_se.audio import load_mono
from upcycle_se.brain import TrainingDivergedError, UpCycleBrain
from upcycle_se.errors import UserError
from upcycle_se.recipe import load_hparams

HPARAMS = Path(__file__).resolve().parents[2] / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle_small.yaml"
PATIENCE = 3
CROP = 2000  # 0.125 s: enough frames for every layer, and a step costs little


def make_brain(tmp_path: Path, **overrides) -> UpCycleBrain:
    """The recipe's Brain with small modules, set up for training as ``fit`` does before its first batch."""
    hp = load_hparams(str(HPARAMS), {
        "data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"), "nonfinite_patience": PATIENCE,
        "n_epochs": 2, "n_epochs_decay": 0, "valid_metrics": ["pesq"], "n_jobs": 1, **overrides})
    brain = UpCycleBrain(modules=hp["modules"], hparams=hp, run_opts={"device": "cpu"},
                         checkpointer=hp["checkpointer"])
    return brain


@pytest.fixture(scope="module")
def shared_brain(tmp_path_factory) -> tuple:
    """One Brain for the step-level tests (building it costs more than the steps) and its initial weights."""
    brain = make_brain(tmp_path_factory.mktemp("shared_brain"))
    return brain, {k: v.clone() for k, v in brain.modules.state_dict().items()}


@pytest.fixture
def fresh_brain(shared_brain) -> UpCycleBrain:
    """The shared Brain with its initial weights and BatchNorm statistics, new optimizers and counters."""
    brain, initial = shared_brain
    brain.modules.load_state_dict(initial)
    return start_training(brain)


def start_training(brain: UpCycleBrain) -> UpCycleBrain:
    brain.on_fit_start()
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    return brain


def make_batch(seed: int, poison: float = None) -> PaddedBatch:
    """Two noisy/clean crops of ``CROP`` samples; ``poison`` replaces a few noisy samples of the first one."""
    gen = torch.Generator().manual_seed(seed)
    noisy, clean = 0.1 * torch.randn(2, CROP, generator=gen), 0.1 * torch.randn(2, CROP, generator=gen)
    if poison is not None:
        noisy[0, 1000:1010] = poison
    return PaddedBatch([{"id": f"u{seed}_{i}", "noisy_sig": noisy[i], "clean_sig": clean[i]} for i in range(2)])


def state(brain: UpCycleBrain) -> dict:
    """Deep copy of every module's parameters and both optimizers' state."""
    out = {f"{name}.{k}": v.detach().clone() for name, mod in brain.modules.items()
           for k, v in mod.state_dict().items()}
    for name, opt in brain.optimizers_dict.items():
        for i, st in opt.state_dict()["state"].items():
            out.update({f"{name}.{i}.{k}": v.clone() for k, v in st.items() if torch.is_tensor(v)})
    return out


def changed(before: dict, after: dict, prefix: str = "") -> list:
    assert before.keys() == after.keys()
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_nonfinite_input_step_is_skipped_counted_and_logged(fresh_brain, caplog, poison):
    brain = fresh_brain
    assert torch.isfinite(brain.fit_batch(make_batch(0)))  # Adam has state from here on
    before = state(brain)

    with caplog.at_level(logging.WARNING, logger="upcycle_se.brain"):
        loss = brain.fit_batch(make_batch(1, poison=poison))
    assert not torch.isfinite(loss)
    assert changed(before, state(brain)) == []  # no parameter, buffer or optimizer moment touched
    assert (brain.nonfinite_in_a_row, brain.nonfinite_total) == (1, 1)
    assert re.search(r"non-finite g_adv, cycle, identity: step skipped \(1 in a row, 1 this run\)", caplog.text)
    brain.modules.eval()  # the BatchNorm statistics did not average in the bad batch
    with torch.no_grad():
        assert torch.isfinite(brain.modules["gen_n2c"](make_batch(5).noisy_sig.data)).all()
    brain.modules.train()

    assert torch.isfinite(brain.fit_batch(make_batch(2)))
    assert (brain.nonfinite_in_a_row, brain.nonfinite_total) == (0, 1)  # the run of bad steps is reset
    assert changed(before, state(brain), "gen_n2c.")  # training goes on
    # the skipped step left nothing in the epoch's loss terms: 2 finite steps, all finite means
    assert brain.epoch_terms_count == 2 and all(math.isfinite(v) for v in brain.epoch_terms.values())


def test_nonfinite_gradient_with_finite_loss_is_skipped(fresh_brain, caplog):
    """One NaN in one gradient would become NaN in every generator weight through the clipping factor."""
    brain = fresh_brain
    brain.fit_batch(make_batch(0))
    before = state(brain)
    first = next(brain.modules["gen_n2c"].parameters())
    hook = first.register_hook(lambda g: torch.full_like(g, math.nan))
    with caplog.at_level(logging.WARNING, logger="upcycle_se.brain"):
        loss = brain.fit_batch(make_batch(1))
    hook.remove()
    assert torch.isfinite(loss)
    assert "non-finite grad_norm: step skipped (1 in a row" in caplog.text
    assert changed(before, state(brain), "gen_") == [] and changed(before, state(brain), "g_optimizer.") == []
    assert all(torch.isfinite(p).all() for p in brain.modules.parameters())
    assert (brain.nonfinite_in_a_row, brain.nonfinite_total) == (1, 1)
    # the discriminators' own step (finite gradients) still happened
    assert changed(before, state(brain), "disc_clean.")


def test_diverged_after_patience_bad_steps_in_a_row(fresh_brain):
    brain = fresh_brain
    # 3 bad, 1 good, 3 bad: never more than PATIENCE in a row
    for seed, poison in enumerate([math.nan] * 3 + [None] + [math.nan] * 3):
        brain.fit_batch(make_batch(seed, poison))
    assert (brain.nonfinite_in_a_row, brain.nonfinite_total) == (3, 6)
    with pytest.raises(TrainingDivergedError) as err:
        brain.fit_batch(make_batch(99, math.nan))
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg  # train.py prints it as one line, exit 2
    assert msg.startswith("training diverged: 4 steps in a row had non-finite losses")
    assert "without saving a checkpoint" in msg


class Crops(torch.utils.data.Dataset):
    """Crops of real training files; from ``poison_epoch`` on every noisy crop is NaN, and so are the
    ``poison_items`` in every epoch."""

    def __init__(self, noisy: list, clean: list, poison_epoch: int = 99, poison_items=()):
        self.noisy, self.clean, self.epoch = noisy, clean, 1
        self.poison_epoch, self.poison_items = poison_epoch, set(poison_items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.noisy)

    def __getitem__(self, i: int) -> dict:
        noisy = self.noisy[i][:CROP].clone()
        if self.epoch >= self.poison_epoch or i in self.poison_items:
            noisy.fill_(math.nan)
        return {"id": f"crop{i}", "noisy_sig": noisy, "clean_sig": self.clean[(i + 1) % len(self)][:CROP]}


@pytest.fixture(scope="module")
def corpus_crops(tiny_corpus):
    """(noisy, clean, valid items) from 8 files of the tiny corpus."""
    files = sorted((tiny_corpus / "noisy_trainset_wav").glob("*.wav"))[:8]
    noisy = [load_mono(f, 16000) for f in files]
    clean = [load_mono(tiny_corpus / "clean_trainset_wav" / f.name, 16000) for f in files]
    valid = [{"id": f.stem, "noisy_sig": n[:16000], "clean_sig": c[:16000]} for f, n, c in zip(files, noisy, clean)]
    return noisy, clean, valid[:2]


LOADER = {"batch_size": 2, "collate_fn": PaddedBatch}


def test_a_bad_batch_mid_epoch_is_skipped_logged_and_the_epoch_checkpointed(corpus_crops, tmp_path):
    noisy, clean, valid = corpus_crops
    brain = make_brain(tmp_path, n_epochs=1)
    brain.fit(brain.hparams.epoch_counter, Crops(noisy, clean, poison_items={5}), valid,
              train_loader_kwargs={**LOADER, "shuffle": False}, valid_loader_kwargs=LOADER)
    assert brain.nonfinite_total == 1
    log = (tmp_path / "out" / "train_log.txt").read_text()
    assert re.search(r"^epoch: 1, .*train nonfinite_steps: 1 - valid loss: [0-9.e+-]+, valid pesq: \d\.\d+", log, re.M)
    (ckpt,) = (tmp_path / "out" / "save").glob("CKPT+*")
    saved = torch.load(ckpt / "gen_n2c.ckpt", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in saved.values())  # weights and BatchNorm statistics


def test_no_checkpoint_is_written_after_divergence(corpus_crops, tmp_path):
    """Epoch 1 trains and checkpoints; epoch 2 has only NaN input: training stops in epoch 2 with the
    epoch-1 checkpoint the only one, and the model in memory equal to it (every bad step was skipped)."""
    noisy, clean, valid = corpus_crops
    brain = make_brain(tmp_path)
    with pytest.raises(TrainingDivergedError, match="4 steps in a row"):
        brain.fit(brain.hparams.epoch_counter, Crops(noisy, clean, poison_epoch=2), valid,
                  train_loader_kwargs=LOADER, valid_loader_kwargs=LOADER)
    assert brain.nonfinite_total == PATIENCE + 1  # all 4 steps of epoch 2
    save = tmp_path / "out" / "save"
    ckpts = sorted(save.glob("CKPT+*"))
    assert len(ckpts) == 1
    assert yaml.safe_load((ckpts[0] / "CKPT.yaml").read_text())["epoch"] == 1
    saved = torch.load(ckpts[0] / "gen_n2c.ckpt", weights_only=True)
    live = brain.modules["gen_n2c"].state_dict()
    assert all(torch.isfinite(v).all() and torch.equal(v, live[k]) for k, v in saved.items())
    log = (tmp_path / "out" / "train_log.txt").read_text()
    assert re.findall(r"^epoch: (\d+)", log, re.M) == ["1"] and "train nonfinite_steps: 0" in log
