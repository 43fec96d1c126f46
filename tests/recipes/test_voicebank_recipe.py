"""The VoiceBankDEMAND recipe end to end on the tiny corpus, in the style of SpeechBrain's tests/recipes.

Each run is ``python train.py hparams/upcycle_small.yaml --data_folder=<tiny corpus> ...`` in a subprocess,
exactly as a user runs it, shrunk to seconds: 0.5 s crops, batch 2, 2 epochs.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from upcycle_se.checkpoints import checkpoint_problem

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "VoiceBankDEMAND"
KILL_TRAIN = Path(__file__).resolve().parents[1] / "kill_train.py"
POISON_TRAIN = Path(__file__).resolve().parents[1] / "poison_train.py"
#: Every file a complete checkpoint of the recipe holds.
RECIPE_CKPT_FILES = ("gen_n2c", "gen_c2n", "disc_clean", "disc_noisy", "counter", "brain", "g_optimizer",
                     "d_optimizer")
FAST = ["--crop_samples=8000", "--batch_size=2", "--n_jobs=1", "--num_workers=0", "--device=cpu",
        "--valid_metrics=[pesq]", "--n_enhanced_to_save=2"]


def _train(corpus: Path, out: Path, *extra: str, epochs=(1, 1), kill_at: str = None, timeout=600):
    """train.py in a subprocess; ``kill_at``: SIGKILLed at that instant (see ``tests/kill_train.py``)."""
    script = str(KILL_TRAIN) if kill_at else "train.py"
    cmd = [sys.executable, script, "hparams/upcycle_small.yaml", f"--data_folder={corpus}",
           f"--output_folder={out}", f"--prep_folder={out.parent / 'prep'}",
           f"--n_epochs={epochs[0]}", f"--n_epochs_decay={epochs[1]}", *FAST, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **({"KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=timeout)


def _epoch_stats(train_log: Path):
    """``{epoch: {"train loss": float, ...}}`` parsed from SpeechBrain's FileTrainLogger lines."""
    stats = {}
    for line in train_log.read_text().splitlines():
        m = re.match(r"epoch: (\d+), lr: [^ ]+ - (.*)", line)
        if m:
            fields = dict(re.findall(r"(train [a-z_]+|valid [a-z_]+): ([-0-9.e+]+)", m.group(2)))
            stats[int(m.group(1))] = {k: float(v) for k, v in fields.items()}
    return stats


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["paired"])  # unpaired runs end to end in the resume and UnpairedFolders tests
def test_recipe_trains_and_tests(tiny_corpus, tmp_path, mode):
    extra = [f"--unpaired={mode}"] + (["--loss_type=l1gan"] if mode == "paired" else [])
    out = tmp_path / mode
    run = _train(tiny_corpus, out, *extra)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    stats = _epoch_stats(out / "train_log.txt")
    assert sorted(stats) == [1, 2]
    assert {"train g_adv", "train cycle", "train identity", "train d_adv", "valid pesq", "valid noisy_pesq"} \
        <= set(stats[1])
    if mode == "paired":
        assert "train supervised" in stats[1]
    # the generator objective goes down from epoch 1 to epoch 2
    assert stats[2]["train loss"] < stats[1]["train loss"]

    ckpts = list((out / "save").glob("CKPT+*"))
    assert ckpts and all((c / "gen_n2c.ckpt").is_file() and (c / "g_optimizer.ckpt").is_file() for c in ckpts)
    configs = json.loads((out / "save" / "model_config.json").read_text())
    assert configs["gen_n2c"]["mode"] == "mask" and configs["gen_c2n"]["mode"] == "map"  # the paper's, by default
    assert list((out / "tensorboard").rglob("events.out.tfevents*")), "no TensorBoard log"

    with open(out / "test_metrics_enhanced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # the tiny corpus's test files, whole
    assert {"pesq", "stoi", "csig", "cbak", "covl", "ssnr"} <= set(rows[0])
    assert (out / "test_summary.md").read_text().count("|") > 10
    wavs = sorted((out / "enhanced_test_wavs").glob("*.wav"))
    assert len(wavs) == 2
    for wav in wavs:  # whole files, same length as the noisy input
        noisy = tiny_corpus / "noisy_testset_wav" / wav.name
        assert sf.info(str(wav)).frames == sf.info(str(noisy)).frames



@pytest.mark.slow
def test_fine_tune_from_a_packaged_model_by_name(tiny_corpus, tmp_path):
    """``--init_from=small`` (a packaged model's name) with a vanishing learning rate, paired L1 on compressed
    spectra: the run trains (supervised term logged) and its generator's weights are the packaged ones."""
    import torch

    from upcycle_se.inference import packaged_model_dir

    out = tmp_path / "ft"
    run = _train(tiny_corpus, out, "--unpaired=paired", "--loss_type=l1", "--spectral_compress=0.3",
                 "--init_from=small", "--lr=1.0e-12", epochs=(1, 0))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "train supervised" in _epoch_stats(out / "train_log.txt")[1]
    (ckpt,) = (out / "save").glob("CKPT+*")
    trained = torch.load(ckpt / "gen_n2c.ckpt", map_location="cpu")
    packaged = torch.load(packaged_model_dir("small") / "generator.ckpt", map_location="cpu")
    weights = [k for k in packaged if "running_" not in k and "num_batches" not in k]  # BN statistics move
    assert len(weights) > 20
    assert max(float((trained[k].float() - packaged[k].float()).abs().max()) for k in weights) < 1e-6

    run = _train(tiny_corpus, tmp_path / "bad", "--init_from=nonesuch")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error: ")]
    assert line == "error: init_from=nonesuch: no generator.ckpt there (give a folder made by `upcycle-se export`, " \
                   "or a packaged model: default, unpaired, small)"

def test_bad_override_is_one_clear_line(tiny_corpus, tmp_path):
    run = _train(tiny_corpus, tmp_path / "bad", "--lr=-1")
    assert run.returncode == 2
    assert "lr=-1" in run.stderr and "Traceback" not in run.stderr
    run = _train(tiny_corpus, tmp_path / "bad2", "--no_such_key=3")
    assert run.returncode == 2 and "no_such_key" in run.stderr and "Traceback" not in run.stderr


def test_bad_attenuation_limit_is_one_clear_line_before_training(tiny_corpus, tmp_path):
    run = _train(tiny_corpus, tmp_path / "bad", "--max_attenuation_db=-3")
    assert run.returncode == 2
    assert "max_attenuation_db" in run.stderr and "Traceback" not in run.stderr
    assert not list((tmp_path / "bad").glob("save/CKPT+*"))


@pytest.mark.slow
def test_attenuation_limit_acts_at_test_time_only(tiny_corpus, tmp_path):
    """``--max_attenuation_db=0`` with the magnitude-only mask: every test-time gain is 1, so the enhanced
    test files score as the noisy ones (the Brain's own test, tests/test_attenuation_limit.py, shows that
    training steps run without the limit)."""
    out = tmp_path / "limited"
    run = _train(tiny_corpus, out, "--unpaired=paired", "--loss_type=l1", "--mask_type=magnitude",
                 "--max_attenuation_db=0")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    read = lambda name: {r["file"]: r for r in csv.DictReader(open(out / name, newline=""))}  # noqa: E731
    enhanced, noisy = read("test_metrics_enhanced.csv"), read("test_metrics_noisy.csv")
    assert enhanced.keys() == noisy.keys() and len(enhanced) == 6
    for f in enhanced:
        assert abs(float(enhanced[f]["pesq"]) - float(noisy[f]["pesq"])) < 0.02
        assert abs(float(enhanced[f]["stoi"]) - float(noisy[f]["stoi"])) < 0.002


def test_missing_data_folder_is_one_clear_line(tmp_path):
    run = _train(tmp_path / "nowhere", tmp_path / "out")
    assert run.returncode == 2
    assert "nowhere" in run.stderr and "Traceback" not in run.stderr
    assert not list((tmp_path / "out").glob("save/CKPT+*"))


@pytest.mark.slow
def test_kill_and_resume_continues_from_last_checkpoint(tiny_corpus, tmp_path):
    """kill -9 at the instant the epoch-1 checkpoint appears (no polling: the run kills itself right after
    the rename that publishes it), then the same command again: it goes on with epoch 2."""
    out = tmp_path / "resume"
    killed = _train(tiny_corpus, out, epochs=(1, 2), kill_at="publish:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    (ckpt,) = (out / "save").glob("CKPT+*")
    assert checkpoint_problem(ckpt, RECIPE_CKPT_FILES) is None  # every file there, none truncated
    assert yaml.safe_load((ckpt / "CKPT.yaml").read_text())["epoch"] == 1
    assert re.findall(r"^epoch: (\d+)", (out / "train_log.txt").read_text(), re.M) == ["1"]

    run = _train(tiny_corpus, out, epochs=(1, 2))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Loading a checkpoint" in run.stdout + run.stderr
    log = (out / "train_log.txt").read_text()
    # the rerun went on after the last complete checkpoint, with the linear decay's learning rates
    assert re.findall(r"^epoch: (\d+), lr: ([^ ]+)", log, re.M) == [("1", "1.00e-03"), ("2", "6.67e-04"),
                                                                   ("3", "3.33e-04")]
    assert not list((out / "save").glob(".*"))  # nothing hidden left over: no staging, nothing set aside


def _torchrun(script: str, corpus: Path, out: Path, *extra: str, env=None, timeout=600):
    """``torchrun --nproc_per_node=2 <script> hparams/upcycle_small.yaml ...`` with gloo (CPU), 1 epoch."""
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(torchrun), "--nproc_per_node=2", f"--master_port={port}", script, "hparams/upcycle_small.yaml",
           f"--data_folder={corpus}", f"--output_folder={out}", f"--prep_folder={out.parent / 'prep'}",
           "--n_epochs=1", "--n_epochs_decay=0", "--distributed_backend=gloo", *FAST, *extra]
    proc = subprocess.Popen(cmd, cwd=RECIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hang: end torchrun *and* its workers, then fail
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun still running after {timeout} s (hung?): {stdout[-1500:]} {stderr[-1500:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("steps", ["1", "all"])
def test_ddp_two_processes_with_nan_on_one_process_only(tiny_corpus, tmp_path, steps):
    """``torchrun --nproc_per_node=2`` with the gloo backend (SpeechBrain's DDP path end to end) and NaN
    input on rank 1 only. Both processes skip the same steps (the skip decision is all-reduced), so a bad
    step is skipped and training, checkpointing and testing finish; bad steps without end stop both
    processes with the one-line divergence error. Either way inside the timeout: a hang fails the test."""
    out = tmp_path / "ddp_nan"
    # each process trains 2 batches of the tiny corpus: patience 1 stops at the second bad step in a row
    run = _torchrun(str(POISON_TRAIN), tiny_corpus, out, "--nonfinite_patience=1",
                    env={"POISON_RANK": "1", "POISON_STEPS": steps}, timeout=300)
    log = run.stdout + run.stderr
    if steps == "all":
        assert run.returncode != 0, log[-3000:]
        assert log.count("error: training diverged: 2 steps in a row had non-finite losses") == 2, log[-3000:]
        assert not list((out / "save").glob("CKPT+*"))  # no checkpoint of the diverged state
    else:
        assert run.returncode == 0, log[-3000:]
        stats = _epoch_stats(out / "train_log.txt")
        assert sorted(stats) == [1] and (out / "test_metrics_enhanced.csv").is_file()
        assert stats[1]["train nonfinite_steps"] == 1  # counted once, the same on both processes
        # rank 0 saw finite losses and skipped all the same, told by the all-reduce
        assert "non-finite loss on another process: step skipped (1 in a row, 1 this run)" in log
        assert len(list((out / "save").glob("CKPT+*/gen_n2c.ckpt"))) == 1


@pytest.mark.slow
def test_weight_average_is_checkpointed_and_exported(tiny_corpus, tmp_path):
    """``--ema_decay`` (opt-in): every checkpoint holds the averaged generator, and ``upcycle-se export``
    ships the average (which validation chose the checkpoint by), not the raw weights."""
    import torch

    from upcycle_se.export import export_model

    out = tmp_path / "ema"
    run = _train(tiny_corpus, out, "--unpaired=paired", "--loss_type=l1", "--ema_decay=0.9", epochs=(1, 0))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (ckpt,) = (out / "save").glob("CKPT+*")
    raw = torch.load(ckpt / "gen_n2c.ckpt", map_location="cpu")
    ema = torch.load(ckpt / "gen_n2c_ema.ckpt", map_location="cpu")
    assert int(ema["n_averaged"]) > 1
    info = export_model(out, tmp_path / "model")
    exported = torch.load(info.folder / "generator.ckpt", map_location="cpu")
    assert set(exported) == set(raw)
    for key, value in exported.items():
        torch.testing.assert_close(value, ema[f"module.{key}"])
    moved = [k for k in raw if raw[k].is_floating_point() and float((raw[k] - exported[k]).abs().max()) > 1e-6]
    assert moved, "the exported weights are the raw generator's"
