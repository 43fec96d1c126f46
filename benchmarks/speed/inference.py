"""Inference: the machine's measured matmul peak, then each model's real-time factor, memory and share of
that peak over a grid of inputs, batches and thread counts; the opt-in allocator setting and ``torch.compile``
against the eager defaults.

RTF = wall-clock seconds / seconds of audio processed (batch x duration); median of the timed passes after
one warm-up pass. CPU seconds (``time.process_time``) are reported beside wall time: on a machine shared
with other jobs they show the work done, wall time what a user waits. Peak memory is the subprocess's
resident-set high-water mark (``ru_maxrss``: runtime, weights and activations; the RSS before the first
pass is given too), on GPU ``torch.cuda.max_memory_allocated``. Configurations predicted to exceed the
memory or time cap are skipped and marked so. MACs are counted by :func:`upcycle_se.models.profile.flop_counter`
on the warm-up pass; achieved GFLOP/s = 2 x MACs / wall time, as a share of the measured peak.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from .common import NO_GPU, SR, build_model, fmt, label, mem_available_mb, peak_rss_mb, rss_mb, sync, Runner


# ============================================================================ workers (subprocesses)

def worker_peak(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """GFLOP/s of an ``n^3`` single-precision GEMM through MKL (``torch.matmul``) and through oneDNN."""
    n, reps = int(cfg["n"]), int(cfg.get("reps", 5))
    flops = 2.0 * n ** 3
    out = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    h = max(1, n // 32)
    x = torch.randn(1, n, h, n // h).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1)
    kernels = {"mkl": lambda: torch.matmul(a, b)}
    if torch.backends.mkldnn.is_available():
        kernels["onednn"] = lambda: torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
    for name, fn in kernels.items():
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = flops / min(times) / 1e9
        out[name + "_median"] = flops / statistics.median(times) / 1e9
    if torch.cuda.is_available() and cfg.get("cuda"):
        a, b = a.cuda(), b.cuda()
        torch.matmul(a, b)
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out["cuda"] = flops / min(times) / 1e9
    return out


def _onednn_peak(n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an ``n^3`` oneDNN sgemm in this process now (best of ``reps``); 0 without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return 0.0
    h = max(1, n // 32)
    x = torch.randn(1, n, h, n // h).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1)
    for _ in range(2):  # warm-up: primitive creation, clock ramp
        torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def worker_info(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Parameters and MACs per second of audio of each model (4 s input, batch 1)."""
    from upcycle_se.models.profile import count_parameters, macs_per_second

    return {name: {"params": count_parameters(build_model(name)),
                   "gmacs_per_s": macs_per_second(build_model(name), SR, seconds=4.0) / 1e9}
            for name in cfg["models"]}


def worker_infer(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Times the model on ``batch x seconds`` of audio: one counted warm-up pass, then ``repeats`` passes;
    with ``allocator``, after :func:`upcycle_se.models.runtime.keep_freed_memory`; with ``compile``, eager
    and ``torch.compile``d passes interleaved."""
    from upcycle_se.models.profile import flop_counter

    device = cfg.get("device", "cpu")
    peak_now = _onednn_peak() if device == "cpu" else None  # same process, same threads, same moment
    if cfg.get("allocator"):
        from upcycle_se.models.runtime import keep_freed_memory

        keep_freed_memory()
    model = build_model(cfg["model"]).to(device)
    gen = torch.Generator().manual_seed(1)
    wav = (0.1 * torch.randn(int(cfg["batch"]), int(round(cfg["seconds"] * SR)), generator=gen)).to(device)
    before = rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():  # warm-up pass, eager, with its MACs counted
        t0 = time.perf_counter()
        with flop_counter() as counter:
            model(wav)
        sync(device)
        warm_s = time.perf_counter() - t0
    runner = model
    compile_s = None
    if cfg.get("compile"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        runner = torch.compile(model, dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            runner(wav)
        sync(device)
        compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        pairs = []
        t_timed = time.perf_counter()
        for _ in range(int(cfg.get("repeats", 3))):
            for which, fn in ([("eager", model), ("compiled", runner)] if cfg.get("compile") else [("main", runner)]):
                c0, w0 = time.process_time(), time.perf_counter()
                fn(wav)
                sync(device)
                pairs.append((which, time.perf_counter() - w0, time.process_time() - c0))
            if time.perf_counter() - t_timed > float(cfg.get("max_timed_s", 30.0)):
                break  # a loaded machine can make passes far slower than predicted: at least one, then stop
    main = [p for p in pairs if p[0] in ("main", "compiled")]
    walls, cpus = [p[1] for p in main], [p[2] for p in main]
    out = {
        "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "walls": walls, "warm_s": warm_s,
        "macs": counter.get_total_flops() / 2.0, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
        "load1": os.getloadavg()[0], "peak_gflops_now": peak_now,
    }
    if cfg.get("compile"):
        eager = [p for p in pairs if p[0] == "eager"]
        out.update(compile_s=compile_s, eager_wall_s=statistics.median(p[1] for p in eager),
                   eager_cpu_s=statistics.median(p[2] for p in eager))
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


WORKERS = {"infer": worker_infer}


# ============================================================================ orchestration

def measure_peak(res: Dict[str, Any], args: argparse.Namespace, cuda: bool) -> None:
    """The GEMM peak at each thread count, in this process; a second call keeps the better figures."""
    saved_threads = torch.get_num_threads()
    peak = res.setdefault("peak", {})
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            again = worker_peak({"n": args.gemm_n, "cuda": cuda})
            old = peak.setdefault(threads, {})
            for key, value in again.items():
                old[key] = max(old.get(key, 0.0), value)
    finally:
        torch.set_num_threads(saved_threads)


def run_inference(res: Dict[str, Any], args: argparse.Namespace, run: Runner, cuda: bool) -> None:
    """The inference grid, the allocator pairs and ``torch.compile``, into ``res``."""
    grid = sorted(((s, b) for s in args.durations for b in args.batches), key=lambda sb: (sb[0] * sb[1], sb[0]))
    res["infer"] = []
    devices = [("cpu", t) for t in args.threads] + ([("cuda", 1)] if cuda else [])
    for model in args.models:
        for device, threads in devices:
            done: List[Dict[str, Any]] = []
            for seconds, batch in grid:
                row = {"model": model, "device": device, "threads": threads, "seconds": seconds, "batch": batch}
                audio = seconds * batch
                pred = _predict(done, audio, args.repeats)
                mem_cap_mb = min(args.mem_cap_gb * 1024.0, 0.6 * mem_available_mb())
                if device == "cpu" and pred is not None:
                    mem_mb, time_s = pred
                    if mem_mb > mem_cap_mb or time_s > args.time_cap:
                        why = []
                        if mem_mb > mem_cap_mb:
                            why.append(f"~{mem_mb / 1024:.0f} GB predicted peak RSS > {mem_cap_mb / 1024:.1f} GB cap")
                        if time_s > args.time_cap:
                            why.append(f"~{time_s:.0f} s predicted > {args.time_cap:.0f} s cap")
                        row["skipped"] = "; ".join(why)
                        res["infer"].append(row)
                        run.log(f"skip {model} {device} x{threads} {seconds:g}s x{batch}: {row['skipped']}")
                        continue
                run.log(f"infer {model} {device} x{threads} {seconds:g}s x{batch}")
                out = run({"kind": "infer", "model": model, "device": device, "threads": threads,
                           "seconds": seconds, "batch": batch, "repeats": _repeats(done, audio, args.repeats)})
                row.update(out)
                res["infer"].append(row)
                if "error" not in out:
                    done.append(row)

    # The allocator setting is process-wide and cannot be undone: alternating pairs of fresh processes.
    res["alloc"] = []
    for model in args.alloc_models:
        for threads in args.threads:
            for pair in range(args.alloc_pairs):
                for allocator in (False, True):
                    run.log(f"allocator pair {pair + 1}: {model} x{threads} {'opt-in' if allocator else 'default'}")
                    out = run({"kind": "infer", "model": model, "threads": threads, "seconds": args.batch1_seconds,
                               "batch": 1, "repeats": args.batch1_repeats, "allocator": allocator})
                    res["alloc"].append({"model": model, "threads": threads, "allocator": allocator, "pair": pair,
                                         **out})

    res["compile"] = []
    if args.compile:
        for model in args.compile_models:
            for threads in args.threads:
                run.log(f"torch.compile {model} x{threads}")
                out = run({"kind": "infer", "model": model, "threads": threads, "seconds": args.batch1_seconds,
                           "batch": 1, "repeats": args.batch1_repeats, "compile": True}, timeout=1200)
                res["compile"].append({"model": model, "threads": threads, **out})


def _predict(done: List[Dict[str, Any]], audio: float, repeats: int) -> Optional[Tuple[float, float]]:
    """(peak RSS MB, seconds) predicted for ``audio`` seconds from the largest configuration done so far."""
    if not done:
        return None
    ref = max(done, key=lambda r: r["seconds"] * r["batch"])
    ref_audio = ref["seconds"] * ref["batch"]
    per_s_mb = max(ref["peak_rss_mb"] - ref["rss_before_mb"], 0.0) / ref_audio
    mem = ref["rss_before_mb"] + per_s_mb * audio
    per_s_time = ref["wall_s"] / ref_audio
    return mem, per_s_time * audio * (1 + _repeats(done, audio, repeats))  # warm-up + timed passes


def _repeats(done: List[Dict[str, Any]], audio: float, repeats: int) -> int:
    """Timed passes: ``repeats``, fewer (down to 1) when one pass is predicted to take over 10 s."""
    if not done:
        return repeats
    ref = max(done, key=lambda r: r["seconds"] * r["batch"])
    one = ref["wall_s"] / (ref["seconds"] * ref["batch"]) * audio
    return max(1, min(repeats, int(20.0 // max(one, 1e-9))))


# ============================================================================ report

def peak_of(res: Dict[str, Any], threads: int) -> float:
    """The measured matmul peak at ``threads``: the best GEMM of the whole run (start, end and the one timed
    in every CPU inference process), i.e. the machine's limit rather than one moment's share of it."""
    p = res["peak"].get(threads) or res["peak"].get(str(threads)) or {}
    per_row = [r.get("peak_gflops_now") or 0.0 for r in res.get("infer", []) if r.get("threads") == threads
               and r.get("device") == "cpu"]
    return max([p.get("mkl", 0.0), p.get("onednn", 0.0)] + per_row)


def rows(res: Dict[str, Any], **match) -> List[Dict[str, Any]]:
    return [r for r in res["infer"] if all(r.get(k) == v for k, v in match.items()) and "wall_s" in r]


def inference_lines(res: Dict[str, Any]) -> List[str]:
    """The physical limit, the models, the inference grid with its summary, the allocator and compile tables."""
    info = res["info"]
    lines = ["### Physical limit (measured matmul peak)", "",
             "| threads | MKL sgemm (`torch.matmul`) GFLOP/s | oneDNN sgemm GFLOP/s | peak used below |",
             "|---|---|---|---|"]
    for t in res["args"]["threads"]:
        p = res["peak"].get(t) or res["peak"].get(str(t)) or {}
        lines.append(f"| {t} | {fmt(p.get('mkl'))} | {fmt(p.get('onednn'))} | {fmt(peak_of(res, t))} |")
    lines += ["", f"{res['args']['gemm_n']}^3 single-precision GEMM, best of 5 after a warm-up, measured at the start "
              "and at the end of the run (the better is shown; the `% peak` column also counts the oneDNN GEMM "
              "timed in each inference process), same thread count as the model runs. oneDNN runs the models' "
              "convolutions; where its sgemm beats MKL's (AVX-512 against AVX2 on AMD CPUs) it is the limit the "
              "models can approach.", ""]
    lines += ["### Models", "", "| model | parameters | GMACs per s of audio |", "|---|---|---|"]
    for name in res["args"]["models"]:
        i = info.get(name, {})
        lines.append(f"| {label(name)} | {i.get('params', 0):,} | {fmt(i.get('gmacs_per_s'))} |")
    lines += ["", "MACs of the convolutions and matrix products (LSTM, linear) of one forward pass on 4 s, per "
              "second of audio (`upcycle_se.models.profile`). The reference is described in "
              "`benchmarks/speed/common.py` (`DCCRNReference`): DCCRN-E's encoder/decoder (6 levels, 32-256 "
              "channels, kernel (5, 2), stride (2, 1)) in our complex layers, with a real 2-layer LSTM standing in "
              "for DCCRN-E's complex LSTM (sized to 3.7 M parameters in all).", ""]
    lines += ["### Inference real-time factor (noisy -> clean)", "",
              "Library defaults (evaluation mode, `torch.inference_mode`, default allocator): what a user gets "
              "out of the box. RTF = wall seconds / seconds of audio processed (batch x duration); below 1 is "
              "faster than real time. `cpu s` = process CPU seconds of one pass. GFLOP/s = 2 x MACs / wall time; "
              "`% peak` against the measured matmul peak at the same thread count (the best oneDNN sgemm of the "
              "run: at the start, at the end and in every inference process just before its model). Peak RSS = "
              "resident-set high-water mark of the fresh process (runtime + weights + activations), RSS before "
              "the first pass in brackets.", "",
              "| model | device | threads | input | batch | RTF | wall s | cpu s | GFLOP/s | % peak | peak memory | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["infer"]:
        head = f"| {label(r['model'])} | {r['device'].upper()} | {r['threads'] if r['device'] == 'cpu' else '-'} " \
               f"| {r['seconds']:g} s | {r['batch']} "
        if "skipped" in r:
            lines.append(head + f"| skipped: {r['skipped']} | | | | | | |")
            continue
        if "error" in r:
            lines.append(head + f"| failed: {r['error'][:120]} | | | | | | |")
            continue
        audio = r["seconds"] * r["batch"]
        gflops = 2.0 * r["macs"] / r["wall_s"] / 1e9
        if r["device"] == "cpu":
            peak = peak_of(res, r["threads"])
            pct = f"{100.0 * gflops / peak:.0f} %" if peak else "n/a"
            mem = f"{r['peak_rss_mb']:,.0f} MB ({r['rss_before_mb']:,.0f})"
        else:
            cuda_peak = (res["peak"].get(1) or res["peak"].get("1") or {}).get("cuda")
            pct = f"{100.0 * gflops / cuda_peak:.0f} %" if cuda_peak else "n/a"
            mem = f"{r.get('peak_gpu_mb', float('nan')):,.0f} MB GPU"
        lines.append(head + f"| **{r['wall_s'] / audio:.3f}** | {r['wall_s']:.3g} | {r['cpu_s']:.3g} | {gflops:.0f} "
                     f"| {pct} | {mem} | {r['load1']:.1f} |")
    if not res["cuda"]:
        lines += ["", f"GPU rows: {NO_GPU}. The script measures them automatically (same grid, "
                  "`torch.cuda.max_memory_allocated` as peak memory, cuBLAS sgemm as the peak) when a GPU is present."]
    lines += [""] + _summary_lines(res) + [""]
    if res.get("alloc"):
        lines += alloc_lines(res)
    if res.get("compile"):
        lines += compile_lines(res)
    return lines


def _summary_lines(res: Dict[str, Any]) -> List[str]:
    out = ["Summary:"]
    threads = res["args"]["threads"]
    for model in res["args"]["models"]:
        rtfs = [r["wall_s"] / (r["seconds"] * r["batch"]) for r in rows(res, model=model, device="cpu",
                                                                        threads=max(threads))]
        if rtfs:
            out.append(f"- {label(model)}, CPU, {max(threads)} thread(s): RTF {min(rtfs):.3f} to {max(rtfs):.3f} "
                       f"over the grid ({'faster' if max(rtfs) < 1 else 'not always faster'} than real time).")
    for model in res["args"]["models"]:
        eff = [2.0 * r["macs"] / r["wall_s"] / 1e9 / peak_of(res, r["threads"])
               for r in rows(res, model=model, device="cpu") if peak_of(res, r["threads"])]
        if eff:
            out.append(f"- {label(model)}: {100 * min(eff):.0f}-{100 * max(eff):.0f} % of the matmul peak.")
        scal = []
        for r in rows(res, model=model, device="cpu", threads=max(threads)):
            one = rows(res, model=model, device="cpu", threads=min(threads), seconds=r["seconds"], batch=r["batch"])
            if one and r["threads"] != one[0]["threads"]:
                scal.append(one[0]["wall_s"] / r["wall_s"])
        if scal:
            out.append(f"  {max(threads)} threads vs {min(threads)}: "
                       f"{statistics.median(scal):.2f}x faster (median over {len(scal)} configurations).")
    if "dccrn" in res["args"]["models"]:
        for model in [m for m in res["args"]["models"] if m != "dccrn"]:
            ratios = []
            for r in rows(res, model=model, device="cpu"):
                ref = rows(res, model="dccrn", device="cpu", threads=r["threads"], seconds=r["seconds"],
                           batch=r["batch"])
                if ref:
                    ratios.append(r["wall_s"] / ref[0]["wall_s"])
            if ratios:
                out.append(f"- RTF ratio {label(model)} / DCCRN-E-sized reference (same run, same config): "
                           f"median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}, "
                           f"{len(ratios)} CPU configurations).")
    return out


def alloc_lines(res: Dict[str, Any]) -> List[str]:
    """Default allocator against the opt-in ``keep_freed_memory()``, from pairs of fresh processes."""
    a = res["args"]
    out = ["### Opt-in allocator setting", "",
           f"`upcycle_se.models.runtime.keep_freed_memory()` (process-wide, cannot be undone) against the default, "
           f"{a['batch1_seconds']:g} s input, batch 1: {a['alloc_pairs']} alternating pair(s) of fresh processes, "
           f"median of {a['batch1_repeats']} passes each, then the median over pairs. Speed-up = default / opt-in.", "",
           "| model | threads | default wall s | opt-in wall s | speed-up (wall) | speed-up (cpu) | peak RSS default "
           "| peak RSS opt-in |", "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in res["alloc"]):
        for threads in dict.fromkeys(r["threads"] for r in res["alloc"] if r["model"] == model):
            got = {flag: [r for r in res["alloc"] if r["model"] == model and r["threads"] == threads
                          and r["allocator"] == flag and "wall_s" in r] for flag in (False, True)}
            if not (got[False] and got[True]):
                errors = [r["error"] for r in res["alloc"] if r["model"] == model and r["threads"] == threads
                          and "error" in r]
                out.append(f"| {label(model)} | {threads} | failed: {(errors or [''])[0][:150]} | | | | | |")
                continue
            med = {flag: {k: statistics.median(r[k] for r in got[flag]) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
                   for flag in got}
            d, o = med[False], med[True]
            out.append(f"| {label(model)} | {threads} | {d['wall_s']:.3g} | {o['wall_s']:.3g} | "
                       f"**{d['wall_s'] / o['wall_s']:.2f}x** | {d['cpu_s'] / o['cpu_s']:.2f}x | "
                       f"{d['peak_rss_mb']:,.0f} MB | {o['peak_rss_mb']:,.0f} MB |")
    out.append("")
    return out


def compile_lines(res: Dict[str, Any]) -> List[str]:
    out = ["### torch.compile", "",
           "| model | threads | compile s | eager wall s | compiled wall s | compiled / eager (wall) | compiled / eager (cpu) |",
           "|---|---|---|---|---|---|---|"]
    for r in res["compile"]:
        if "error" in r:
            out.append(f"| {label(r['model'])} | {r['threads']} | failed: {r['error'][:200]} | | | | |")
            continue
        out.append(f"| {label(r['model'])} | {r['threads']} | {r['compile_s']:.0f} | {r['eager_wall_s']:.3g} "
                   f"| {r['wall_s']:.3g} | {r['wall_s'] / r['eager_wall_s']:.2f} | {r['cpu_s'] / r['eager_cpu_s']:.2f} |")
    out += ["", f"`torch.compile(model, dynamic=False)` with inductor's `freezing` (weights folded as constants, "
            f"oneDNN weight prepacking), on top of the same eager defaults, {res['args']['batch1_seconds']:g} s input, "
            "batch 1; eager and compiled passes interleaved in one process. A ratio below 1 means compiled is faster. "
            "The compile time is paid again for every new input shape.", ""]
    return out
