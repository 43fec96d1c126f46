"""kill -9 during training (in the middle of checkpoint writes) and during `upcycle-se enhance`, then rerun.

Kills are injected at chosen instants: a small wrapper runs the real ``train.py`` / ``upcycle-se`` in a
subprocess and SIGKILLs *itself* at a chosen write (half-way through the Nth ``torch.save`` of a given
checkpoint file, before the Nth fsync of a save, right after a checkpoint folder is published, or after
the Nth block of an enhanced file), which leaves exactly what a kill at that instant leaves, whatever the
machine's speed. One more kill of each is timed from outside, at a random moment.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from upcycle_se.checkpoints import (INCOMPLETE_PREFIX, STAGING_PREFIX, AtomicCheckpointer, checkpoint_problem,
                                   make_atomic, set_aside_incomplete_checkpoints)
from upcycle_se.errors import UserError
from upcycle_se.export import find_best_checkpoint

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "VoiceBankDEMAND"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAST = ["--crop_samples=8000", "--batch_size=2", "--n_jobs=1", "--num_workers=0", "--device=cpu",
        "--valid_metrics=[pesq]", "--test_metrics=[pesq]", "--n_enhanced_to_save=0"]
#: Every file a complete checkpoint of the recipe holds.
RECIPE_CKPT_FILES = ("gen_n2c", "gen_c2n", "disc_clean", "disc_noisy", "counter", "brain", "g_optimizer",
                     "d_optimizer")

#: Runs train.py and SIGKILLs it at the instant $KILL_AT names (see the script).
TRAIN_KILLER = REPO / "tests" / "kill_train.py"

# Runs `upcycle-se` and, with KILL_AT_BLOCK=N, SIGKILLs the process right after the Nth block written to
# an output file (flushed: a half-written hidden .part file is left behind).
ENHANCE_KILLER = r"""
import os, signal, sys
from upcycle_se import audio
from upcycle_se.cli import main
kill_at = int(os.environ.get("KILL_AT_BLOCK", "0"))
real_call, count = audio.AtomicWriter.__call__, [0]
def call(self, block):
    real_call(self, block)
    count[0] += 1
    if count[0] == kill_at:
        self._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
audio.AtomicWriter.__call__ = call
sys.exit(main(sys.argv[1:]))
"""


# ------------------------------------------------------------------------------- checkpoint guard
def _checkpointer(save: Path, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 4)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    counter = EpochCounter(10)
    ckpter = Checkpointer(save, {"gen_n2c": model, "counter": counter, "g_optimizer": opt})
    return ckpter, model, counter


def _damaged_copy(complete: Path, name: str, damage: str) -> Path:
    """A copy of ``complete`` that looks newer, damaged the way a kill at some point of a save leaves it."""
    folder = complete.parent / f"CKPT+{name}"
    shutil.copytree(complete, folder)
    meta = yaml.safe_load((folder / "CKPT.yaml").read_text())
    (folder / "CKPT.yaml").write_text(yaml.dump({**meta, "unixtime": meta["unixtime"] + 100, "pesq": 9.0}))
    if damage == "no meta":  # killed between mkdir and the meta file
        for f in folder.iterdir():
            f.unlink()
    elif damage == "empty meta":  # killed while writing CKPT.yaml: no parameter file yet
        for f in folder.iterdir():
            f.write_bytes(b"") if f.name == "CKPT.yaml" else f.unlink()
    elif damage == "truncated module":
        data = (folder / "gen_n2c.ckpt").read_bytes()
        (folder / "gen_n2c.ckpt").write_bytes(data[: len(data) // 2])
    elif damage == "empty counter":
        (folder / "counter.ckpt").write_bytes(b"")
    elif damage == "missing optimizer":  # killed between two files
        (folder / "g_optimizer.ckpt").unlink()
    elif damage == "truncated optimizer":
        data = (folder / "g_optimizer.ckpt").read_bytes()
        (folder / "g_optimizer.ckpt").write_bytes(data[:-1])
    return folder


DAMAGES = ("no meta", "empty meta", "truncated module", "empty counter", "missing optimizer", "truncated optimizer")


def test_incomplete_checkpoints_are_set_aside_and_the_last_complete_one_recovered(tmp_path, caplog):
    save = tmp_path / "save"
    ckpter, model, counter = _checkpointer(save)
    counter.current = 4
    complete = ckpter.save_checkpoint(meta={"pesq": 2.0}).path
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    damaged = {"truncated module": _damaged_copy(complete, "truncated-module", "truncated module")}
    # What SpeechBrain alone does with such a folder: picks it as the newest and fails, on every rerun.
    with pytest.raises(RuntimeError, match="failed finding central directory"):
        _checkpointer(save, seed=1)[0].recover_if_possible()
    damaged.update({d: _damaged_copy(complete, d.replace(" ", "-"), d) for d in DAMAGES if d not in damaged})

    reasons = {d: checkpoint_problem(f, ("gen_n2c", "counter", "g_optimizer")) for d, f in damaged.items()}
    assert reasons == {"no meta": "no CKPT.yaml", "empty meta": "CKPT.yaml is truncated",
                       "truncated module": "gen_n2c.ckpt is truncated", "empty counter": "counter.ckpt is empty",
                       "missing optimizer": "g_optimizer.ckpt missing",
                       "truncated optimizer": "g_optimizer.ckpt is truncated"}
    assert checkpoint_problem(complete, ("gen_n2c", "counter", "g_optimizer")) is None

    # export never picks a checkpoint with an empty or truncated file, whatever score its CKPT.yaml (written
    # first) records; the one killed between two files has a complete generator and is exportable
    assert find_best_checkpoint(save)[0].path == damaged["missing optimizer"]

    fresh, fresh_model, fresh_counter = _checkpointer(save, seed=1)
    moved = set_aside_incomplete_checkpoints(fresh)
    assert sorted(p.name for p in moved) == sorted(f"{INCOMPLETE_PREFIX}{f.name}" for f in damaged.values())
    assert sorted(p.name for p in save.iterdir()) == sorted([complete.name] + [p.name for p in moved])
    assert caplog.text.count("is incomplete") == len(DAMAGES)
    fresh.recover_if_possible()
    assert fresh_counter.current == 4
    assert all(torch.equal(v, saved[k]) for k, v in fresh_model.state_dict().items())
    assert set_aside_incomplete_checkpoints(fresh) == []  # idempotent


def test_export_skips_a_checkpoint_with_a_truncated_generator(tmp_path):
    save = tmp_path / "save"
    ckpter, _, _ = _checkpointer(save)
    complete = ckpter.save_checkpoint(meta={"pesq": 2.0}).path
    partial = _damaged_copy(complete, "new", "truncated module")  # pesq 9.0 in its CKPT.yaml
    assert find_best_checkpoint(save)[0].path == complete
    with pytest.raises(UserError, match=r"no complete checkpoint \(CKPT\+new: gen_n2c.ckpt is truncated"):
        find_best_checkpoint(partial)


# ------------------------------------------------------------------------------------- training
def _small_corpus(tiny_corpus: Path, root: Path) -> Path:
    """Part of the tiny corpus under a path with spaces and non-ASCII letters; one training pair cut to
    0.1 s (shorter than the 0.5 s crop: zero-padded)."""
    data = root / "dätä with spaces" / "Voice Bank ü"
    for sub, keep in (("clean_trainset_wav", "_00[12]"), ("noisy_trainset_wav", "_00[12]"),
                      ("clean_testset_wav", "_001"), ("noisy_testset_wav", "_001")):
        (data / sub).mkdir(parents=True)
        for f in sorted((tiny_corpus / sub).glob(f"*{keep}.wav")):
            shutil.copy(f, data / sub / f.name)
    for side in ("clean", "noisy"):
        path = data / f"{side}_trainset_wav" / "p226_002.wav"
        sig, sr = sf.read(path, dtype="float32")
        sf.write(path, sig[: sr // 10], sr, subtype="PCM_16")
    return data


def _train(data: Path, out: Path, kill_at: str = None, wait: bool = True, timeout=600):
    """train.py (3 epochs: 1 + 2 of linear decay) in a subprocess, killed at ``kill_at`` (see TRAIN_KILLER)."""
    argv = ["hparams/upcycle_small.yaml", f"--data_folder={data}", f"--output_folder={out}",
            f"--prep_folder={out.parent / 'prep'}", "--n_epochs=1", "--n_epochs_decay=2", *FAST]
    env = dict(ENV)
    if kill_at is None:
        cmd = [sys.executable, "train.py", *argv]
    else:
        cmd = [sys.executable, str(TRAIN_KILLER), *argv]
        env["KILL_AT"] = kill_at
    if not wait:
        return subprocess.Popen(cmd, cwd=RECIPE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=timeout)


def _epochs(train_log: Path) -> list:
    """(epoch, lr, train loss) of every epoch line of the FileTrainLogger, in order."""
    if not train_log.is_file():
        return []
    return [(int(e), lr, float(loss)) for e, lr, loss in
            re.findall(r"^epoch: (\d+), lr: ([^ ]+) - train loss: ([-0-9.e+]+)", train_log.read_text(), re.M)]


def _complete_epochs(save: Path) -> list:
    """Epochs of the published CKPT+ folders, after checking that every one of them is complete."""
    folders = sorted(save.glob("CKPT+*"))
    problems = {c.name: checkpoint_problem(c, RECIPE_CKPT_FILES) for c in folders}
    assert not any(problems.values()), f"a kill left an incomplete checkpoint: {problems}"
    return sorted(yaml.safe_load((c / "CKPT.yaml").read_text())["epoch"] for c in folders)


#: Kill points of the seeded "random instant" kills: inside a save (during a file, between files, between
#: fsyncs) or right after a checkpoint appeared.
KILL_POINTS = ["save:gen_n2c.ckpt:{n}:{frac}", "save:d_optimizer.ckpt:{n}:{frac}", "save:g_optimizer.ckpt:{n}:0",
               "fsync:{k}", "publish:{n}"]


@pytest.mark.slow
def test_kills_at_any_instant_leave_whole_checkpoints_and_resume_after_the_last_one(tiny_corpus, tmp_path):
    """Runs killed at seeded random instants (inside a save or right after one) and once from outside at a
    random moment, then a run to the end. After every kill each ``CKPT+*`` folder is complete; every rerun
    starts with the epoch after the last complete checkpoint, with that epoch's learning rate, and a repeated
    epoch draws the same crops from the same state (same loss)."""
    data = _small_corpus(tiny_corpus, tmp_path)
    out = tmp_path / "run"
    save = out / "save"
    rng = random.Random(int(os.environ.get("KILL_SEED", "20261202")))  # another seed: other instants
    n_files = len(RECIPE_CKPT_FILES)
    kills = [point.format(n=1, frac=round(rng.uniform(0.05, 0.95), 2), k=rng.randint(1, n_files + 2))
             for point in rng.sample(KILL_POINTS[:-1], 1)]  # inside a save: that epoch is repeated
    kills.append("publish:1")  # then the instant a new CKPT+ folder appears
    durations = []
    for kill in kills + ["outside", None]:
        before = _epochs(out / "train_log.txt")
        resume_from = max(_complete_epochs(save), default=0) + 1
        if kill == "outside":  # from outside, at a random moment of a run as long as the previous one
            proc = _train(data, out, wait=False)
            try:
                proc.communicate(timeout=rng.uniform(0.2, 1.0) * durations[-1])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            returncode = proc.returncode
        else:
            start = time.monotonic()
            run = _train(data, out, kill_at=kill)
            durations.append(time.monotonic() - start)
            returncode = run.returncode
            assert "Traceback" not in run.stderr, run.stderr[-3000:]
        if kill is None:
            assert returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        elif kill != "outside":
            assert returncode == -signal.SIGKILL, f"{kill}: {run.stdout[-2000:]} {run.stderr[-2000:]}"
        assert _complete_epochs(save) == sorted(set(_complete_epochs(save)))  # whole, each epoch once
        new = _epochs(out / "train_log.txt")[len(before):]
        if new:  # the run went on with the epoch after the last complete checkpoint
            assert new[0][0] == resume_from, (kill, resume_from, new)
    assert not list(save.glob(f"{INCOMPLETE_PREFIX}*"))  # atomic saves: nothing to set aside
    assert not list(save.glob(f"{STAGING_PREFIX}*"))  # the last run's saves removed what kills left

    epochs = _epochs(out / "train_log.txt")
    assert [e for e, _, _ in epochs][-1] == 3 and max(_complete_epochs(save)) == 3
    # the linear decay continues across the kills
    assert {e: lr for e, lr, _ in epochs} == {1: "1.00e-03", 2: "6.67e-04", 3: "3.33e-04"}
    assert len({(e, lr) for e, lr, _ in epochs}) == 3
    # a repeated epoch starts from the same checkpoint and draws the same crops: same loss
    for epoch in (1, 2, 3):
        losses = [loss for e, _, loss in epochs if e == epoch]
        assert max(losses) - min(losses) <= 0.01 * abs(losses[0]), (epoch, losses)
    for ckpt in save.glob("CKPT+*"):  # every remaining checkpoint loads, file by file
        for f in ckpt.glob("*.ckpt"):
            if f.stem not in ("counter", "brain", "dataloader-TRAIN"):
                torch.load(f, weights_only=False)
    assert (out / "test_summary.md").is_file()


def test_an_interrupted_save_leaves_no_checkpoint_and_the_next_save_cleans_up(tmp_path, monkeypatch):
    """In-process: a save that fails half-way (as a kill would stop it) publishes nothing; SpeechBrain's
    recovery and export ignore the hidden staging folder; the next save removes it and is complete."""
    save = tmp_path / "save"
    ckpter, model, counter = _checkpointer(save)
    ckpter = AtomicCheckpointer(save, dict(ckpter.recoverables))
    counter.current = 1
    first = ckpter.save_checkpoint(meta={"pesq": 1.0}, verbosity=logging.DEBUG)
    assert first.path.name.startswith("CKPT+") and checkpoint_problem(first.path, ("gen_n2c", "g_optimizer")) is None
    assert sorted(first.paramfiles) == ["counter", "g_optimizer", "gen_n2c"]
    assert all(p.parent == first.path and p.is_file() for p in first.paramfiles.values())

    real_save = torch.save
    def dying_save(obj, f, *args, **kwargs):  # the optimizer file is cut short, then the "process" dies
        if os.path.basename(os.fspath(f)) == "g_optimizer.ckpt":
            Path(f).write_bytes(b"PK\x03\x04")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", dying_save)
    counter.current = 2
    with pytest.raises(KeyboardInterrupt):
        ckpter.save_checkpoint(meta={"pesq": 9.0})
    monkeypatch.setattr(torch, "save", real_save)
    (staging,) = save.glob(f"{STAGING_PREFIX}CKPT+*")
    assert [c.path for c in ckpter.list_checkpoints()] == [first.path]
    assert find_best_checkpoint(save)[0].path == first.path

    fresh, _, fresh_counter = _checkpointer(save, seed=1)
    assert fresh.recover_if_possible().path == first.path and fresh_counter.current == 1
    counter.current = 3
    second = ckpter.save_checkpoint(meta={"pesq": 2.0})
    assert not staging.exists() and sorted(save.iterdir()) == sorted([first.path, second.path])
    assert yaml.safe_load((second.path / "CKPT.yaml").read_text())["pesq"] == 2.0
    # a plain SpeechBrain Checkpointer handed to the Brain becomes atomic (same state, same recoverables)
    plain = Checkpointer(tmp_path / "other", {"gen_n2c": model})
    assert make_atomic(plain) is plain and isinstance(plain, AtomicCheckpointer)
    assert plain.save_checkpoint().path.parent == tmp_path / "other"


# -------------------------------------------------------------------------------------- enhance
@pytest.fixture(scope="module")
def model_dir(exported_small_model) -> Path:
    """The shared exported random small model (see conftest)."""
    return exported_small_model


N_FILES = 24
BLOCKS_PER_FILE = 4  # 1.5 s in 0.5 s chunks overlapping by 0.1 s, one chunk per forward pass
CHUNKING = ["--chunk-seconds", "0.5", "--overlap-seconds", "0.1", "--batch-size", "1"]


def _noisy_folder(root: Path) -> Path:
    """N_FILES files of 1.5 s: 16 kHz mono int16 wav, 44.1 kHz stereo flac, 8 kHz float wav (in a sub-folder)."""
    rng = np.random.default_rng(0)
    for i in range(N_FILES):
        sr, ch, name, subtype = [(16000, 1, f"a{i:02d}.wav", "PCM_16"), (44100, 2, f"b{i:02d}.flac", "PCM_16"),
                                 (8000, 1, f"sub/c{i:02d}.wav", "FLOAT")][i % 3]
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal((int(1.5 * sr), ch))).astype(np.float32), sr, subtype=subtype)
    return root


def _enhance(*args, kill_at_block: int = 0, wait: bool = True):
    cmd = [sys.executable, "-c", ENHANCE_KILLER, "enhance", *map(str, args), *CHUNKING]
    env = {**ENV, "KILL_AT_BLOCK": str(kill_at_block)}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _outputs(out: Path) -> list:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.slow
def test_kills_during_enhance_then_rerun_finishes_with_no_truncated_output(model_dir, tmp_path):
    noisy = _noisy_folder(tmp_path / "noisy")
    out = tmp_path / "out"
    # 1. killed in the middle of the 4th file: 3 complete outputs, the 4th only as a hidden .part
    run = _enhance(noisy, "-o", out, "--model", model_dir, kill_at_block=3 * BLOCKS_PER_FILE + 2)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert len(_outputs(out)) == 3 and len(list(out.rglob(".*.part"))) == 1
    # 2. killed from outside, at whatever it is doing once 12 outputs exist
    proc = _enhance(noisy, "-o", out, "--model", model_dir, wait=False)
    # No time limit on a slow machine: the loop ends at 12 outputs or when the run ends; the deadline only
    # catches a hang (about 40x the time this step takes on the 2-core development machine).
    deadline = time.time() + 1800
    while len(_outputs(out)) < 12 and proc.poll() is None:
        assert time.time() < deadline, "enhance made fewer than 12 outputs in 30 min: hung?"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    n_before = len(_outputs(out))
    assert 12 <= n_before <= N_FILES
    # 3. the rerun does the rest and skips, by name, what is complete
    run = _enhance(noisy, "-o", out, "--model", model_dir)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{N_FILES - n_before} done, {n_before} skipped (output exists" in run.stdout
    assert ", 0 failed" in run.stdout
    reference = tmp_path / "reference"  # one uninterrupted run
    assert _enhance(noisy, "-o", reference, "--model", model_dir).returncode == 0

    outputs = _outputs(out)
    assert [p.relative_to(out) for p in outputs] == [p.relative_to(noisy) for p in _outputs(noisy)]
    for path in outputs:
        src, dst = sf.info(noisy / path.relative_to(out)), sf.info(path)
        assert (dst.frames, dst.channels, dst.samplerate) == (src.frames, src.channels, src.samplerate), path
        got, _ = sf.read(path, dtype="float32")
        ref, _ = sf.read(reference / path.relative_to(out), dtype="float32")
        np.testing.assert_array_equal(got, ref)  # complete, and what an uninterrupted run writes
    # what the kills left is hidden (never taken for an output) and at most one file per kill
    assert len(list(out.rglob(".*.part"))) <= 2
