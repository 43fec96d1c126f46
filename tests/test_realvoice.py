"""The real-voice sets (ALSA's recorded clips x noises x test SNRs: the first and the hard one) and the first
set's rows in the quality benchmark."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.cli import main as cli_main
from upcycle_se.corpus import noise as N
from upcycle_se.corpus.build import TEST_SNRS
from upcycle_se.corpus.realvoice import (
    ALSA_SOUNDS,
    HARD_NOISES,
    REAL_BABBLE_TALKERS,
    VOICE_CLIPS,
    babble_pool,
    band_bursts,
    build_realvoice,
    build_realvoice_hard,
    read_realvoice_log,
    real_babble,
    realvoice_name,
)
from upcycle_se.errors import UserError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import quality  # noqa: E402

needs_alsa = pytest.mark.skipif(not all((ALSA_SOUNDS / f"{c}.wav").is_file() for c in VOICE_CLIPS)
                                or not N.ALSA_NOISE.is_file(), reason="alsa-utils sounds not installed")
#: Two families (one stationary, one not) at one SNR: 16 files, built in a second or two.
SMALL = dict(noises=("pink", "clicks"), snrs=(2.5,))


@pytest.fixture(scope="module")
def realvoice_small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realvoice")
    if not all((ALSA_SOUNDS / f"{c}.wav").is_file() for c in VOICE_CLIPS):
        pytest.skip("alsa-utils sounds not installed")
    build_realvoice(root, **SMALL)
    return root


@needs_alsa
def test_realvoice_files_snrs_and_classes(realvoice_small):
    log = read_realvoice_log(realvoice_small)
    assert len(log) == len(VOICE_CLIPS) * 2
    assert {v["noise"] for v in log.values()} == {"pink", "clicks"}
    assert {v["class"] for v in log.values()} == {"stationary", "non-stationary"}
    assert sum(v["class"] == "stationary" for v in log.values()) == len(VOICE_CLIPS)  # half and half
    assert realvoice_name("Front_Center", "pink", 2.5) in log
    for name, v in log.items():
        clean, sr = sf.read(str(realvoice_small / "clean_testset_wav" / f"{name}.wav"))
        noisy, _ = sf.read(str(realvoice_small / "noisy_testset_wav" / f"{name}.wav"))
        assert sr == 16000 and len(clean) == len(noisy) and 1.5 < len(clean) / sr < 2.5
        assert abs(N.measure_snr(clean, noisy, sr) - v["snr"]) < 0.5, name
        assert np.abs(noisy).max() < 1.0


@needs_alsa
def test_realvoice_is_deterministic_and_reused(realvoice_small, tmp_path):
    again = build_realvoice(tmp_path, **SMALL)
    assert again["reused"] is False and again["utterances"] == 16
    for sub in ("clean_testset_wav", "noisy_testset_wav"):
        for f in sorted((realvoice_small / sub).glob("*.wav")):
            assert f.read_bytes() == (tmp_path / sub / f.name).read_bytes(), f.name
    assert build_realvoice(tmp_path, **SMALL)["reused"] is True
    with pytest.raises(UserError, match="overwrite"):
        build_realvoice(tmp_path, noises=("pink",), snrs=(2.5,))
    other = build_realvoice(tmp_path / "seed1", seed=1, **SMALL)
    name = realvoice_name("Front_Left", "pink", 2.5)
    assert (tmp_path / "seed1" / "noisy_testset_wav" / f"{name}.wav").read_bytes() != \
        (tmp_path / "noisy_testset_wav" / f"{name}.wav").read_bytes()
    assert other["utterances"] == 16


def test_realvoice_missing_clips_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(UserError, match="alsa-utils") as err:
        build_realvoice(tmp_path / "out", clip_dir=tmp_path / "nowhere")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


@needs_alsa
def test_realvoice_refuses_noises_without_a_class(tmp_path):
    with pytest.raises(UserError, match="no stationary/non-stationary class"):
        build_realvoice(tmp_path / "out", noises=("broad",))
    assert not (tmp_path / "out").exists()


@needs_alsa
def test_cli_builds_the_realvoice_preset(tmp_path, capsys):
    rc = cli_main(["build-corpus", str(tmp_path), "--preset", "realvoice", "--test-noises", "pink",
                   "--test-snrs", "7.5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1 and "8 files" in out[0] and "not VoiceBank-DEMAND" in out[0]
    assert json.loads((tmp_path / "realvoice_info.json").read_text())["config"]["snrs"] == [7.5]


def test_by_family_groups_files_and_classes():
    rows = {"a": {"pesq": 1.0}, "b": {"pesq": 2.0}, "c": {"pesq": 4.0}}
    fams = {"a": "pink", "b": "pink", "c": "clicks"}
    g = quality.by_family(rows, fams, "pesq", {"pink": "stationary", "clicks": "non-stationary"})
    assert g["pink"]["mean"] == pytest.approx(1.5) and g["pink"]["n"] == 2
    assert g["clicks"]["n"] == 1 and g["stationary"]["mean"] == pytest.approx(1.5)
    assert g["non-stationary"]["mean"] == pytest.approx(4.0)


@needs_alsa
def test_quality_rows_on_the_real_voice_set(realvoice_small, tmp_path, exported_small_model):
    """Noisy, one baseline and one exported model scored on the real-voice set; the rendered section has the
    real-voice table, per-family tables with stationary / non-stationary columns and the verdict lines."""
    pytest.importorskip("pesq")
    work = tmp_path / "work"
    shutil.copytree(realvoice_small, work / "realvoice")
    shutil.copytree(exported_small_model, work / "models" / "paired")
    ref = quality.score_reference_systems(work, ["mmse_lsa"], 1, print, "realvoice")
    trained = quality.score_trained_realvoice(work, "paired", 1, print)
    stems = set(read_realvoice_log(work / "realvoice"))
    assert set(ref["noisy"]["rows"]) == set(ref["mmse_lsa"]["rows"]) == set(trained) == stems
    for rows in (ref["noisy"]["rows"], ref["mmse_lsa"]["rows"], trained):
        assert all(math.isfinite(r["pesq"]) and 1.0 <= r["pesq"] <= 4.7 for r in rows.values())
    assert quality.score_trained_realvoice(work, "paired", 1, print) == trained  # cached
    info = build_realvoice(work / "realvoice", **SMALL)
    rv_rows = {"noisy": {"label": "Noisy input", "rows": ref["noisy"]["rows"]},
               "mmse_lsa": {"label": "MMSE-LSA", "rows": ref["mmse_lsa"]["rows"]},
               "paired": {"label": "Paired", "rows": trained}}
    for r in rv_rows.values():
        r["summary"] = quality.summarize(r["rows"])
    text = "\n".join(quality.render_realvoice({"info": info, "rows": rv_rows},
                                              quality.noise_families(work, "realvoice")))
    assert "### Real recorded voice" in text and "| Paired |" in text
    assert "clicks (8) | pink (8) | stationary (8) | non-stationary (8) |" in text
    verdict = quality.realvoice_verdict(rv_rows)
    assert len(verdict) == 1 and "PESQ vs MMSE-LSA" in verdict[0] and "STOI vs noisy" in verdict[0]


# ------------------------------------------------------------------------------------------ the hard set
@pytest.fixture(scope="module")
def realvoice_hard(tmp_path_factory) -> Path:
    """The whole hard set as shipped (96 files, a few seconds)."""
    if not all((ALSA_SOUNDS / f"{c}.wav").is_file() for c in VOICE_CLIPS) or not N.ALSA_NOISE.is_file():
        pytest.skip("alsa-utils sounds not installed")
    root = tmp_path_factory.mktemp("realvoice_hard")
    build_realvoice_hard(root)
    return root


@needs_alsa
def test_hard_set_files_families_and_snrs(realvoice_hard, tmp_path):
    log = read_realvoice_log(realvoice_hard)
    assert len(log) == len(VOICE_CLIPS) * len(HARD_NOISES) * len(TEST_SNRS) == 96
    for sub in ("clean_testset_wav", "noisy_testset_wav"):
        assert len(list((realvoice_hard / sub).glob("*.wav"))) == 96
    assert {v["noise"] for v in log.values()} == {"real_babble", "band_bursts", "alsa"}
    assert {v["snr"] for v in log.values()} == set(TEST_SNRS)
    for name, v in log.items():
        clean, sr = sf.read(str(realvoice_hard / "clean_testset_wav" / f"{name}.wav"))
        noisy, _ = sf.read(str(realvoice_hard / "noisy_testset_wav" / f"{name}.wav"))
        assert sr == 16000 and len(clean) == len(noisy)
        # the module's SNR definition on the written 16-bit files (its 40 dB activity threshold moves by at
        # most one frame with the rounding: 0.088 dB on front_left)
        assert abs(N.measure_snr(clean, noisy, sr) - v["snr"]) < 0.1, name
        assert np.abs(noisy).max() < 1.0
    # the targets are the first set's clean clips (same padding, level and floor)
    first = build_realvoice(tmp_path / "first", noises=("pink",), snrs=(17.5,))
    name = realvoice_name("Side_Right", "pink", 17.5)
    a, _ = sf.read(str(Path(first["clean_dir"]) / f"{name}.wav"))
    b, _ = sf.read(str(realvoice_hard / "clean_testset_wav" / f"{realvoice_name('Side_Right', 'alsa', 17.5)}.wav"))
    np.testing.assert_array_equal(a, b)


@needs_alsa
def test_hard_babble_never_uses_the_target_clip(realvoice_hard):
    info = json.loads((realvoice_hard / "realvoice_info.json").read_text())
    sources = info["babble_sources"]
    assert len(sources) == len(VOICE_CLIPS) * len(TEST_SNRS)
    for clip in VOICE_CLIPS:
        for snr in TEST_SNRS:
            used = sources[realvoice_name(clip, "real_babble", snr)]
            clips = {u.split("@")[0] for u in used}
            warps = {u.split("@")[1] for u in used}
            assert clip not in clips and clips <= set(VOICE_CLIPS), (clip, used)
            assert REAL_BABBLE_TALKERS[0] <= len(warps) <= REAL_BABBLE_TALKERS[1]  # one warp per talker
            assert len(clips) >= 2


def test_real_babble_holds_no_trace_of_the_excluded_clip():
    """Each 'clip' a tone in its own band (wider than the warps can move it): the babble of target c2 has
    energy in every other clip's band and none in c2's."""
    sr, n = 16000, 3 * 16000
    freqs = {"c0": 200.0, "c1": 400.0, "c2": 800.0, "c3": 1600.0, "c4": 3200.0}
    t = np.arange(int(0.8 * sr)) / sr
    clips = {k: np.sin(2 * np.pi * f * t) for k, f in freqs.items()}
    pool = babble_pool(clips, "c2", sr)
    assert sorted(pool) == ["c0", "c1", "c3", "c4"]
    noise, used = real_babble(n, sr, np.random.default_rng(0), pool)
    assert noise.shape == (n,) and abs(np.mean(noise ** 2) - 1.0) < 1e-6
    assert used and not any(u.startswith("c2@") for u in used)
    spec = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(n, 1.0 / sr)

    def band(fc: float) -> float:
        return float(spec[(f > fc * 0.78) & (f < fc * 1.27)].sum() / spec.sum())

    assert band(800.0) < 1e-3
    assert sum(band(freqs[k]) > 0.02 for k in ("c0", "c1", "c3", "c4") if any(u.startswith(k + "@") for u in used)) \
        == len({u.split("@")[0] for u in used})
    with pytest.raises(UserError, match="unknown target clip"):
        babble_pool(clips, "c9", sr)


def test_band_bursts_are_bursty_and_deterministic():
    sr, n = 16000, 2 * 16000
    a = band_bursts(n, sr, np.random.default_rng(3))
    np.testing.assert_array_equal(a, band_bursts(n, sr, np.random.default_rng(3)))
    assert abs(np.mean(a ** 2) - 1.0) < 1e-9
    frames = (a[: n // 320 * 320].reshape(-1, 320) ** 2).mean(axis=1)
    assert 10 * np.log10(frames.max() / np.median(frames)) > 10  # bursts over a far quieter floor
    assert 10 * np.log10(frames.max() / frames.min()) > 25


@needs_alsa
def test_hard_set_is_deterministic_and_seeded(tmp_path):
    small = dict(noises=("real_babble", "band_bursts"), snrs=(7.5,))
    first = build_realvoice_hard(tmp_path / "a", **small)
    again = build_realvoice_hard(tmp_path / "b", **small)
    assert first["utterances"] == again["utterances"] == 16
    for sub in ("clean_testset_wav", "noisy_testset_wav"):
        for f in sorted((tmp_path / "a" / sub).glob("*.wav")):
            assert f.read_bytes() == (tmp_path / "b" / sub / f.name).read_bytes(), f.name
    info = "realvoice_info.json"
    assert (tmp_path / "a" / info).read_bytes() == (tmp_path / "b" / info).read_bytes()
    assert build_realvoice_hard(tmp_path / "a", **small)["reused"] is True
    build_realvoice_hard(tmp_path / "s1", seed=1, **small)
    for nz in small["noises"]:
        name = realvoice_name("Rear_Left", nz, 7.5)
        assert (tmp_path / "s1" / "noisy_testset_wav" / f"{name}.wav").read_bytes() != \
            (tmp_path / "a" / "noisy_testset_wav" / f"{name}.wav").read_bytes()
    with pytest.raises(UserError, match="overwrite"):  # a first-set build is not mistaken for a hard one
        build_realvoice(tmp_path / "a", noises=("alsa",), snrs=(7.5,))


@needs_alsa
def test_hard_set_refuses_other_families_in_one_line(tmp_path):
    with pytest.raises(UserError, match="not a family of the hard real-voice set") as err:
        build_realvoice_hard(tmp_path / "out", noises=("pink",))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


@needs_alsa
def test_cli_builds_the_hard_preset(tmp_path, capsys):
    rc = cli_main(["build-corpus", str(tmp_path), "--preset", "realvoice_hard", "--test-noises", "real_babble",
                   "--test-snrs", "2.5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1 and "hard real-voice test set, 8 files" in out[0]
    info = json.loads((tmp_path / "realvoice_info.json").read_text())
    assert info["config"]["preset"] == "realvoice_hard" and info["config"]["noises"] == ["real_babble"]
