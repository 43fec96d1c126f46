"""benchmarks/stoi_loss.py: the breakdown by family, SNR and clip (means, CIs, paired differences against the
noisy input and each reference) on hand-made per-file scores, its significant-loss list and its tables."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import stoi_loss as sl  # noqa: E402

FAMILIES = ("babble", "pink")
SNRS = ("2.5", "12.5")
CLIPS = ("front_left", "rear_right", "side_left")


def _labels() -> dict:
    out = {}
    for clip in CLIPS:
        for fam in FAMILIES:
            for snr in SNRS:
                stem = f"{clip}_{fam}_{int(float(snr) * 10):03d}"
                out[stem] = {"family": fam, "snr": snr, "clip": clip, "family_snr": f"{fam} @ {snr}"}
    return out


def _rows(labels: dict) -> dict:
    """Noisy STOI 0.80 + 0.01 * clip index (+0.1 at 12.5 dB); the model loses 0.03 + 0.01 * clip index on
    babble and gains 0.02 on pink; MMSE-LSA is noisy - 0.01 everywhere; PESQ: noisy 1.2, others 1.5."""
    noisy, model, ref = {}, {}, {}
    for stem, lab in labels.items():
        k = CLIPS.index(lab["clip"])
        base = 0.80 + 0.01 * k + (0.1 if lab["snr"] == "12.5" else 0.0)
        noisy[stem] = {"pesq": 1.2, "stoi": base}
        delta = -(0.03 + 0.01 * k) if lab["family"] == "babble" else 0.02
        model[stem] = {"pesq": 1.5, "stoi": base + delta}
        ref[stem] = {"pesq": 1.5, "stoi": base - 0.01}
    return {"noisy": noisy, "default": model, "mmse_lsa": ref}


def test_breakdown_means_cis_and_paired_differences():
    labels = _labels()
    bd = sl.breakdown(_rows(labels), labels, families=("pink", "babble"))
    assert list(bd) == ["all", "family", "snr", "clip", "family_snr"]
    assert list(bd["family"]) == ["pink", "babble"] and list(bd["snr"]) == ["2.5", "12.5"]
    assert list(bd["family_snr"])[0] == "pink @ 2.5" and len(bd["clip"]) == 3
    babble = bd["family"]["babble"]
    assert babble["n"] == 6
    d = babble["systems"]["default"]["stoi_vs_noisy"]
    assert d["mean"] == pytest.approx(-0.04) and d["n"] == 6
    # differences -0.03, -0.04, -0.05 twice each: sd 0.008944, t(0.975, 5) = 2.5706
    assert d["ci"] == pytest.approx(2.5706 * 0.0089443 / 6 ** 0.5, rel=1e-3)
    assert bd["family"]["pink"]["systems"]["default"]["stoi_vs_noisy"]["mean"] == pytest.approx(0.02)
    assert bd["family"]["pink"]["systems"]["default"]["stoi_vs_noisy"]["ci"] == pytest.approx(0.0, abs=1e-12)
    noisy = bd["all"]["all"]["systems"]["noisy"]["stoi"]
    assert noisy["n"] == 12 and noisy["mean"] == pytest.approx(0.86)
    assert "stoi_vs_noisy" not in bd["all"]["all"]["systems"]["noisy"]
    pair = bd["family"]["babble"]["pairs"]["default vs mmse_lsa"]
    assert pair["stoi"]["mean"] == pytest.approx(-0.03) and pair["pesq"]["mean"] == pytest.approx(0.0)
    assert list(bd["all"]["all"]["pairs"]) == ["default vs mmse_lsa"]  # references are not compared with each other
    clip = bd["clip"]["side_left"]["systems"]["default"]["stoi_vs_noisy"]
    assert clip["mean"] == pytest.approx((-0.05 * 2 + 0.02 * 2) / 4) and clip["n"] == 4
    assert bd["snr"]["12.5"]["systems"]["noisy"]["stoi"]["mean"] == pytest.approx(0.91)


def test_significant_losses_and_tables():
    labels = _labels()
    rows = _rows(labels)
    bd = sl.breakdown(rows, labels, families=FAMILIES)
    lost = sl.significant_losses(bd, "default")
    assert {(d["grouping"], d["group"]) for d in lost} >= {("family", "babble")}
    assert not any(d["group"] == "pink" for d in lost)
    assert {d["group"] for d in sl.significant_losses(bd, "mmse_lsa")} >= {"all", "babble", "pink"}
    meta = {"root": "/x/realvoice_hard", "files": 12, "clips": 3, "families": list(FAMILIES), "snrs": list(SNRS)}
    text = "\n".join(sl.render_set("realvoice_hard", meta, bd, list(rows)))
    assert "## Set `realvoice_hard` (12 files" in text
    assert "| default (20 dB limit) | 1.50 ± 0.00 | " in text
    assert "babble -0.040 ± 0.009" in text  # the loss list
    assert "| babble (6) | -0.030 ± 0.009 |" in text  # default - mmse_lsa by family
    assert "| side_left (4) |" in text and "| babble @ 12.5 (3) |" in text


def test_breakdown_refuses_rows_without_the_base_or_labels():
    labels = _labels()
    rows = _rows(labels)
    with pytest.raises(ValueError, match="base system 'noisy'"):
        sl.breakdown({"default": rows["default"]}, labels)
    with pytest.raises(ValueError, match="has no labels"):
        sl.breakdown({**rows, "noisy": {**rows["noisy"], "stray_file": {"pesq": 1.0, "stoi": 0.5}}}, labels)


def _tiny_set(root: Path) -> Path:
    """A real-voice-layout set of two files (speech-like tone bursts in noise) for the scoring path."""
    import json

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    (root / "clean_testset_wav").mkdir(parents=True)
    (root / "noisy_testset_wav").mkdir()
    (root / "logfiles").mkdir()
    lines = []
    for i, stem in enumerate(("front_left_pink_025", "rear_right_pink_125")):
        t = np.arange(32000) / 16000
        clean = 0.1 * np.sin(2 * np.pi * (150 + 50 * i) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
        sf.write(root / "clean_testset_wav" / f"{stem}.wav", clean, 16000)
        sf.write(root / "noisy_testset_wav" / f"{stem}.wav", clean + 0.03 * rng.standard_normal(t.size), 16000)
        lines.append(f"{stem} pink {'2.5' if i == 0 else '12.5'}")
    (root / "logfiles" / "log_testset.txt").write_text("\n".join(lines) + "\n")
    (root / "realvoice_info.json").write_text(json.dumps({"config": {"noises": ["pink"], "seed": 0}}))
    return root


def test_model_folders_are_scored_and_their_cache_follows_the_model(tmp_path):
    """``--model NAME=FOLDER``: an exported folder is scored as a system; its score cache is keyed by the
    folder's generator, so a different model under the same name is scored again, not read from the cache."""
    from upcycle_se.inference import packaged_model_dir

    root = _tiny_set(tmp_path / "tiny_set")
    small = packaged_model_dir("small")
    result = sl.run_set(root, tmp_path, ["noisy"], folders={"cand": small})
    assert result["systems"] == ["noisy", "cand"]
    rows = result["rows"]["cand"]
    assert sorted(rows) == ["front_left_pink_025", "rear_right_pink_125"]
    assert all(1.0 <= r["pesq"] <= 4.7 and 0.0 < r["stoi"] <= 1.0 for r in rows.values())
    assert rows != result["rows"]["noisy"]
    cache = tmp_path / sl.CACHE_DIR / "tiny_set" / "cand.json"
    import json
    saved = json.loads(cache.read_text())
    assert saved["model_key"] == sl._model_key(small)
    # same name, other model: the cache is not reused
    saved["rows"] = {k: {"pesq": 9.0, "stoi": 9.0} for k in saved["rows"]}
    cache.write_text(json.dumps(saved))
    assert sl.score_system("cand", root, tmp_path, folder=small)["front_left_pink_025"]["pesq"] == 9.0
    other = sl.score_system("cand", root, tmp_path, folder=packaged_model_dir("default"))
    assert other["front_left_pink_025"]["pesq"] < 9.0


@pytest.mark.parametrize("spec, why", [("cand", "expected NAME=FOLDER"), ("default=/x", "expected NAME=FOLDER"),
                                        ("cand=/nonexistent", "is not a model folder")])
def test_bad_model_option_is_one_line(spec, why, tmp_path):
    with pytest.raises(SystemExit, match=why):
        sl.main(["--work", str(tmp_path), "--model", spec])
