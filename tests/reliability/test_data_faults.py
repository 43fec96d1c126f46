"""Bad data and bad options stop training early with one clear line, or are handled.

Through ``train.py`` in a subprocess (exit code 2, one ``error:`` line on stderr naming the file or option,
no traceback, no checkpoint) where the whole chain matters; through the library for the rest. Cases
already covered elsewhere (missing data folder, lr=-1, unknown key: tests/recipes; single unusable files,
stereo, name mismatch, short files at the library level: tests/test_prepare.py) are not repeated.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.data import prepare as P
from upcycle_se.data.pipeline import dataio_prep, load_manifest
from upcycle_se.errors import AudioError, ConfigError, DataError
from upcycle_se.recipe import check_batches, check_override_types, load_hparams, validate_hparams

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "VoiceBankDEMAND"
FAST = ["--crop_samples=8000", "--batch_size=2", "--n_jobs=1", "--num_workers=0", "--device=cpu",
        "--valid_metrics=[pesq]", "--test_metrics=[pesq]", "--n_epochs=1", "--n_epochs_decay=0"]


def copy_corpus(tiny_corpus: Path, dest: Path) -> Path:
    """The tiny corpus' audio folders (4 training speakers x 5, 2 test speakers x 3; 1.7-5.3 s files)."""
    for sub in ("clean_trainset_wav", "noisy_trainset_wav", "clean_testset_wav", "noisy_testset_wav"):
        shutil.copytree(tiny_corpus / sub, dest / sub)
    return dest


def train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """train.py on ``data``; ``extra`` overrides replace those of FAST with the same key."""
    keys = {opt.split("=")[0] for opt in extra}
    fast = [opt for opt in FAST if opt.split("=")[0] not in keys]
    cmd = [sys.executable, "train.py", "hparams/upcycle_small.yaml", f"--data_folder={data}",
           f"--output_folder={out}", f"--prep_folder={out / 'prep'}", *fast, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed run (asserting exit code 2, no traceback, no repetition)."""
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr
    message = errors[0][len("error: "):]
    assert sum(message in line for line in run.stderr.splitlines()) == 1  # said once
    return message


def no_training_happened(out: Path) -> None:
    assert not list(out.glob("save/CKPT+*")) and not (out / "train_log.txt").exists()


# ------------------------------------------------------------------------------------ via train.py
@pytest.mark.slow
def test_folder_without_the_subfolders(tmp_path):
    data = tmp_path / "my corpus"
    (data / "wavs").mkdir(parents=True)
    sf.write(data / "wavs" / "a.wav", np.zeros(1600), 16000)
    message = one_error_line(train(data, tmp_path / "out"))
    assert message.startswith(f"{data}: not a VoiceBank-DEMAND folder: missing sub-folder(s) "
                              "clean_trainset_28spk_wav or clean_trainset_wav; ")
    assert "noisy_testset_wav" in message
    no_training_happened(tmp_path / "out")


@pytest.mark.slow
def test_unusable_files_are_all_named_before_any_work(tiny_corpus, tmp_path):
    """Zero-length, zero-byte, corrupt, stereo and NaN files: every one named with its problem, in one line."""
    data = copy_corpus(tiny_corpus, tmp_path / "vb")
    bad = {
        "clean_trainset_wav/p226_001.wav": "empty audio (0 samples)",
        "clean_trainset_wav/p227_002.wav": "empty file (0 bytes)",
        "noisy_trainset_wav/p227_001.wav": "cannot be read as audio",
        "noisy_testset_wav/p232_001.wav": "has 2 channels, expected mono",
    }
    sf.write(data / "clean_trainset_wav/p226_001.wav", np.zeros(0), 16000)
    (data / "clean_trainset_wav/p227_002.wav").write_bytes(b"")
    (data / "noisy_trainset_wav/p227_001.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(500))
    sf.write(data / "noisy_testset_wav/p232_001.wav", np.zeros((16000, 2)), 16000)
    message = one_error_line(train(data, tmp_path / "out"))
    assert message.startswith(f"{data / 'clean_trainset_wav/p226_001.wav'}: empty audio (0 samples) "
                              "(and 3 more unusable file(s): ")
    for rel, problem in bad.items():
        assert f"{data / rel}: {problem}" in message
    no_training_happened(tmp_path / "out")


@pytest.mark.slow
def test_paired_name_mismatch(tiny_corpus, tmp_path):
    data = copy_corpus(tiny_corpus, tmp_path / "vb")
    os.rename(data / "noisy_trainset_wav/p227_002.wav", data / "noisy_trainset_wav/p227_009.wav")
    message = one_error_line(train(data, tmp_path / "out"))
    assert message == (f"{data / 'clean_trainset_wav'} and {data / 'noisy_trainset_wav'} do not hold the same "
                       "file names: 1 clean file(s) without a noisy one (e.g. p227_002); 1 noisy file(s) without "
                       "a clean one (e.g. p227_009); pass paired=False for unpaired data")


@pytest.mark.slow
@pytest.mark.parametrize("override, expected", [
    ("--batch_size=abc", "batch_size='abc': must be an integer (like the default, 4)"),
    ("--n_epochs=abc", "n_epochs='abc': must be an integer (like the default, 8)"),  # used in a !ref sum
    ("--lr=0", "lr=0: must be a positive number"),
    ("--sample_rate=8000", "sample_rate=8000: the validation and test metrics (wide-band PESQ, STOI, ...) are "
                           "defined at 16000 Hz only"),
    ("--crop_samples=100000", "crop_samples=100000 (6.25 s) is longer than every noisy training file in "
                              "{prep}/train.json: the longest, p226_003, has 75739 samples (4.73 s); "
                              "lower crop_samples (or training_length)"),
    ("--batch_size=64", "batch_size=64 is larger than the training set (10 noisy file(s)); with drop_last no "
                        "batch would ever be trained: lower batch_size"),
])
def test_bad_override(tiny_corpus, tmp_path, override, expected):
    out = tmp_path / "out"
    message = one_error_line(train(tiny_corpus, out, override))
    assert message.startswith(expected.format(prep=out / "prep"))
    no_training_happened(out)


@pytest.mark.slow
def test_file_broken_after_preparation_fails_in_a_loader_worker_with_one_line(tiny_corpus, tmp_path):
    """A training file that turns unreadable after the manifests were written (disk, NFS, someone's
    script) is found by a DataLoader worker mid-epoch: still one line naming it, not the worker's traceback."""
    data = copy_corpus(tiny_corpus, tmp_path / "vb")
    out = tmp_path / "out"
    one_error_line(train(data, out, "--batch_size=64"))  # prepares the manifests, then stops
    assert (out / "prep" / "train.json").is_file()
    broken = data / "noisy_trainset_wav" / "p227_003.wav"
    broken.write_bytes(broken.read_bytes()[:30])  # a truncated header
    message = one_error_line(train(data, out, "--num_workers=1"))
    assert message.startswith(f"{broken}: cannot be read as audio")
    assert not list(out.glob("save/CKPT+*"))


# ------------------------------------------------------------------------------------- library
@pytest.mark.parametrize("key, value, expected", [
    ("lr", 0, "lr=0: must be a positive number"),
    ("lr", -2e-4, "lr=-0.0002: must be a positive number"),
    ("lr", "1e-3x", "lr='1e-3x': must be a positive number"),
    ("batch_size", "abc", "batch_size='abc': must be a positive integer"),
    ("batch_size", 2.5, "batch_size=2.5: must be a positive integer"),
    ("batch_size", True, "batch_size=True: must be a positive integer"),
    ("crop_samples", 0, "crop_samples=0: must be a positive integer"),
    ("n_epochs", -1, "n_epochs=-1: must be an integer >= 0"),
    ("sample_rate", 22050, "sample_rate=22050: the validation and test metrics"),
    ("unpaired", "cycle", "unpaired='cycle': must be one of shuffle, disjoint, paired"),
])
def test_validate_hparams(key, value, expected):
    good = {"lr": 2e-4, "batch_size": 4, "crop_samples": 32000, "sample_rate": 16000, "n_epochs": 70,
            "n_epochs_decay": 30, "unpaired": "shuffle", "valid_metrics": ["pesq", "stoi"]}
    validate_hparams(good)
    with pytest.raises(ConfigError) as err:
        validate_hparams({**good, key: value})
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, expected", [
    ("n_epochs: abc", "n_epochs='abc': must be an integer (like the default, 8)"),
    ("n_epochs_decay: 2.5", "n_epochs_decay=2.5: must be an integer (like the default, 4)"),
    ({"lr": "fast"}, "lr='fast': must be a number (like the default, 0.001)"),
    ({"batch_size": True}, "batch_size=True: must be an integer (like the default, 4)"),
])
def test_override_of_the_wrong_type_is_one_line_before_loading(tmp_path, overrides, expected):
    hparams = str(RECIPE / "hparams" / "upcycle_small.yaml")
    with pytest.raises(ConfigError) as err:
        load_hparams(hparams, overrides)
    assert str(err.value) == expected
    # numbers of the right type, strings for string keys and unknown keys pass through to HyperPyYAML
    check_override_types(hparams, {"n_epochs": 3, "lr": 1, "data_folder": str(tmp_path), "new_key": "x"})
    check_override_types(hparams, "lr: 1e-12")  # a string to PyYAML, a float to HyperPyYAML


def test_unknown_override_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"bad hparams or override: .*no_such_key") as err:
        load_hparams(str(RECIPE / "hparams" / "upcycle_small.yaml"),
                     {"data_folder": str(tmp_path), "no_such_key": 3})
    assert "\n" not in str(err.value)


def test_batches_check():
    check_batches(10, {"batch_size": 10, "drop_last": True})
    check_batches(3, {"batch_size": 4, "drop_last": False})  # one short batch per epoch: fine
    with pytest.raises(ConfigError, match=r"batch_size=4 is larger than the training set \(3 noisy file"):
        check_batches(3, {"batch_size": 4, "drop_last": True})


def write_pair(root: Path, uid: str, seconds: float, sr: int, seed: int, subtype: str = "PCM_16") -> None:
    rng = np.random.default_rng(seed)
    clean = 0.2 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * sr)) / sr)
    for side, sig in (("clean", clean), ("noisy", clean + 0.01 * rng.standard_normal(clean.size))):
        sf.write(root / f"{side}_trainset_wav" / f"{uid}.wav", sig.astype(np.float32), sr, subtype=subtype)


def small_vb(root: Path) -> Path:
    """A 16 kHz VoiceBank layout: 4 training speakers (p226/p287 validation) x 2, 1 test pair."""
    for sub in ("clean_trainset_wav", "noisy_trainset_wav", "clean_testset_wav", "noisy_testset_wav"):
        (root / sub).mkdir(parents=True)
    for i, spk in enumerate(("p226", "p230", "p250", "p287")):
        for k in (1, 2):
            write_pair(root, f"{spk}_00{k}", 0.6 + 0.2 * k, 16000, seed=10 * i + k)
    sf.write(root / "clean_testset_wav" / "p232_001.wav", np.full(8000, 0.1, np.float32), 16000)
    sf.write(root / "noisy_testset_wav" / "p232_001.wav", np.full(8000, 0.1, np.float32), 16000)
    return root


def test_files_at_other_rates_short_files_and_a_unicode_path_are_handled(tmp_path):
    """One pair at 8 kHz, one at 44.1 kHz, one 50 ms pair, under 'dätä with spaces': prepared (resampled
    once to 16 kHz), and every training crop is exactly crop_samples long (the short one zero-padded)."""
    data = small_vb(tmp_path / "dätä with spaces" / "VB ü")
    write_pair(data, "p230_001", 0.9, 8000, seed=1)
    write_pair(data, "p250_002", 0.7, 44100, seed=2)
    write_pair(data, "p230_002", 0.05, 16000, seed=3)
    save = tmp_path / "prép"
    out = P.prepare_voicebank(data, save)
    entries = load_manifest(out["train"])
    for uid in ("p230_001", "p250_002"):
        for key in ("noisy_wav", "clean_wav"):
            info = sf.info(entries[uid][key])
            assert info.samplerate == 16000 and entries[uid][key].startswith(str(save / "wav16k"))
    assert entries["p230_001"]["length"] == 14400 / 16000 and entries["p250_002"]["length"] == 11200 / 16000
    sets = dataio_prep({"prep_folder": str(save), "crop_samples": 4000, "unpaired": "paired"})
    train = sets["train"]
    train.set_epoch(1)
    items = {train[i]["id"]: train[i] for i in range(len(train))}
    assert sorted(items) == ["p230_001", "p230_002", "p250_001", "p250_002"]
    assert all(item["noisy_sig"].shape == item["clean_sig"].shape == (4000,) for item in items.values())
    short = items["p230_002"]["noisy_sig"]
    assert short[:800].abs().max() > 0.1 and not short[800:].any()  # 50 ms of signal, then zeros


def test_crop_longer_than_every_file_names_the_crop_and_the_longest_file(tmp_path):
    data = small_vb(tmp_path / "vb")
    save = tmp_path / "prep"
    P.prepare_voicebank(data, save)
    longest = round(1.0 * 16000)  # the training files are 0.8 and 1.0 s long
    dataio_prep({"prep_folder": str(save), "crop_samples": longest})  # as long as the longest: fine
    with pytest.raises(ConfigError) as err:
        dataio_prep({"prep_folder": str(save), "crop_samples": longest + 1})
    assert str(err.value) == (f"crop_samples={longest + 1} ({(longest + 1) / 16000:g} s) is longer than every noisy "
                              f"training file in {save / 'train.json'}: the longest, p230_002, has {longest} samples "
                              "(1.00 s); lower crop_samples (or training_length)")
    with pytest.raises(ConfigError, match=r"crop_samples=32000 \(2 s\) is longer than every noisy training file"):
        dataio_prep({"prep_folder": str(save), "training_length": 2.0})


def test_nan_in_a_float_file_used_in_place_is_found_at_preparation(tmp_path):
    """A 16 kHz float wav is used in place (not resampled, so not read in full): its NaN samples must be
    found before training, not by a DataLoader worker hours later."""
    data = small_vb(tmp_path / "vb")
    sig = np.full(12800, 0.1, np.float32)
    sig[5000] = np.nan
    bad = data / "noisy_trainset_wav" / "p250_001.wav"
    sf.write(bad, sig, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=rf"^{bad}: contains NaN or infinite samples$"):
        P.prepare_voicebank(data, tmp_path / "prep")


def test_missing_or_misnamed_data_folders(tmp_path):
    nowhere = tmp_path / "dätä with spaces" / "nowhere"
    with pytest.raises(DataError, match=rf"^{nowhere}: data folder not found"):
        P.prepare_voicebank(nowhere, tmp_path / "prep")
    a_file = tmp_path / "corpus.zip"
    a_file.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=rf"^{a_file}: data folder not found"):
        P.prepare_voicebank(a_file, tmp_path / "prep")
