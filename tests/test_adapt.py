"""``upcycle-se adapt``: the wall-clock budget, the cutting of a user's recordings, bad input in one line,
and an end-to-end adaptation that exports a usable model and continues where it stopped."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from upcycle_se import budget as budget_mod
from upcycle_se.adapt import (MIN_SECONDS, SEGMENT_SECONDS, adapt, adapt_hparams_file, cut_segments,
                              resolve_start_model)
from upcycle_se.budget import WallClockEpochCounter
from upcycle_se.cli import main
from upcycle_se.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    """time.monotonic for the counter, moved by hand: the tests do not depend on the machine's speed."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget_mod.time, "monotonic", fake)
    return fake


# ------------------------------------------------------------------------------------------ budget
def test_counter_stops_when_the_budget_is_spent(clock):
    counter = WallClockEpochCounter(minutes=1.0)  # 60 s; epochs of 25 s
    epochs = []
    for epoch in counter:
        epochs.append(epoch)
        clock.now += 25.0
    # after 2 epochs 10 s are left, more than a quarter of an epoch (6.25 s): a third runs and overspends
    assert epochs == [1, 2, 3]
    assert counter.spent_s == pytest.approx(75.0)
    assert counter.remaining_s() == 0.0


def test_counter_does_not_start_an_epoch_for_crumbs(clock):
    counter = WallClockEpochCounter(minutes=1.0)
    epochs = []
    for epoch in counter:
        epochs.append(epoch)
        clock.now += 28.0  # 2 epochs leave 4 s: under a quarter of 28 s
    assert epochs == [1, 2]


def test_counter_checkpoint_keeps_the_time_spent(clock, tmp_path):
    counter = WallClockEpochCounter(minutes=2.0)
    assert next(counter) == 1
    clock.now += 30.0
    counter._save(tmp_path / "counter.ckpt")  # written at the end of the epoch, before __next__
    saved = json.loads((tmp_path / "counter.ckpt").read_text())
    assert saved == {"current": 1, "spent_s": pytest.approx(30.0)}

    resumed = WallClockEpochCounter(minutes=2.0)  # a new process: the budget left is 90 s, not 120 s
    resumed._recover(tmp_path / "counter.ckpt")
    assert resumed.current == 1 and resumed.remaining_s() == pytest.approx(90.0)
    epochs = []
    for epoch in resumed:
        epochs.append(epoch)
        clock.now += 30.0
    assert epochs == [2, 3, 4]  # 30 + 3 x 30 = 120 s


def test_counter_reads_a_stock_epoch_counter_file(tmp_path):
    (tmp_path / "counter.ckpt").write_text("3")
    counter = WallClockEpochCounter(minutes=1.0)
    counter._recover(tmp_path / "counter.ckpt")
    assert counter.current == 3 and counter.spent_s == 0.0


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), "5", True])
def test_counter_rejects_a_bad_budget(minutes):
    with pytest.raises(UserError, match="minutes"):
        WallClockEpochCounter(minutes=minutes)


# ------------------------------------------------------------------------------------------ recordings
def _speechlike(seconds: float, sr: int, seed: int = 0, level: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (level * envelope * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_cut_segments_resamples_cuts_and_reuses(tmp_path):
    src = tmp_path / "calls"
    (src / "day1").mkdir(parents=True)
    sf.write(src / "day1" / "a.wav", _speechlike(14.0, 22050), 22050)  # odd rate, nested
    sf.write(src / "b.flac", _speechlike(3.0, 16000, seed=1), 16000)
    sf.write(src / "quiet.wav", np.zeros(16000 * 2, np.float32), 16000)
    (src / "broken.wav").write_bytes(b"RIFF not audio")
    seg = cut_segments(src, tmp_path / "seg", min_seconds=10.0, progress=False)
    names = sorted(p.name for p in seg["segments"])
    assert names == ["b__0000.wav", "day1__a__0000.wav", "day1__a__0001.wav", "day1__a__0002.wav"]  # 14 s: 3
    lengths = {p.name: sf.info(p).frames for p in seg["segments"]}
    assert all(sf.info(p).samplerate == 16000 and sf.info(p).channels == 1 for p in seg["segments"])
    assert lengths["b__0000.wav"] == 48000
    assert seg["seconds"] == pytest.approx(17.0, abs=0.01)
    assert sorted(s.split(":")[0] for s in seg["skipped"]) == ["broken.wav", "quiet.wav"]
    assert any("silent" in s for s in seg["skipped"])
    # the same files: reused as they are (no rewrite)
    stamp = (tmp_path / "seg" / "b__0000.wav").stat().st_mtime_ns
    again = cut_segments(src, tmp_path / "seg", min_seconds=10.0, progress=False)
    assert again["segments"] == seg["segments"] and (tmp_path / "seg" / "b__0000.wav").stat().st_mtime_ns == stamp


def test_cut_segments_never_longer_than_the_segment_length(tmp_path):
    src = tmp_path / "calls"
    src.mkdir()
    sf.write(src / "long.wav", _speechlike(20.0, 16000), 16000)
    seg = cut_segments(src, tmp_path / "seg", min_seconds=10.0, progress=False)
    frames = [sf.info(p).frames for p in seg["segments"]]
    assert len(frames) == 4 and max(frames) <= SEGMENT_SECONDS * 16000 and sum(frames) == 20 * 16000


def test_bad_recordings_each_give_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio")
    with pytest.raises(DataError, match=r"no audio files .* noisy recordings"):
        cut_segments(empty, tmp_path / "s1", progress=False)

    unusable = tmp_path / "unusable"
    unusable.mkdir()
    (unusable / "x.wav").write_bytes(b"garbage")
    sf.write(unusable / "y.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(DataError, match=r"none of its 2 audio file\(s\) is usable .*silent"):
        cut_segments(unusable, tmp_path / "s2", progress=False)

    short = tmp_path / "short"
    short.mkdir()
    sf.write(short / "a.wav", _speechlike(5.0, 16000), 16000)
    with pytest.raises(DataError, match=rf"only 5.0 s of usable audio; adapt needs at least {MIN_SECONDS:g} s"):
        cut_segments(short, tmp_path / "s3", progress=False)

    stereo = tmp_path / "stereo"
    stereo.mkdir()
    sf.write(stereo / "st.wav", np.stack([_speechlike(70.0, 16000)] * 2, axis=1), 16000)
    with pytest.raises(DataError, match=r"st.wav: has 2 channels, expected mono .*mono first"):
        cut_segments(stereo, tmp_path / "s4", progress=False)


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("upcycle-se adapt: error:")
    return err


def test_cli_bad_options_each_give_one_line(tmp_path, capsys):
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", _speechlike(70.0, 16000), 16000)
    out = tmp_path / "model"
    assert "--minutes 0.0: must be a positive" in _cli_error(capsys, ["adapt", str(noisy), "--out", str(out),
                                                                     "--minutes", "0"])
    assert "--minutes -3.0" in _cli_error(capsys, ["adapt", str(noisy), "--out", str(out), "--minutes", "-3"])
    out.mkdir()
    assert "already exists; pass --overwrite" in _cli_error(capsys, ["adapt", str(noisy), "--out", str(out)])
    assert "no such folder" in _cli_error(capsys, ["adapt", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert "not a model folder" in _cli_error(capsys, ["adapt", str(noisy), "--out", str(tmp_path / "m"),
                                                       "--from", str(tmp_path)])
    assert "must be outside the folder of recordings" in _cli_error(capsys, ["adapt", str(noisy), "--out",
                                                                             str(noisy / "model")])
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.work").exists()
    assert sorted(p.name for p in noisy.iterdir()) == ["a.wav"]  # nothing written among the recordings


def test_start_models_are_recognised():
    assert resolve_start_model("unpaired")[1:] == ("redesign_base", False)
    assert resolve_start_model("default")[1:] == ("redesign_base", False)
    assert resolve_start_model("small")[1:] == ("redesign_small", False)


def test_adapt_settings_are_those_of_the_unpaired_model():
    """adapt.yaml trains with the options the packaged `unpaired` model's card names (its last stage)."""
    card = (REPO / "upcycle_se" / "pretrained" / "base_unpaired_selfbabble" / "MODEL.md").read_text()
    with open(adapt_hparams_file(), encoding="utf-8") as fin:
        text = fin.read()
    values = {k: v for k, v in (re.match(r"^(\w+): ([^#\n]+?)\s*(#.*)?$", line).groups()[:2]
                                for line in text.splitlines() if re.match(r"^\w+: [^!\n]", line))}
    assert "--remix_weight=40" in card and float(values["remix_weight"]) == 40
    assert "--remix_snr=[-5,20]" in card and yaml.safe_load(values["remix_snr"]) == [-5, 20]
    assert "--remix_noise=pauses" in card and values["remix_noise"] == "pauses"
    assert "--ema_decay=0.998" in card and float(values["ema_decay"]) == 0.998
    assert "--noisy_cycle_scale=0" in card and float(values["noisy_cycle_scale"]) == 0
    assert "lr 5e-4" in card and float(values["lr"]) == 5e-4
    assert "batch 4 x 1 s" in card and int(values["batch_size"]) == 4 and int(values["crop_samples"]) == 16000
    assert values["unpaired"] == "shuffle" and values["loss_type"] == "gan"


# ------------------------------------------------------------------------------------------ end to end
def test_adapt_end_to_end_exports_and_continues(tiny_corpus, tmp_path):
    from upcycle_se.inference import UpCycleEnhancement

    noisy, clean = tiny_corpus / "noisy_trainset_wav", tiny_corpus / "clean_trainset_wav"
    out = tmp_path / "adapted"
    kwargs = dict(from_model="small", clean_folder=clean, seed=3, threads=2, progress=False, min_seconds=30.0)
    result = adapt(noisy, out, minutes=0.05, **kwargs)  # 3 s of training: one short epoch on a CPU
    assert result.model_dir == out and (out / "generator.ckpt").is_file()
    assert result.epochs >= 1 and result.n_train_segments + result.n_valid_segments == 20
    assert result.n_valid_segments == 2  # a tenth of 20 segments
    assert np.isfinite(result.snr_gain) and np.isfinite(result.start_snr_gain)
    assert result.enhance_command.startswith(f"upcycle-se enhance --model {out}")
    record = json.loads((out / "adapt.json").read_text())
    assert record["options"]["from"].endswith("pretrained/small") and record["epoch"] == result.epoch

    enhancer = UpCycleEnhancement.from_hparams(source=str(out), savedir=str(out))
    wav = torch.from_numpy(sf.read(sorted(noisy.glob("*.wav"))[0], dtype="float32")[0])
    enhanced = enhancer.enhance_batch(wav.unsqueeze(0), torch.ones(1))
    assert enhanced.shape[-1] == wav.shape[-1] and torch.isfinite(enhanced).all()
    assert not torch.allclose(enhanced.reshape(-1), wav)

    # the same command again: the model exists
    with pytest.raises(UserError, match="already exists"):
        adapt(noisy, out, minutes=0.05, **kwargs)
    # more minutes with --overwrite: trains on from the checkpoint (epoch 2), it does not start again
    # a budget that leaves twice the first run's time: another epoch starts on any machine speed
    again = adapt(noisy, out, minutes=3 * result.minutes_spent + 0.05, overwrite=True, **kwargs)
    assert again.epochs > result.epochs and again.minutes_spent > result.minutes_spent
    assert f"epoch: {result.epochs + 1}," in (Path(f"{out}.work") / "run" / "train_log.txt").read_text()
    # other options in the same work folder: refused, nothing lost
    with pytest.raises(UserError, match=r"other options \(seed\)"):
        adapt(noisy, out, minutes=1.0, overwrite=True, **dict(kwargs, seed=4))
    assert (out / "generator.ckpt").is_file()


def test_clean_pile_is_synthesized_offline(tmp_path):
    """Without --clean_folder, adapt builds its clean speech with the corpus builder (12 speakers)."""
    from upcycle_se.adapt import build_clean_pile
    from upcycle_se.corpus.speech import require_tools

    try:
        require_tools()
    except UserError as err:
        pytest.skip(str(err))
    folder = build_clean_pile(tmp_path / "clean", minutes=0.5, seed=0)
    files = sorted(folder.glob("*.wav"))
    speakers = {f.name.split("_")[0] for f in files}
    seconds = sum(sf.info(f).duration for f in files)
    assert len(speakers) == 12 and len(files) == 12
    assert all(sf.info(f).samplerate == 16000 and sf.info(f).channels == 1 for f in files)
    assert 12 * 1.5 <= seconds <= 12 * 6.0
    stamp = files[0].stat().st_mtime_ns
    assert build_clean_pile(tmp_path / "clean", minutes=0.5, seed=0) == folder  # the same call reuses it
    assert files[0].stat().st_mtime_ns == stamp


def test_quiet_console_gives_the_callers_levels_back():
    """adapt() quiets the console during training only: a Python caller's handlers get their levels back."""
    import logging
    import os

    from upcycle_se.adapt import _quiet_console

    root = logging.getLogger()
    console, logfile = logging.StreamHandler(), logging.FileHandler(os.devnull)
    console.setLevel(logging.INFO)
    logfile.setLevel(logging.DEBUG)
    root.addHandler(console)
    root.addHandler(logfile)
    try:
        restore = _quiet_console()
        assert console.level == logging.WARNING and logfile.level == logging.DEBUG
        restore()
        assert console.level == logging.INFO and logfile.level == logging.DEBUG
    finally:
        root.removeHandler(console)
        root.removeHandler(logfile)
        logfile.close()
