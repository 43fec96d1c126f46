"""kill -9 during training (in the middle of checkpoint writes) and during `upcycle-se enhance`, then rerun.

Kills are injected deterministically: a small wrapper runs the real ``train.py`` / ``upcycle-se`` in a
subprocess and SIGKILLs *itself* at a chosen write (half-way through the Nth ``torch.save`` of a given
checkpoint file, or after the Nth block of an enhanced file), which leaves exactly what a kill at that
instant leaves. One more kill of ``enhance`` is timed from outside.
"""
from __future__ import annotations

import os
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

from upcycle_se.checkpoints import INCOMPLETE_PREFIX, checkpoint_problem, set_aside_incomplete_checkpoints
from upcycle_se.errors import UserError
from upcycle_se.inference import find_best_checkpoint

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "VoiceBankDEMAND"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAST = ["--crop_samples=8000", "--batch_size=2", "--n_jobs=1", "--num_workers=0", "--device=cpu",
        "--valid_metrics=[pesq]", "--test_metrics=[pesq]", "--n_enhanced_to_save=0"]
#: Every file a complete checkpoint of the recipe holds.
RECIPE_CKPT_FILES = ("gen_n2c", "gen_c2n", "disc_clean", "disc_noisy", "counter", "brain", "g_optimizer",
                     "d_optimizer")

# Runs train.py and SIGKILLs the process during the KILL_NTH torch.save of a file named KILL_FILE, after
# writing the first KILL_FRAC of its bytes (0: before the file is created).
TRAIN_KILLER = r"""
import io, os, runpy, signal, sys
import torch
target, nth, frac = os.environ["KILL_FILE"], int(os.environ["KILL_NTH"]), float(os.environ["KILL_FRAC"])
seen = [0]
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)) and os.path.basename(os.fspath(f)) == target:
        seen[0] += 1
        if seen[0] == nth:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            if frac > 0:
                with open(f, "wb") as out:
                    out.write(buf.getvalue()[: int(len(buf.getvalue()) * frac)])
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""

# Runs `upcycle-se` and, with KILL_AT_BLOCK=N, SIGKILLs the process right after the Nth block written to
# an output file (flushed: a half-written hidden .part file is left behind).
ENHANCE_KILLER = r"""
import os, signal, sys
from upcycle_se import inference
from upcycle_se.cli import main
kill_at = int(os.environ.get("KILL_AT_BLOCK", "0"))
real_call, count = inference._AtomicWriter.__call__, [0]
def call(self, block):
    real_call(self, block)
    count[0] += 1
    if count[0] == kill_at:
        self._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
inference._AtomicWriter.__call__ = call
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


def _train(data: Path, out: Path, kill=None, timeout=600) -> subprocess.CompletedProcess:
    """train.py (3 epochs: 1 + 2 of linear decay) in a subprocess; ``kill=(file, nth, fraction)``."""
    argv = ["hparams/upcycle_small.yaml", f"--data_folder={data}", f"--output_folder={out}",
            f"--prep_folder={out.parent / 'prep'}", "--n_epochs=1", "--n_epochs_decay=2", *FAST]
    env = dict(ENV)
    if kill is None:
        cmd = [sys.executable, "train.py", *argv]
    else:
        cmd = [sys.executable, "-c", TRAIN_KILLER, *argv]
        env.update(KILL_FILE=kill[0], KILL_NTH=str(kill[1]), KILL_FRAC=str(kill[2]))
    return subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=timeout)


def _epochs(train_log: Path) -> list:
    """(epoch, lr, train loss) of every epoch line of the FileTrainLogger, in order."""
    return [(int(e), lr, float(loss)) for e, lr, loss in
            re.findall(r"^epoch: (\d+), lr: ([^ ]+) - train loss: ([-0-9.e+]+)", train_log.read_text(), re.M)]


def _incomplete(save: Path) -> list:
    return [c for c in save.glob("CKPT+*") if checkpoint_problem(c, RECIPE_CKPT_FILES)]


@pytest.mark.slow
def test_kills_during_checkpoint_writes_then_resume_from_the_last_complete_one(tiny_corpus, tmp_path):
    """Three runs killed inside a checkpoint save (half-way through the first file, half-way through the
    last file, between two files), then a run to the end: every rerun resumes from the last complete
    checkpoint, repeats the interrupted epoch with the same learning rate and losses, and finishes."""
    data = _small_corpus(tiny_corpus, tmp_path)
    out = tmp_path / "run"
    save = out / "save"
    kills = [("gen_n2c.ckpt", 2, 0.5),  # epoch 2's checkpoint, first file half-written
             ("d_optimizer.ckpt", 1, 0.5),  # resumed at epoch 2: its checkpoint, last file half-written
             ("g_optimizer.ckpt", 2, 0.0)]  # epoch 2 saved, epoch 3's killed before its optimizer files
    last_complete_epoch = [1, 1, 2]
    for kill, epoch in zip(kills, last_complete_epoch):
        run = _train(data, out, kill=kill)
        assert run.returncode == -signal.SIGKILL, run.stdout[-2000:] + run.stderr[-2000:]
        assert len(_incomplete(save)) == 1, f"{kill}: the kill did not leave an incomplete checkpoint"
        complete = [c for c in save.glob("CKPT+*") if c not in _incomplete(save)]
        assert [yaml.safe_load((c / "CKPT.yaml").read_text())["epoch"] for c in complete] == [epoch]
        assert "Traceback" not in run.stderr
    run = _train(data, out)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert log.count("is incomplete") == 1 and "Loading a checkpoint from" in log

    epochs = _epochs(out / "train_log.txt")
    # 1 2 | (2) | 2 3 | 3: each rerun repeats the epoch whose checkpoint was cut short
    assert [e for e, _, _ in epochs] == [1, 2, 2, 2, 3, 3]
    # the linear decay continues across the kills
    assert {e: lr for e, lr, _ in epochs} == {1: "1.00e-03", 2: "6.67e-04", 3: "3.33e-04"}
    assert len({(e, lr) for e, lr, _ in epochs}) == 3
    # a repeated epoch starts from the same checkpoint and draws the same crops: same loss
    for epoch in (2, 3):
        losses = [loss for e, _, loss in epochs if e == epoch]
        assert max(losses) - min(losses) <= 0.01 * abs(losses[0]), (epoch, losses)

    assert len(list(save.glob(f"{INCOMPLETE_PREFIX}CKPT+*"))) == 3  # set aside, never deleted or loaded
    final = list(save.glob("CKPT+*"))
    assert final and not _incomplete(save)
    for ckpt in final:  # every remaining checkpoint loads, file by file
        for f in ckpt.glob("*.ckpt"):
            if f.stem not in ("counter", "brain", "dataloader-TRAIN"):
                torch.load(f, weights_only=False)
    assert max(yaml.safe_load((c / "CKPT.yaml").read_text())["epoch"] for c in final) == 3
    assert (out / "test_summary.md").is_file()


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
    deadline = time.time() + 120
    while len(_outputs(out)) < 12 and proc.poll() is None and time.time() < deadline:
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
