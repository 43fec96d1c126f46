"""Smoke test of ``python -m benchmarks.speed``: a tiny grid end to end (subprocess workers, report, file
update), and the tables rendered from made-up results. Nothing here depends on how fast the machine is."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.speed import common, inference, precision  # noqa: E402
from benchmarks.speed.__main__ import main  # noqa: E402


def test_dccrn_reference_has_dccrn_e_size_and_keeps_the_length():
    import torch

    model = common.build_model("dccrn")
    n_params = sum(p.numel() for p in model.parameters())
    assert 3.6e6 < n_params < 3.8e6  # DCCRN-E: 3.7 M
    with torch.inference_mode():
        assert model(torch.randn(2, 3210)).shape == (2, 3210)


def test_tiny_run_writes_finite_figures_into_its_section_only(tmp_path):
    results = tmp_path / "RESULTS.md"
    other = "<!-- quality:begin -->\nquality text stays\n<!-- quality:end -->\n"
    results.write_text("# Benchmark results\n\n" + other)
    res = main([
        "--results", str(results), "--silent", "--models", "small", "--threads", "1", "--durations", "0.2",
        "--batches", "1", "--repeats", "1", "--gemm-n", "128", "--alloc-pairs", "0", "--no-compile",
        "--train-models", "small", "--train-batch", "1", "--train-seconds", "0.2", "--train-steps", "small=1",
        "--no-data", "--no-precision",
    ])
    (row,) = res["infer"]
    assert "error" not in row, row
    for key in ("wall_s", "cpu_s", "macs", "peak_rss_mb"):
        assert math.isfinite(row[key]) and row[key] > 0
    peak = res["peak"][1]
    assert math.isfinite(peak["mkl"]) and peak["mkl"] > 0
    (train,) = res["train"]
    assert "error" not in train, train
    assert math.isfinite(train["wall_s"]) and train["loss_finite"]
    assert train["profile"] and math.isclose(sum(train["profile"].values()), 1.0, rel_tol=1e-6)

    text = results.read_text()
    assert other in text  # the quality section is untouched
    section = text.split("<!-- speed:begin -->", 1)[1].split("<!-- speed:end -->", 1)[0]
    assert "## Speed" in section and "torch " in section and "--models small" in section
    rtf = re.search(r"\| \*\*([0-9.]+)\*\* \|", section)
    assert rtf and math.isfinite(float(rtf.group(1)))
    assert "nan" not in section.lower().replace("n/a", "")

    # A second run replaces the section instead of appending another one.
    common.write_results(results, "<!-- speed:begin -->\nnew\n<!-- speed:end -->\n")
    text = results.read_text()
    assert text.count("<!-- speed:begin -->") == 1 and "new" in text and other in text


def test_results_file_is_created_with_both_sections(tmp_path):
    path = tmp_path / "RESULTS.md"
    common.write_results(path, "<!-- speed:begin -->\nx\n<!-- speed:end -->\n")
    text = path.read_text()
    for marker in ("quality:begin", "quality:end", "speed:begin", "speed:end"):
        assert f"<!-- {marker} -->" in text


def test_allocator_and_compile_tables_render_speed_ups():
    res = {"args": {"threads": [2], "batch1_seconds": 4.0, "batch1_repeats": 3, "alloc_pairs": 2},
           "alloc": [{"model": "paper", "threads": 2, "allocator": False, "wall_s": w, "cpu_s": 2 * w,
                      "peak_rss_mb": 800} for w in (1.0, 1.2)]
                    + [{"model": "paper", "threads": 2, "allocator": True, "wall_s": w, "cpu_s": w,
                        "peak_rss_mb": 900} for w in (0.5, 0.6)],
           "compile": [{"model": "paper", "threads": 2, "compile_s": 30.0, "eager_wall_s": 1.0, "wall_s": 0.9,
                        "cpu_s": 1.8, "eager_cpu_s": 2.0}]}
    # medians: default 1.1 s wall / 2.2 s cpu, opt-in 0.55 s wall / cpu -> 2x wall, 4x cpu
    assert "| Up-Cycle `paper` (the authors') | 2 | 1.1 | 0.55 | **2.00x** | 4.00x | 800 MB | 900 MB |" in "\n".join(
        inference.alloc_lines(res))
    assert "| 0.90 | 0.90 |" in "\n".join(inference.compile_lines(res))


def test_every_measured_model_has_a_label_and_builds_the_default_lists():
    assert set(common.MODELS) >= {"paper", "small", "dccrn"}
    assert all(m.label for m in common.MODELS.values())
    assert {"paper", "small", "dccrn"} <= {n for n, m in common.MODELS.items() if m.grid}


def _precision_result(bf16_hardware: bool, auto: str) -> dict:
    """A precision part as the workers return it (made-up but consistent numbers)."""
    return {"machine": {"cpu": "Test CPU", "bf16_hardware": bf16_hardware}, "started": "2026-01-01 00:00",
            "precision": {
                "started": "2026-01-01 00:00", "load_start": 0.5,
                "kernels": {2: {"matmul_fp32": 100.0, "matmul_fp32_n": 2048, "matmul_bf16": 600.0,
                                "matmul_bf16_n": 2048, "conv_fp32": 200.0, "conv_bf16": 800.0, "conv_bf16_batch": 4}},
                "models": [{"model": "paper", "threads": 2, "seconds": 1.0, "fp32_s": 0.4, "bf16_s": 0.1,
                            "macs": 20e9, "snr_db": 58.0, "load1": 0.4}],
                "enhance": {"seconds": 10.0, "threads": 2, "load1": 0.3,
                            "resolved": {"auto": auto, "fp32": "fp32", "bf16": "bf16"},
                            "median_s": {"auto": 1.0 if auto == "fp32" else 0.4, "fp32": 1.0, "bf16": 0.4}},
                "pesq": {"files": 24, "of": 120, "mean": {"noisy": 1.1, "fp32": 1.3, "bf16": 1.299},
                         "mean_diff": -0.001, "max_abs_diff": 0.004}}}


def test_precision_table_uses_each_precisions_own_peak_and_flags_emulation():
    text = "\n".join(precision.precision_lines(_precision_result(True, "bf16")))
    assert "bf16 hardware (AMX-BF16 or AVX512-BF16, `upcycle_se.models.runtime.cpu_has_bf16()`): **yes**" in text
    assert "| 2 | 100 (n=2048) | 600 (n=2048) | 200 | 800 (batch 4) | 4.00x |" in text  # peak: best kernel
    # paper: 40 GFLOP per pass -> fp32 100 GFLOP/s = 50 % of 200, bf16 400 GFLOP/s = 50 % of 800
    assert "| 0.4 | 0.1 | **4.00x** | 50 % | 50 % | 58.0 dB |" in text
    assert "| auto | bf16 | 0.4 | 2.50x |" in text and "auto resolved to bf16: 2.50x faster" in text
    assert "(emulated)" not in text and ", emulated)" not in text and "within the 0.02 bound" in text

    text = "\n".join(precision.precision_lines(_precision_result(False, "fp32")))
    assert "**no**" in text and "(batch 4, emulated)" in text and "| bf16 | bf16 (emulated) |" in text
    assert "auto resolved to fp32, the same code path as `--precision fp32`" in text


def test_training_precision_rows_give_the_bf16_speed_up():
    res = _precision_result(True, "bf16")
    prof = {"convolution backward": 0.5, "convolution forward": 0.2, "copies / cat / pad": 0.1, "other": 0.05}
    res["precision"]["train"] = [{"preset": "paper", "threads": 2, "batch": 4, "seconds": 2.0, "load1": 0.2,
                                  "variants": {n: {"wall_s": w, "profile": prof}
                                               for n, w in (("fp32", 30.0), ("bf16", 12.0))}}]
    text = "\n".join(precision.precision_lines(res))
    assert "| paper | 2 | 4 x 2 s | 30 | 12 | **2.50x** | 0.2 |" in text  # fp32 / bf16 = 2.5x
    assert "| paper | bf16 | convolution backward 50 %, convolution forward 20 %" in text


def test_training_precision_worker_times_both_precisions_on_real_steps():
    """The worker really trains: two Brains (fp32, bf16 autocast) of the small recipe, finite losses, one
    timed step each (short crops: the figures do not matter here, only that they exist)."""
    out = precision.worker_train_precision({"preset": "small", "batch": 1, "samples": 2000, "steps": 1,
                                            "profile": False})
    assert set(out["variants"]) == {"fp32", "bf16"}
    for v in out["variants"].values():
        assert len(v["walls"]) == 1 and v["wall_s"] > 0
        assert v["params"] > 100_000


def test_precision_only_rewrites_its_subsection_inside_the_speed_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# R\n\n<!-- quality:begin -->\nq\n<!-- quality:end -->\n\n"
                    "<!-- speed:begin -->\n## Speed\nold grid\n<!-- speed:end -->\n")
    for run in ("first", "second"):
        common.write_precision_results(path, f"{common.PRECISION_BEGIN}\n{run}\n{common.PRECISION_END}\n")
    text = path.read_text()
    speed_section = text.split("<!-- speed:begin -->", 1)[1].split("<!-- speed:end -->", 1)[0]
    assert "old grid" in speed_section and "second" in speed_section and "first" not in text
    assert text.count(common.PRECISION_BEGIN) == 1 and "\nq\n" in text


def test_compile_subsection_gives_each_variants_ratio_to_fp32_and_sits_beside_the_precision_one(tmp_path):
    res = {"machine": {"cpu": "Test CPU", "bf16_hardware": True}, "total_s": 300.0,
           "compile_precision": {"started": "2026-01-01 00:00", "load_start": 0.5, "threads": 2,
                                 "models": [{"model": "paper", "threads": 2, "seconds": 4.0, "compile_s": 50.0,
                                             "snr_db": 61.3, "load1": 1.0,
                                             "median_s": {"fp32": 0.8, "bf16": 0.32, "bf16_compiled": 0.2}}],
                                 "enhance": {"seconds": 10.0, "threads": 2, "load1": 1.1,
                                             "resolved": {"fp32": "fp32", "auto": "bf16", "auto_compiled": "bf16"},
                                             "first_s": {"fp32": 0.9, "auto": 0.5, "auto_compiled": 60.0},
                                             "median_s": {"fp32": 0.9, "auto": 0.45, "auto_compiled": 0.3}}}}
    lines = precision.compile_precision_lines(res, "python -m benchmarks.speed --compile-precision-only")
    text = "\n".join(lines)
    # 0.8 / 0.32 = 2.5x, 0.8 / 0.2 = 4x; through the interface 0.9 / 0.45 = 2x, 0.9 / 0.3 = 3x
    assert "| Up-Cycle `paper` (the authors') | 4 s | 0.8 | 0.32 | 0.2 | 2.50x | **4.00x** | 50 | 61.3 dB | 1.0 |" in text
    assert "(`--compile`) | bf16 | 60 | 0.3 | 3.00x |" in text
    assert '`{"precision": "auto"}` | bf16 | 0.5 | 0.45 | 2.00x |' in text
    path = tmp_path / "RESULTS.md"
    path.write_text(f"<!-- speed:begin -->\n## Speed\ngrid\n{common.PRECISION_BEGIN}\np\n{common.PRECISION_END}\n"
                    "<!-- speed:end -->\n")
    for _ in range(2):
        common.write_compile_results(path, "\n".join(lines) + "\n")
    text = path.read_text()
    speed_section = text.split("<!-- speed:begin -->", 1)[1].split("<!-- speed:end -->", 1)[0]
    assert text.count(common.COMPILE_BEGIN) == 1 and common.COMPILE_BEGIN in speed_section
    assert "\np\n" in speed_section and "grid" in speed_section
