"""Precision: fp32 against bf16, and bf16 through ``torch.compile``.

``--precision-only`` (its own subsection): the fp32 and bf16 peaks (matmul and a channels-last conv), each
generator in fp32 and bf16 side by side (interleaved in one process) with % of the peak of its own
precision, a cycle-GAN training step with bf16 autocast, the packaged default model through
``upcycle-se enhance --precision auto`` vs ``fp32``, and PESQ bf16 vs fp32 on the ``benchmark`` test set.
Without bf16 hardware the bf16 rows are emulated (and flagged so).

``--compile-precision-only`` (its own subsection): each generator in fp32, bf16 and bf16 through
``torch.compile`` with inductor's ``freezing``, and the packaged default loaded once through the
pretrained interface with and without the ``compile`` run option (``upcycle-se enhance --compile``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

from .common import (COMPILE_BEGIN, COMPILE_END, MODELS, PRECISION_BEGIN, PRECISION_END, REPO, SR, Runner, bf16_hw,
                     build_model, fmt, label, peak_rss_mb, speech_like)
from .training import make_brain, profile_step, random_batch

#: Where the quality benchmark leaves the `benchmark` corpus (the packaged model's test set).
BENCHMARK_CORPUS = REPO / "benchmarks" / "work" / "benchmark_ref" / "corpus"


# ============================================================================ workers (subprocesses)

def _best_gflops(fn, flops: float, reps: int) -> float:
    fn()  # warm-up: primitive creation, clock ramp
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def worker_kernels(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """GFLOP/s of an ``n^3`` matmul and of a 32->32 5x7 channels-last conv on ``[b, 32, 257, 161]``
    (a generator-sized convolution), fp32 and bf16. Without bf16 hardware the bf16 kernels are emulated and ~20-60x
    slower, so they run smaller (n <= 512, b = 1) to keep the run short; GFLOP/s are comparable anyway."""
    from upcycle_se.models.runtime import cpu_has_bf16

    hw = cpu_has_bf16()
    out: Dict[str, Any] = {"bf16_hardware": hw}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        small = name == "bf16" and not hw
        n = min(int(cfg["n"]), 512) if small else int(cfg["n"])
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"matmul_{name}"] = _best_gflops(lambda: torch.matmul(a, b), 2.0 * n ** 3, int(cfg.get("reps", 5)))
        out[f"matmul_{name}_n"] = n
        batch = 1 if small else 4
        x = torch.randn(batch, 32, 257, 161, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(32, 32, 5, 7, dtype=dtype)
        flops = 2.0 * batch * 32 * 32 * 5 * 7 * 257 * 161
        out[f"conv_{name}"] = _best_gflops(lambda: F.conv2d(x, w, padding=(2, 3)), flops, 3 if small else 5)
        out[f"conv_{name}_batch"] = batch
    return out


def worker_precision(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One generator in fp32 and in bf16 (:meth:`UpCycleGenerator.set_unet_dtype`), passes interleaved;
    also the bf16 output's SNR against fp32 on the same input."""
    import copy

    from upcycle_se.models.profile import flop_counter

    fp32 = build_model(cfg["model"])
    models = {"fp32": fp32, "bf16": copy.deepcopy(fp32).set_unet_dtype(torch.bfloat16)}
    gen = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(int(cfg["batch"]), int(round(cfg["seconds"] * SR)), generator=gen)
    outs, walls = {}, {k: [] for k in models}
    with torch.inference_mode():
        with flop_counter() as counter:
            outs["fp32"] = fp32(wav)
        outs["bf16"] = models["bf16"](wav)
        t_timed = time.perf_counter()
        for rnd in range(int(cfg.get("rounds", 3))):
            for key in (("fp32", "bf16") if rnd % 2 == 0 else ("bf16", "fp32")):
                w0 = time.perf_counter()
                models[key](wav)
                walls[key].append(time.perf_counter() - w0)
            if time.perf_counter() - t_timed > float(cfg.get("max_timed_s", 60.0)):
                break
    err = (outs["fp32"] - outs["bf16"]).pow(2).sum()
    snr = float(10 * torch.log10(outs["fp32"].pow(2).sum() / err.clamp_min(1e-30)))
    return {"fp32_s": statistics.median(walls["fp32"]), "bf16_s": statistics.median(walls["bf16"]),
            "walls": walls, "macs": counter.get_total_flops() / 2.0, "snr_db": snr, "load1": os.getloadavg()[0]}



def worker_enhance_precision(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The packaged default model through ``upcycle-se enhance`` (loading included, as a user runs it) on
    a ``seconds``-long 16 kHz file, with each of ``precisions``, rounds interleaved."""
    import contextlib
    import io

    import soundfile as sf

    from upcycle_se.cli import main as cli_main
    from upcycle_se.cli.enhance import load_enhancer

    precisions = list(cfg["precisions"])
    resolved = {p: load_enhancer(None, "cpu", p).precision for p in precisions}
    walls: Dict[str, List[float]] = {p: [] for p in precisions}
    with tempfile.TemporaryDirectory() as tmp:
        noisy = Path(tmp) / "noisy.wav"
        sf.write(noisy, speech_like(float(cfg["seconds"])), SR, subtype="PCM_16")

        def enhance(precision: str) -> float:
            with contextlib.redirect_stdout(io.StringIO()):
                t0 = time.perf_counter()
                code = cli_main(["enhance", str(noisy), "-o", str(Path(tmp) / precision), "--precision", precision,
                                 "--overwrite"])
                wall = time.perf_counter() - t0
            if code != 0:
                raise RuntimeError(f"upcycle-se enhance --precision {precision} exited {code}")
            return wall

        for p in precisions:
            enhance(p)  # warm-up: imports, oneDNN primitives
        for rnd in range(int(cfg.get("rounds", 3))):
            order = precisions[rnd % len(precisions):] + precisions[:rnd % len(precisions)]
            for p in order:
                if p in cfg.get("once", []) and walls[p]:
                    continue
                walls[p].append(enhance(p))
    return {"resolved": resolved, "walls": walls, "median_s": {p: statistics.median(w) for p, w in walls.items()},
            "load1": os.getloadavg()[0]}


def worker_pesq_precision(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Wide-band PESQ of the packaged model's output in fp32 and bf16 on ``files`` test files of the
    ``benchmark`` corpus (evenly spread), against the clean references."""
    import warnings

    from upcycle_se.audio import read_audio
    from upcycle_se.inference import UpCycleEnhancement, default_model_dir
    from upcycle_se.metrics import pesq_wb

    corpus = Path(cfg["corpus"])
    noisy_files = sorted((corpus / "noisy_testset_wav").glob("*.wav"))
    step = max(1, len(noisy_files) // max(1, int(cfg["files"])))
    chosen = noisy_files[::step][: int(cfg["files"])]
    enhancers = {p: UpCycleEnhancement.from_hparams(source=default_model_dir(), run_opts={"precision": p})
                 for p in ("fp32", "bf16")}
    scores: Dict[str, List[float]] = {"noisy": [], "fp32": [], "bf16": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in chosen:
            clean, _ = read_audio(corpus / "clean_testset_wav" / path.name)
            noisy, sr = read_audio(path)
            scores["noisy"].append(pesq_wb(clean.numpy(), noisy.numpy()))
            for p, enh in enhancers.items():
                scores[p].append(pesq_wb(clean.numpy(), enh.enhance_signal(noisy, sr).numpy()))
    diffs = [b - f for f, b in zip(scores["fp32"], scores["bf16"])]
    return {"files": len(chosen), "of": len(noisy_files), "mean": {k: statistics.fmean(v) for k, v in scores.items()},
            "mean_diff": statistics.fmean(diffs), "max_abs_diff": max(abs(d) for d in diffs),
            "load1": os.getloadavg()[0]}


def worker_compile_precision(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One generator in fp32, in bf16, and in bf16 through ``torch.compile`` with inductor's ``freezing``
    (as ``UpCycleEnhancement`` compiles it), timed passes interleaved; the compile time is the first
    compiled pass."""
    import copy

    import torch._inductor.config as inductor_config

    fp32 = build_model(cfg["model"])
    bf16 = copy.deepcopy(fp32).set_unet_dtype(torch.bfloat16)
    gen = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(int(cfg["batch"]), int(round(cfg["seconds"] * SR)), generator=gen)
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        compiled = torch.compile(bf16, dynamic=False)
        ref = fp32(wav)
        bf16(wav)
        t0 = time.perf_counter()
        out = compiled(wav)
        compile_s = time.perf_counter() - t0
        models = {"fp32": fp32, "bf16": bf16, "bf16_compiled": compiled}
        walls: Dict[str, List[float]] = {k: [] for k in models}
        names = list(models)
        for rnd in range(int(cfg.get("rounds", 3))):
            for key in names[rnd % 3:] + names[:rnd % 3]:
                w0 = time.perf_counter()
                models[key](wav)
                walls[key].append(time.perf_counter() - w0)
    snr = float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum().clamp_min(1e-30)))
    return {"median_s": {k: statistics.median(v) for k, v in walls.items()}, "walls": walls,
            "compile_s": compile_s, "snr_db": snr, "load1": os.getloadavg()[0]}


def worker_enhance_compile(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The packaged default model loaded once through the pretrained interface (a folder of files, as
    ``upcycle-se enhance`` runs it): fp32, ``auto`` and ``auto`` with the ``compile`` run option, each
    enhancing a ``seconds``-long 16 kHz signal, rounds interleaved; compile time = the first compiled call."""
    from upcycle_se.inference import UpCycleEnhancement, default_model_dir

    sig = torch.from_numpy(speech_like(float(cfg["seconds"])))
    variants = {"fp32": {"precision": "fp32"}, "auto": {"precision": "auto"},
                "auto_compiled": {"precision": "auto", "compile": True}}
    enhancers = {k: UpCycleEnhancement.from_hparams(source=default_model_dir(), run_opts=v)
                 for k, v in variants.items()}
    first = {}
    for k, enh in enhancers.items():
        t0 = time.perf_counter()
        enh.enhance_signal(sig, SR)  # warm-up; for the compiled one, the compile
        first[k] = time.perf_counter() - t0
    walls: Dict[str, List[float]] = {k: [] for k in enhancers}
    names = list(enhancers)
    for rnd in range(int(cfg.get("rounds", 3))):
        for k in names[rnd % 3:] + names[:rnd % 3]:
            t0 = time.perf_counter()
            enhancers[k].enhance_signal(sig, SR)
            walls[k].append(time.perf_counter() - t0)
    return {"resolved": {k: e.precision for k, e in enhancers.items()}, "first_s": first, "walls": walls,
            "median_s": {k: statistics.median(v) for k, v in walls.items()}, "load1": os.getloadavg()[0]}


#: The training step's precisions: SpeechBrain's ``--precision`` run option (bf16: autocast, fp32 master weights).
TRAIN_PRECISIONS = ("fp32", "bf16")


def worker_train_precision(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds per cycle-GAN step (``fit_batch``) in each of :data:`TRAIN_PRECISIONS`, one Brain each (same
    initial weights), timed steps interleaved; and a profile of one step in each."""
    batch, samples = int(cfg.get("batch", 4)), int(cfg.get("samples", 32000))
    walls: Dict[str, List[float]] = {n: [] for n in TRAIN_PRECISIONS}
    out: Dict[str, Any] = {"variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        brains = {}
        for n in TRAIN_PRECISIONS:
            torch.manual_seed(0)
            brains[n] = make_brain(cfg["preset"], Path(tmp) / n, "cpu", n)
            brains[n].fit_batch(random_batch(batch, samples, 0))  # warm-up: Adam state, oneDNN primitives
        for step in range(int(cfg.get("steps", 2))):
            for n in (TRAIN_PRECISIONS if step % 2 == 0 else TRAIN_PRECISIONS[::-1]):
                b = random_batch(batch, samples, step + 1)
                w0 = time.perf_counter()
                loss = brains[n].fit_batch(b)
                walls[n].append(time.perf_counter() - w0)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"{n}: non-finite loss {float(loss)}")
        for n, brain in brains.items():
            shares = profile_step(brain, batch, samples, "cpu") if cfg.get("profile", True) else None
            out["variants"][n] = {"wall_s": statistics.median(walls[n]), "walls": walls[n], "profile": shares,
                                  "params": sum(p.numel() for p in brain.modules.parameters())}
    out["load1"] = os.getloadavg()[0]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


WORKERS = {"kernels": worker_kernels, "precision": worker_precision, "enhance_precision": worker_enhance_precision,
           "pesq_precision": worker_pesq_precision, "train_precision": worker_train_precision,
           "compile_precision": worker_compile_precision, "enhance_compile": worker_enhance_compile}


# ============================================================================ orchestration and report

def run_compile_part(args: argparse.Namespace, run: Runner) -> Dict[str, Any]:
    """The bf16 + torch.compile part: the generators, then the packaged default through the interface."""
    threads = max(args.threads)
    out: Dict[str, Any] = {"models": [], "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                           "load_start": os.getloadavg()[0], "threads": threads}
    for model in args.compile_precision_models:
        run.log(f"compile: {model} fp32 / bf16 / bf16 compiled x{threads}, {args.precision_seconds:g} s")
        out["models"].append({"model": model, "threads": threads, "seconds": args.precision_seconds, **run({
            "kind": "compile_precision", "model": model, "threads": threads, "seconds": args.precision_seconds,
            "batch": 1, "rounds": args.precision_rounds}, timeout=1800)})
    run.log(f"compile: packaged default through the interface, fp32 / auto / auto compiled x{threads}")
    out["enhance"] = {"threads": threads, "seconds": args.enhance_seconds, **run({
        "kind": "enhance_compile", "threads": threads, "seconds": args.enhance_seconds,
        "rounds": args.precision_rounds}, timeout=1800)}
    return out


def compile_precision_lines(res: Dict[str, Any], command: str) -> List[str]:
    """The bf16 + torch.compile subsection, between its own markers (``--compile-precision-only``)."""
    c = res["compile_precision"]
    hw = res["machine"].get("bf16_hardware")
    out = [COMPILE_BEGIN, "### bf16 with torch.compile", "",
           f"Measured {c['started']} on **{res['machine']['cpu']}** (bf16 hardware: **{'yes' if hw else 'no'}**), "
           f"{c['threads']} thread{'s' if c['threads'] != 1 else ''}, 1-min load average {c['load_start']:.1f} at the start. "
           f"`{command}` ({res['total_s'] / 60:.1f} min).", "",
           "| model | input | fp32 s | bf16 s | bf16 compiled s | bf16 / fp32 | **bf16 compiled / fp32** | "
           "compile s | compiled vs fp32 output SNR | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in c["models"]:
        head = f"| {label(r['model'])} | {r['seconds']:g} s "
        if "error" in r:
            out.append(head + f"| failed: {r['error'][:150]} | | | | | | | |")
            continue
        m = r["median_s"]
        out.append(head + f"| {m['fp32']:.3g} | {m['bf16']:.3g} | {m['bf16_compiled']:.3g} | "
                   f"{m['fp32'] / m['bf16']:.2f}x | **{m['fp32'] / m['bf16_compiled']:.2f}x** | "
                   f"{r['compile_s']:.0f} | {r['snr_db']:.1f} dB | {r['load1']:.1f} |")
    out += ["", "One process per model: the fp32 generator, a bf16 copy (`set_unet_dtype`), and that copy "
            "through `torch.compile(dynamic=False)` with inductor's `freezing` (weights folded in as constants, "
            "oneDNN weight prepacking, element-wise work fused); timed passes interleaved, median; the compile "
            "time is the first compiled pass, with a fresh inductor cache.", ""]
    e = c.get("enhance")
    if e and "error" not in e:
        m, first = e["median_s"], e["first_s"]
        out += [f"**The packaged default model through the pretrained interface, loaded once** (as "
                f"`upcycle-se enhance` runs a folder; a {e['seconds']:g} s 16 kHz signal per call, chunked as "
                f"shipped; load {e['load1']:.1f}):", "",
                "| run options | resolves to | first call s | s per call | vs fp32 |", "|---|---|---|---|---|"]
        labels = {"fp32": '`{"precision": "fp32"}`', "auto": '`{"precision": "auto"}`',
                  "auto_compiled": '`{"precision": "auto", "compile": True}` (`--compile`)'}
        for k in ("fp32", "auto", "auto_compiled"):
            out.append(f"| {labels[k]} | {e['resolved'][k]} | {first[k]:.3g} | {m[k]:.3g} | "
                       f"{m['fp32'] / m[k]:.2f}x |")
        out.append("")
    elif e:
        out += [f"Interface path: failed: {e['error'][:200]}", ""]
    out.append(COMPILE_END)
    return out


def run_precision_part(args: argparse.Namespace, run: Runner) -> Dict[str, Any]:
    """The precision part: kernel peaks, the generators in both precisions, the enhance path, PESQ."""
    out: Dict[str, Any] = {"kernels": {}, "models": [], "enhance": None, "pesq": None,
                           "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load_start": os.getloadavg()[0]}
    for threads in args.threads:
        run.log(f"precision: fp32 / bf16 kernel peaks, {threads} thread(s)")
        out["kernels"][threads] = run({"kind": "kernels", "threads": threads, "n": args.gemm_n})
    for model in [m for m in args.precision_models if MODELS[m].precision]:
        for threads in args.threads:
            run.log(f"precision: {model} fp32 / bf16 x{threads}, {args.precision_seconds:g} s")
            row = run({"kind": "precision", "model": model, "threads": threads, "seconds": args.precision_seconds,
                       "batch": 1, "rounds": args.precision_rounds})
            out["models"].append({"model": model, "threads": threads, "seconds": args.precision_seconds, **row})
    threads = max(args.threads)
    out["train"] = []
    for preset in args.train_models:
        run.log(f"precision: cycle-GAN training step {preset}, {' / '.join(TRAIN_PRECISIONS)}, x{threads}")
        out["train"].append({"preset": preset, "threads": threads, "batch": args.train_batch,
                             "seconds": args.train_seconds, **run({
                                 "kind": "train_precision", "preset": preset, "threads": threads,
                                 "batch": args.train_batch, "samples": int(round(args.train_seconds * SR)),
                                 "steps": args.train_steps.get(preset, 2)}, timeout=3600)})
    run.log(f"precision: packaged model through `upcycle-se enhance`, auto / fp32 / bf16, x{threads}")
    out["enhance"] = {"threads": threads, "seconds": args.enhance_seconds, **run({
        "kind": "enhance_precision", "threads": threads, "seconds": args.enhance_seconds,
        "precisions": ["auto", "fp32", "bf16"], "once": [] if bf16_hw() else ["bf16"],
        "rounds": args.precision_rounds})}
    corpus = BENCHMARK_CORPUS
    if args.pesq_files > 0 and (corpus / "noisy_testset_wav").is_dir():
        run.log(f"precision: PESQ fp32 vs bf16 on {args.pesq_files} benchmark test files, x{threads}")
        out["pesq"] = run({"kind": "pesq_precision", "threads": threads, "corpus": str(corpus),
                           "files": args.pesq_files})
    elif args.pesq_files > 0:
        out["pesq"] = {"error": f"{corpus} missing: run `python benchmarks/quality.py` once to build it"}
    return out


def _train_precision_lines(rows: List[Dict[str, Any]], hw: bool) -> List[str]:
    """The training rows of the precision subsection: s/step in each precision, and each one's profile."""
    if not rows:
        return []
    emu = "" if hw else " (emulated)"
    out = ["**Cycle-GAN training step, fp32 vs bf16 autocast** (`UpCycleBrain.fit_batch` with the recipes' "
           "hparams, SpeechBrain's `--precision` run option: bf16 autocast with fp32 master weights; one Brain per "
           "precision from the same initial weights, timed steps interleaved, median):", "",
           "| preset | threads | batch x crop | fp32 s/step | bf16 s/step | bf16 / fp32 speed-up | load |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['preset']} | {r['threads']} | {r['batch']} x {r['seconds']:g} s "
        if "error" in r:
            out.append(head + f"| failed: {r['error'][:150]} | | | |")
            continue
        v = {k: x["wall_s"] for k, x in r["variants"].items()}
        out.append(head + f"| {v['fp32']:.3g} | {v['bf16']:.3g}{emu} | **{v['fp32'] / v['bf16']:.2f}x** "
                   f"| {r['load1']:.1f} |")
    out += ["", "Profile of one step (self CPU time by operator category, top 4):", "",
            "| preset | precision | profile |", "|---|---|---|"]
    for r in rows:
        for name, x in (r.get("variants") or {}).items():
            prof = ", ".join(f"{k} {100 * s:.0f} %" for k, s in list((x.get("profile") or {}).items())[:4])
            out.append(f"| {r['preset']} | {name} | {prof} |")
    out.append("")
    return out


def _precision_peak(kernels: Dict[str, Any], name: str) -> float:
    return max(kernels.get(f"matmul_{name}", 0.0), kernels.get(f"conv_{name}", 0.0))


def precision_lines(res: Dict[str, Any]) -> List[str]:
    """The precision subsection, between its own markers (``--precision-only`` rewrites just this)."""
    p = res["precision"]
    hw = res["machine"].get("bf16_hardware")
    emu = "" if hw else " (emulated)"
    out = [PRECISION_BEGIN, "### Precision: fp32 vs bf16", "",
           f"Measured {p.get('started', res.get('started'))} on **{res['machine']['cpu']}**; bf16 hardware (AMX-BF16 or "
           f"AVX512-BF16, `upcycle_se.models.runtime.cpu_has_bf16()`): **{'yes' if hw else 'no'}**. "
           + ("" if hw else "Without it oneDNN has no bf16 convolution and torch falls back to a generic kernel: "
              "every bf16 figure below is that emulation, shown for completeness, not a speed anyone should "
              "use; `--precision auto` therefore resolves to fp32 here. ")
           + f"1-min load average {p.get('load_start', 0.0):.1f} at the start of this part (2 cores).", "",
           "| threads | matmul fp32 GFLOP/s | matmul bf16 GFLOP/s | conv fp32 GFLOP/s | conv bf16 GFLOP/s | "
           "peak ratio bf16 / fp32 |", "|---|---|---|---|---|---|"]
    for t, k in sorted(p["kernels"].items(), key=lambda kv: int(kv[0])):
        if "error" in k:
            out.append(f"| {t} | failed: {k['error'][:150]} | | | | |")
            continue
        ratio = _precision_peak(k, "bf16") / max(_precision_peak(k, "fp32"), 1e-9)
        flag = "" if hw else ", emulated"
        out.append(f"| {t} | {fmt(k['matmul_fp32'])} (n={k['matmul_fp32_n']}) | {fmt(k['matmul_bf16'])} "
                   f"(n={k['matmul_bf16_n']}{flag}) | {fmt(k['conv_fp32'])} | {fmt(k['conv_bf16'])} "
                   f"(batch {k['conv_bf16_batch']}{flag}) | {ratio:.2f}x |")
    out += ["", "Kernels: `torch.matmul` of two n x n matrices; a 32 -> 32, 5 x 7 `F.conv2d` on channels-last "
            "[batch, 32, 257, 161] maps (batch 4; smaller where bf16 is emulated, to keep the run short). Best of "
            "5 (3) after a warm-up. The peak of a precision is the better of its two kernels.", "",
            "| model | threads | input | fp32 s | bf16 s | speed-up bf16 / fp32 | fp32 % of fp32 peak | "
            "bf16 % of bf16 peak | bf16 vs fp32 output SNR | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["models"]:
        head = f"| {label(r['model'])} | {r['threads']} | {r['seconds']:g} s "
        if "error" in r:
            out.append(head + f"| failed: {r['error'][:150]} | | | | | | |")
            continue
        k = p["kernels"].get(r["threads"]) or p["kernels"].get(str(r["threads"])) or {}
        gf = {name: 2.0 * r["macs"] / r[f"{name}_s"] / 1e9 for name in ("fp32", "bf16")}
        pct = {name: f"{100 * gf[name] / _precision_peak(k, name):.0f} %" if _precision_peak(k, name) else "n/a"
               for name in gf}
        out.append(head + f"| {r['fp32_s']:.3g} | {r['bf16_s']:.3g}{emu} | **{r['fp32_s'] / r['bf16_s']:.2f}x** "
                   f"| {pct['fp32']} | {pct['bf16']} | {r['snr_db']:.1f} dB | {r['load1']:.1f} |")
    out += ["", "One process per model and thread count holds the fp32 generator and a bf16 copy "
            "(`UpCycleGenerator.set_unet_dtype(torch.bfloat16)`: bf16 weights and channels-last feature maps, "
            "batch norms folded in fp32 then rounded once; STFT, mask and waveform fp32); after a warm-up each, "
            "their timed passes alternate (median). % of peak = 2 x MACs / wall time over the peak of the same "
            "precision and thread count. SNR: bf16 output against fp32 on the same random input.", ""]
    out += _train_precision_lines(p.get("train") or [], hw)
    e = p.get("enhance")
    if e and "error" not in e:
        med, res_p = e["median_s"], e["resolved"]
        out += [f"**The packaged default model through `upcycle-se enhance`** ({e['seconds']:g} s 16 kHz file, "
                f"{e['threads']} threads, model loading included, runs interleaved, median; load {e['load1']:.1f}):", "",
                "| `--precision` | resolves to | wall s | vs fp32 |", "|---|---|---|---|"]
        for name in ("auto", "fp32", "bf16"):
            if name in med:
                flag = emu if res_p[name] == "bf16" else ""
                out.append(f"| {name} | {res_p[name]}{flag} | {med[name]:.3g} | {med['fp32'] / med[name]:.2f}x |")
        verdict = ("auto resolved to fp32, the same code path as `--precision fp32`, so it cannot be slower; "
                   f"measured auto / fp32 = {med['auto'] / med['fp32']:.2f} (run-to-run noise)"
                   if res_p["auto"] == "fp32" else
                   f"auto resolved to bf16: {med['fp32'] / med['auto']:.2f}x faster than fp32")
        out += ["", f"Verdict: {verdict}.", ""]
    elif e:
        out += [f"Enhance path: failed: {e['error'][:200]}", ""]
    q = p.get("pesq")
    if q and "error" not in q:
        m = q["mean"]
        ok = "within" if q["max_abs_diff"] <= 0.02 else "NOT within"
        out += [f"**PESQ, bf16 vs fp32** (packaged model, {q['files']} of the {q['of']} `benchmark` test files, "
                f"evenly spread; wide-band PESQ): noisy {m['noisy']:.3f}, fp32 {m['fp32']:.3f}, bf16 {m['bf16']:.3f}; "
                f"bf16 - fp32 mean {q['mean_diff']:+.4f}, largest per-file |difference| {q['max_abs_diff']:.4f}, "
                f"{ok} the 0.02 bound.", ""]
    elif q:
        out += [f"PESQ bf16 vs fp32: not measured ({q['error'][:200]}).", ""]
    out.append(PRECISION_END)
    return out
