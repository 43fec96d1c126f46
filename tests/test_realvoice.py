"""The real-voice set (ALSA's recorded clips x test noises x test SNRs) and its rows in the quality benchmark."""
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
from upcycle_se.corpus.realvoice import (
    ALSA_SOUNDS,
    VOICE_CLIPS,
    build_realvoice,
    read_realvoice_log,
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
