"""The UnpairedFolders recipe end to end: your own noisy and clean folders, then export and enhance.

The folders are made from the tiny corpus so that they share no file names: noisy files of two speakers
nested two levels deep at 16 kHz (wav) and 22.05 kHz (flac), clean files of two other speakers flat at
48 kHz (wav) and 16 kHz (flac). Each run is ``python train.py hparams/upcycle_small.yaml --noisy_folder=...
--clean_folder=...`` in a subprocess, shrunk to seconds (0.5 s crops, batch 2, 1 epoch).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from upcycle_se.audio import read_audio, resample_audio

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "UnpairedFolders"
PACKAGED_SMALL = REPO / "upcycle_se" / "pretrained" / "small"
FAST = ["--crop_samples=8000", "--batch_size=2", "--n_jobs=1", "--num_workers=0", "--device=cpu",
        "--valid_metrics=[pesq]", "--n_epochs=1", "--n_epochs_decay=0"]


@pytest.fixture(scope="module")
def own_folders(tiny_corpus, tmp_path_factory) -> Path:
    """``noisy/<spk>/session 1/<k>.{wav,flac}`` (8 files) and ``clean/talk-<n>.{wav,flac}`` (6 files)."""
    root = tmp_path_factory.mktemp("own data")
    noisy = sorted((tiny_corpus / "noisy_trainset_wav").glob("p22[67]_*.wav"))[:8]
    for i, src in enumerate(noisy):
        sig, sr = read_audio(src)
        dest = root / "noisy" / src.stem.split("_")[0] / "session 1" / f"{i}.{'flac' if i % 2 else 'wav'}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        rate = 22050 if i % 2 else sr
        sf.write(dest, resample_audio(sig, sr, rate).numpy(), rate)
    clean = sorted((tiny_corpus / "clean_trainset_wav").glob("p2[3-9]*.wav"))[:6]
    (root / "clean").mkdir()
    for i, src in enumerate(clean):
        sig, sr = read_audio(src)
        rate = 48000 if i % 2 else sr
        sf.write(root / "clean" / f"talk-{i}.{'wav' if i % 2 else 'flac'}", resample_audio(sig, sr, rate).numpy(), rate)
    noisy_names = {p.stem for p in (root / "noisy").rglob("*.*")}
    assert noisy_names.isdisjoint(p.stem for p in (root / "clean").iterdir())
    return root


def train(folders: Path, out: Path, *extra: str, timeout=600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "hparams/upcycle_small.yaml", f"--noisy_folder={folders / 'noisy'}",
           f"--clean_folder={folders / 'clean'}", f"--output_folder={out}", *FAST, *extra]
    return subprocess.run(cmd, cwd=RECIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=timeout)


def cli(*args: str) -> subprocess.CompletedProcess:
    """``upcycle-se <args>``, the console script a user runs."""
    return subprocess.run([str(Path(sys.executable).with_name("upcycle-se")), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def valid_stats(out: Path) -> dict:
    line = re.search(r"^epoch: 1, .* - (valid .*)$", (out / "train_log.txt").read_text(), re.M).group(1)
    return {k: float(v) for k, v in re.findall(r"valid ([a-z_]+): ([-0-9.e+]+)", line)}


def tensorboard_tags(out: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (out / "tensorboard").glob("events.out.tfevents*")
    acc = EventAccumulator(str(events), size_guidance={"audio": 0, "images": 0})
    acc.Reload()
    return acc.Tags()


@pytest.mark.slow
def test_no_validation_folders_train_export_enhance(own_folders, tmp_path):
    """Held-out noisy files, validated without a reference (snr_gain chooses), then export + enhance.
    Trained with the opt-in unpaired options (clean-side cycle only, identity decay, remixed pseudo-pair L1)."""
    out = tmp_path / "run"
    run = train(own_folders, out, "--valid_fraction=0.25", "--noisy_cycle_scale=0", "--identity_decay_steps=2",
                "--remix_weight=20", "--remix_snr=[-5,20]")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "train.py").read_text() == (RECIPE / "train.py").read_text()  # the script that ran
    ran = (out / "hyperparams.yaml").read_text()
    assert all(line in ran for line in ("noisy_cycle_scale: 0", "identity_decay_steps: 2", "remix_weight: 20"))
    assert re.search(r"\nremix_snr:[^\n]*\[-5, 20\]", ran), ran  # the range reached the hparams
    assert "remix: " in (out / "train_log.txt").read_text()  # the term was trained and logged
    (ckpt,) = (out / "save").glob("CKPT+*")

    valid = sorted((own_folders / "noisy").rglob("*.*"))[-2:]  # 25 % of 8 files: the last two in order
    manifest = (out / "prepared" / "valid.json").read_text()
    assert all(str(p.relative_to(own_folders / "noisy").with_suffix("")) in manifest for p in valid)
    stats = valid_stats(out)
    assert set(stats) == {"cycle_loss", "snr_gain"}
    assert 0 < stats["cycle_loss"] < 1 and abs(stats["snr_gain"]) < 30
    assert "snr_gain:" in (ckpt / "CKPT.yaml").read_text()

    tags = tensorboard_tags(out)
    assert sorted(tags["audio"]) == ["example0/enhanced", "example0/noisy", "example1/enhanced", "example1/noisy"]
    assert sorted(tags["images"]) == ["example0/spectrogram", "example1/spectrogram"]
    assert {"snr_gain/valid", "cycle_loss/valid"} <= set(tags["scalars"])

    model = tmp_path / "model"
    exported = cli("export", "--checkpoint", str(out), "--out", str(model))  # picks by snr_gain, as trained
    assert exported.returncode == 0, exported.stderr[-2000:]
    noisy_file = next((own_folders / "noisy").rglob("*.flac"))
    enhanced = cli("enhance", "--model", str(model), "-o", str(tmp_path / "enhanced"), str(noisy_file))
    assert enhanced.returncode == 0, enhanced.stderr[-2000:]
    (result,) = (tmp_path / "enhanced").glob("*.flac")
    assert sf.info(str(result)).samplerate == 22050
    assert sf.info(str(result)).frames == sf.info(str(noisy_file)).frames


@pytest.mark.slow
def test_paired_validation_folders_and_init_from(own_folders, tiny_corpus, tmp_path):
    """Paired validation folders: PESQ chooses and TensorBoard gets the clean side too. ``--init_from`` the
    packaged small model with a vanishing learning rate: the trained generator's weights are its weights."""
    out = tmp_path / "run"
    run = train(own_folders, out, f"--valid_noisy_folder={tiny_corpus / 'noisy_testset_wav'}",
                f"--valid_clean_folder={tiny_corpus / 'clean_testset_wav'}", f"--init_from={PACKAGED_SMALL}",
                "--lr=1.0e-12", "--n_valid_examples=1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 1.0 < valid_stats(out)["pesq"] < 4.5
    assert sorted(tensorboard_tags(out)["audio"]) == ["example0/clean", "example0/enhanced", "example0/noisy"]

    (ckpt,) = (out / "save").glob("CKPT+*")
    trained = torch.load(ckpt / "gen_n2c.ckpt", map_location="cpu")
    packaged = torch.load(PACKAGED_SMALL / "generator.ckpt", map_location="cpu")
    assert trained.keys() == packaged.keys()
    weights = [k for k in packaged if "running_" not in k and "num_batches" not in k]  # BN statistics move
    assert len(weights) > 20
    assert max(float((trained[k].float() - packaged[k].float()).abs().max()) for k in weights) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("init_from, expected", [
    ("empty", "init_from={}: no generator.ckpt there"),
    ("packaged", "init_from={}: its generator does not fit generator_preset=base"),
])
def test_init_from_errors_are_one_line(own_folders, tmp_path, init_from, expected):
    folder = PACKAGED_SMALL if init_from == "packaged" else tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    run = train(own_folders, tmp_path / "run", f"--init_from={folder}", "--generator_preset=base")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: " + expected.format(folder))
    assert not list((tmp_path / "run").glob("save/CKPT+*"))


@pytest.mark.slow
def test_skip_prep_uses_the_manifests_as_they_are(own_folders, tmp_path):
    """skip_prep without manifests: one line naming the missing manifest; a run never prepares then."""
    out = tmp_path / "run"
    run = train(own_folders, out, "--skip_prep=True")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"error: {out / 'prepared' / 'train.json'}: manifest not found" in run.stderr
    assert not (out / "prepared").exists()
