"""`upcycle-se enhance` over 100 short files, one 2-minute file and broken files in one call: bounded
memory, every output complete, every input accounted for (done / skipped / failed with reasons).

The same code as benchmarks/reliability_load.py (500 files + a 10-minute file, run by hand), smaller.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.reliability_load import (  # noqa: E402
    BROKEN,
    check_outputs,
    make_inputs,
    make_model,
    parse_summary,
    run_enhance,
)

N_SHORT = 100
LONG_S = 120.0
#: Peak RSS over the folder above the warm-up's (20 s of each input kind, so a full batch of chunks at
#: each rate). Measured: 0 MiB. Enhancing the 2-minute file whole (no chunking) would take GiBs.
MAX_PEAK_GROWTH_MIB = 16.0
#: Memory in use (RSS once glibc returned its free pages) gained by a second pass over the same folder
#: into new outputs. Measured: under 1 MiB; keeping each output (or the long file's input and output,
#: 15 MiB) would show. Plain RSS grows by a few MiB per 100 files there: freed heap glibc keeps.
MAX_SECOND_PASS_MIB = 8.0


@pytest.mark.slow
def test_many_files_and_a_long_one_in_one_call(tmp_path):
    model = make_model(tmp_path)
    inputs = tmp_path / "noisy"
    counts = make_inputs(inputs, N_SHORT, (0.4, 0.6), LONG_S)
    assert counts["audio"] == N_SHORT + 1 + len(BROKEN)
    out = tmp_path / "enhanced"

    figures = run_enhance(inputs, out, model, passes=2, timeout=540)
    warm, first, second = figures["warm"], *figures["passes"]
    print(f"VmHWM {warm['VmHWM']:.0f} -> {first['VmHWM']:.0f} MiB; in use {warm['VmRSS_live']:.0f} -> "
          f"{first['VmRSS_live']:.0f} -> {second['VmRSS_live']:.0f} MiB; {first['wall_s']:.1f} s")
    assert first["rc"] == 1  # some files failed
    summary = parse_summary(first["summary"])
    assert summary == {"done": N_SHORT + 1, "skipped": 0, "failed": 3,
                       "reasons": {"cannot be read as audio": 1, "empty audio": 1,
                                   "contains NaN or infinite samples": 1}}
    assert len(first["failures"]) == 3  # one line per broken file, naming it and the problem
    for rel, problem in BROKEN.items():
        assert sum(f"{inputs / rel}: {problem}" in line for line in first["failures"]) == 1
    assert first["VmHWM"] - warm["VmHWM"] < MAX_PEAK_GROWTH_MIB
    assert second["VmRSS_live"] - first["VmRSS_live"] < MAX_SECOND_PASS_MIB
    assert parse_summary(second["summary"]) == summary

    checked, problems = check_outputs(inputs, out)
    assert checked == N_SHORT + 1 and problems == []
    assert sf.info(str(out / "long.wav")).frames == int(LONG_S * 16000)
    assert not (out / "notes.txt").exists() and not list(out.rglob(".*.part"))

    again = run_enhance(inputs, out, model, warmup=False, timeout=300)["passes"][0]
    # complete outputs are skipped and counted as such; the broken files are tried (and reported) again
    assert parse_summary(again["summary"]) == {**summary, "done": 0, "skipped": N_SHORT + 1}
    assert "skipped (output exists; --overwrite redoes them)" in again["summary"]
