"""Tests of ``upcycle-se evaluate``: matching, CSV, summary, noisy column, rates, lengths, errors."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.audio import read_audio, resample_audio
from upcycle_se.cli import main
from upcycle_se.metrics import DEFAULT_METRICS, MetricWarning, score_pair

SR = 16000
NAMES = ("p232_001", "p232_002", "p257_003")


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """A deterministic voiced-syllables signal with pauses and a recording floor, float32 ``[time]``."""
    rs = np.random.RandomState(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 30 * np.sin(2 * np.pi * 0.5 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(h * phase) / h * (1 + 2 * np.exp(-((h * 130 - 700) / 300) ** 2)) for h in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 2 * t + seed), 0, None)
    sig = voiced * env + (0.03 * env + 0.002) * rs.randn(t.size)
    return (0.4 * sig / np.abs(sig).max()).astype(np.float32)


def noise_like(x: np.ndarray, level: float, seed: int) -> np.ndarray:
    return (level * np.random.RandomState(seed).randn(x.size)).astype(np.float32)


@pytest.fixture()
def folders(tmp_path):
    """clean/, noisy/ (white noise) and enhanced/ (a quarter of that noise) with three 1.5 s utterances."""
    dirs = {k: tmp_path / k for k in ("clean", "noisy", "enhanced")}
    for d in dirs.values():
        d.mkdir()
    for i, name in enumerate(NAMES):
        x = speechlike(1.5, seed=i)
        n = noise_like(x, 0.03, seed=10 + i)
        sf.write(dirs["clean"] / f"{name}.wav", x, SR, subtype="PCM_16")
        sf.write(dirs["noisy"] / f"{name}.wav", x + n, SR, subtype="FLOAT")
        sf.write(dirs["enhanced"] / f"{name}.wav", x + n / 4, SR, subtype="FLOAT")
    return dirs


def run_cli(capsys, *args):
    rc = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def read_rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def expected_scores(clean: Path, other: Path):
    ref, sr_r = read_audio(clean)
    deg, sr_d = read_audio(other)
    return score_pair(resample_audio(ref, sr_r, SR), resample_audio(deg, sr_d, SR), DEFAULT_METRICS)


def test_csv_and_summary_show_noisy_vs_enhanced(folders, capsys, tmp_path):
    out_csv = tmp_path / "res" / "scores.csv"
    rc, out, err = run_cli(capsys, "--clean", folders["clean"], "--enhanced", folders["enhanced"],
                           "--noisy", folders["noisy"], "--csv", out_csv)
    assert rc == 0
    rows = read_rows(out_csv)
    assert rows[0] == ["file", "pesq", "stoi", "csig", "cbak", "covl", "ssnr",
                       "noisy_pesq", "noisy_stoi", "noisy_csig", "noisy_cbak", "noisy_covl", "noisy_ssnr"]
    assert [r[0] for r in rows[1:]] == [f"{n}.wav" for n in NAMES]
    for row, name in zip(rows[1:], NAMES):
        enh = expected_scores(folders["clean"] / f"{name}.wav", folders["enhanced"] / f"{name}.wav")
        noisy = expected_scores(folders["clean"] / f"{name}.wav", folders["noisy"] / f"{name}.wav")
        got = [float(v) for v in row[1:]]
        want = [enh[m] for m in DEFAULT_METRICS] + [noisy[m] for m in DEFAULT_METRICS]
        assert got == pytest.approx(want, rel=1e-5)
        # 12 dB less noise; segSNR gains less because of its [-10, 35] dB frame clamp
        assert enh["pesq"] > noisy["pesq"] + 0.3 and enh["ssnr"] > noisy["ssnr"] + 3
    lines = out.splitlines()
    assert lines[0] == "3 files: noisy and enhanced vs clean (mean ± std)"
    assert lines[1].split() == ["metric", "enhanced", "noisy"]
    pesq_line = next(line for line in lines if line.startswith("PESQ"))
    enh_mean = np.mean([float(r[1]) for r in rows[1:]])
    enh_std = np.std([float(r[1]) for r in rows[1:]], ddof=1)
    assert f"{enh_mean:.3f} ± {enh_std:.3f}" in pesq_line
    assert [line.split()[0] for line in lines[2:8]] == ["PESQ", "STOI", "CSIG", "CBAK", "COVL", "SSNR"]
    assert "evaluate" in err and "3/3" in err  # the tqdm progress bar


def test_two_jobs_give_the_same_csv_as_one(folders, capsys, tmp_path):
    for jobs in (1, 2):
        rc, _, _ = run_cli(capsys, "--clean", folders["clean"], "--enhanced", folders["enhanced"],
                           "--jobs", jobs, "--csv", tmp_path / f"j{jobs}.csv", "--quiet")
        assert rc == 0
    assert (tmp_path / "j1.csv").read_text() == (tmp_path / "j2.csv").read_text()


def test_48k_files_are_resampled_with_a_warning_or_refused(folders, capsys, tmp_path):
    """VoiceBank's clean set ships at 48 kHz: scored after resampling to 16 kHz, like a 16 kHz copy."""
    clean48 = tmp_path / "clean48"
    clean48.mkdir()
    for name in NAMES:
        x, _ = read_audio(folders["clean"] / f"{name}.wav")
        sf.write(clean48 / f"{name}.wav", resample_audio(x, SR, 48000).numpy(), 48000, subtype="FLOAT")
    rc, out, err = run_cli(capsys, "--clean", clean48, "--enhanced", folders["enhanced"], "--quiet",
                           "--csv", tmp_path / "a.csv")
    assert rc == 0
    assert "warning: 3 file(s) at 48000 Hz resampled to 16000 Hz" in err
    rc, _, _ = run_cli(capsys, "--clean", folders["clean"], "--enhanced", folders["enhanced"], "--quiet",
                       "--csv", tmp_path / "b.csv")
    at48 = np.array([[float(v) for v in r[1:]] for r in read_rows(tmp_path / "a.csv")[1:]])
    at16 = np.array([[float(v) for v in r[1:]] for r in read_rows(tmp_path / "b.csv")[1:]])
    assert np.allclose(at48, at16, rtol=0.03, atol=0.05)  # a 16->48->16 kHz round trip changes little
    rc, _, err = run_cli(capsys, "--clean", clean48, "--enhanced", folders["enhanced"], "--no-resample")
    assert rc == 2 and "sample rate 48000 Hz, expected 16000 Hz" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("case", ["missing_dir", "no_common_names", "stereo", "length", "bad_metric"])
def test_bad_input_is_one_line_error(folders, capsys, tmp_path, case):
    enhanced, extra = folders["enhanced"], []
    if case == "missing_dir":
        enhanced, expected = tmp_path / "nope", "--enhanced"
    elif case == "no_common_names":
        enhanced = tmp_path / "other"
        enhanced.mkdir()
        sf.write(enhanced / "x_001.wav", speechlike(1.0, 0), SR)
        expected = "no file name is common"
    elif case == "stereo":
        x = speechlike(1.5, 0)
        sf.write(enhanced / f"{NAMES[0]}.wav", np.stack([x, x], axis=1), SR)
        expected = "has 2 channels, expected mono"
    elif case == "length":
        sf.write(enhanced / f"{NAMES[1]}.wav", speechlike(1.0, 1), SR)  # 0.5 s shorter than its clean file
        expected = "more than the 0.1 s allowed"
    else:
        extra, expected = ["--metrics", "pesq,mos"], "--metrics"
    rc, _, err = run_cli(capsys, "--clean", folders["clean"], "--enhanced", enhanced, "--quiet", *extra)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("upcycle-se evaluate: error:")
    assert expected in err


def test_silent_output_is_nan_and_counted_and_small_length_gaps_truncated(folders, capsys, tmp_path):
    """A silent enhanced file: PESQ and the PESQ-based ratings are 'nan' in the CSV, left out of the means,
    and the table says so. An enhanced file 40 samples short is truncated with a warning, scored like the
    truncated pair. A stray enhanced file without a clean one is reported, not scored."""
    x, _ = read_audio(folders["clean"] / f"{NAMES[0]}.wav")
    sf.write(folders["enhanced"] / f"{NAMES[0]}.wav", np.zeros(x.numel(), np.float32), SR)
    short, _ = read_audio(folders["enhanced"] / f"{NAMES[1]}.wav")
    sf.write(folders["enhanced"] / f"{NAMES[1]}.flac", short.numpy()[:-40], SR, subtype="PCM_24")
    (folders["enhanced"] / f"{NAMES[1]}.wav").unlink()  # matched by name without extension
    sf.write(folders["enhanced"] / "stray_001.wav", short.numpy(), SR)
    rc, out, err = run_cli(capsys, "--clean", folders["clean"], "--enhanced", folders["enhanced"],
                           "--csv", tmp_path / "s.csv", "--quiet")
    assert rc == 0
    rows = {r[0]: r for r in read_rows(tmp_path / "s.csv")[1:]}
    header = read_rows(tmp_path / "s.csv")[0]
    silent = dict(zip(header, rows[f"{NAMES[0]}.wav"]))
    assert [silent[m] for m in ("pesq", "csig", "cbak", "covl")] == ["nan"] * 4
    assert float(silent["ssnr"]) == pytest.approx(0.0, abs=1e-6)
    assert "(n=2, 1 NaN)" in next(line for line in out.splitlines() if line.startswith("PESQ"))
    assert f"{NAMES[0]}.wav (enhanced): PESQ undefined: the degraded/enhanced signal is silent" in err
    assert f"{NAMES[1]}.flac (enhanced): lengths differ by 40 samples" in err
    assert "1 enhanced file(s) have no clean file, not scored: stray_001.wav" in err
    with pytest.warns(MetricWarning, match="lengths differ by 40 samples"):
        truncated = expected_scores(folders["clean"] / f"{NAMES[1]}.wav", folders["enhanced"] / f"{NAMES[1]}.flac")
    got = [float(v) for v in rows[f"{NAMES[1]}.wav"][1:]]
    assert got == pytest.approx([truncated[m] for m in DEFAULT_METRICS], rel=1e-5)
    assert not math.isnan(got[0])
