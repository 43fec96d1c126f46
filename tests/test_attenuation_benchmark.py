"""benchmarks/attenuation_limit.py: the summary (CIs, paired differences against no limit), table, plot and
a run on the tiny corpus's validation files."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import attenuation_limit as al  # noqa: E402


def _rows():
    rng = np.random.default_rng(0)
    base = {f"p1_{i:03d}": {"pesq": 2.0 + rng.normal(0, 0.3), "stoi": 0.9 + rng.normal(0, 0.02)} for i in range(10)}
    limited = {u: {"pesq": r["pesq"] - 0.1, "stoi": r["stoi"] + 0.01} for u, r in base.items()}
    return {"none": base, "12": limited}


def test_summary_gives_paired_differences_per_family_and_renders(tmp_path):
    fams = {u: ("babble" if i % 2 else "white") for i, u in enumerate(sorted(_rows()["none"]))}
    summary = al.summarize(_rows(), fams)
    assert set(summary) == {"all", "babble", "white"}
    cell = summary["all"]["12"]
    assert cell["n"] == 10 and cell["pesq_vs_none"]["mean"] == pytest.approx(-0.1)
    assert cell["pesq_vs_none"]["ci"] == pytest.approx(0.0, abs=1e-9)  # a constant difference
    assert cell["stoi_vs_none"]["mean"] == pytest.approx(0.01)
    assert summary["babble"]["none"]["n"] == 5
    meta = {"model": "m", "corpus": "/x/corpus", "n_files": 10, "speakers": ["p1"],
            "machine": {"cpu": "cpu", "cores": "2"}, "date": "today"}
    text = al.render_table(summary, meta)
    assert "[all] (10 files)" in text and "-0.100" in text
    al.plot(summary, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert al.parse_limit("none") is None and al.parse_limit("12") == 12.0


@pytest.mark.slow
def test_run_on_tiny_validation_files(tiny_corpus, tmp_path):
    args = ["--corpus", str(tiny_corpus), "--prep", str(tmp_path / "prep"), "--model", "small", "--limits",
            "none", "6", "--max-files", "2", "--json", str(tmp_path / "a.json"), "--table", str(tmp_path / "a.txt"),
            "--plot", str(tmp_path / "a.png")]
    assert al.main(args) == 0
    saved = json.loads((tmp_path / "a.json").read_text())
    valid = json.loads((tmp_path / "prep" / "valid.json").read_text())
    assert set(saved["rows"]["none"]) == set(sorted(valid)[:2])  # validation files only
    assert saved["summary"]["all"]["6"]["pesq_vs_none"]["n"] == 2
    assert (tmp_path / "a.png").is_file() and "[all] (2 files)" in (tmp_path / "a.txt").read_text()
    assert al.main(args[:-6] + ["--json", str(tmp_path / "a.json"), "--table", str(tmp_path / "b.txt"),
                                "--plot", str(tmp_path / "b.png"), "--render-only"]) == 0
    assert (tmp_path / "b.txt").read_text() == (tmp_path / "a.txt").read_text()
