"""``python -m benchmarks.speed``: the command line (see :mod:`benchmarks.speed`), and the ``--worker`` entry
point the measurements run in."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

import benchmarks.speed
from benchmarks.speed import inference, precision, training
from benchmarks.speed.common import (BEGIN, DEFAULT_RESULTS, END, MODELS, Runner, machine_info, mem_available_mb,
                                     write_compile_results, write_precision_results, write_results)

WORKERS = {**inference.WORKERS, **precision.WORKERS, **training.WORKERS}


def run_worker(cfg_json: str) -> None:
    cfg = json.loads(cfg_json)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    result = WORKERS[cfg["kind"]](cfg)
    print("@@RESULT@@" + json.dumps(result), flush=True)


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs every part selected by ``args``; returns the raw results (also what the section is made of)."""
    run = Runner(verbose=not args.silent)
    res: Dict[str, Any] = {"machine": machine_info(), "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                           "load_start": os.getloadavg(), "args": vars(args).copy()}
    res["args"].pop("results", None)
    cuda = torch.cuda.is_available() and not args.no_gpu
    res["cuda"] = cuda
    res["mem_available_mb"] = mem_available_mb()
    run.log("peak GEMM")
    inference.measure_peak(res, args, cuda)
    run.log("parameters and MACs")
    res["info"] = inference.worker_info({"models": list(args.models)})
    inference.run_inference(res, args, run, cuda)
    if args.precision:
        res["precision"] = precision.run_precision_part(args, run)
    training.run_training(res, args, run, cuda)
    inference.measure_peak(res, args, False)  # again: the table keeps the better of the two measurements
    res["load_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - run.t_start
    return res


def render(res: Dict[str, Any], command: str) -> str:
    """The markdown section (between the speed markers)."""
    m = res["machine"]
    load = res["load_start"]
    lines = [BEGIN, "## Speed", "",
             f"Measured {res['started']} with `{command}` (total {res['total_s'] / 60:.1f} min) on **{m['cpu']}**, "
             f"{m['cores']} cores, {m['mem_gb']:.0f} GB RAM, torch {m['torch']}, Python {m['python']}; "
             f"GPU: {m['gpu'] or 'none'}. The machine is shared with other jobs: 1-min load average "
             f"{load[0]:.1f} at the start, {res['load_end'][0]:.1f} at the end, and per configuration in the "
             "tables (`load`); with 2 cores, a load above ~2 means the timed process did not have its threads' "
             "cores to itself, so wall-clock figures are pessimistic there (CPU seconds are less affected).", ""]
    lines += inference.inference_lines(res)
    if res.get("precision"):
        lines += precision.precision_lines(res) + [""]
    lines += training.train_lines(res)
    lines += ["", END]
    return "\n".join(lines) + "\n"


# ============================================================================ CLI

def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v]


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def _names(text: str) -> List[str]:
    names = [v for v in text.split(",") if v]
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown model(s) {bad}; choose from {', '.join(MODELS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=benchmarks.speed.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller grid, fewer repeats, no compile (~6 min)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file whose speed section to rewrite")
    p.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    p.add_argument("--json", type=Path, default=None, help="also save the raw results here")
    p.add_argument("--silent", action="store_true", help="no progress log")
    p.add_argument("--models", type=_names, default=None,
                   help=f"comma list of {','.join(MODELS)} (default: {','.join(n for n, m in MODELS.items() if m.grid)})")
    p.add_argument("--threads", type=_ints, default=None, help="CPU thread counts (default 1,2)")
    p.add_argument("--durations", type=_floats, default=None, help="input lengths in seconds (default 1,10,60)")
    p.add_argument("--batches", type=_ints, default=None, help="batch sizes (default 1,16)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per configuration (default 3)")
    p.add_argument("--mem-cap-gb", type=float, default=16.0,
                   help="skip configurations predicted above this peak RSS (or above 60 %% of free memory)")
    p.add_argument("--time-cap", type=float, default=None, help="skip configurations predicted to take longer (s)")
    p.add_argument("--gemm-n", type=int, default=2048)
    p.add_argument("--alloc-models", "--ladder-models", dest="alloc_models", type=_names, default=None,
                   help="models timed with the default and the opt-in allocator (default paper,small; quick: paper)")
    p.add_argument("--alloc-pairs", type=int, default=None,
                   help="process pairs default / keep_freed_memory (0: skip)")
    p.add_argument("--batch1-seconds", "--ladder-seconds", dest="batch1_seconds", type=float, default=None,
                   help="input of the allocator and torch.compile measurements (batch 1, default 4)")
    p.add_argument("--batch1-repeats", "--ladder-repeats", dest="batch1_repeats", type=int, default=None,
                   help="timed passes per process of those measurements")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="time torch.compile too (default: on, off with --quick)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-models", type=_names, default=None)
    p.add_argument("--train-models", type=lambda t: [v for v in t.split(",") if v], default=None)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-seconds", type=float, default=2.0)
    p.add_argument("--train-steps", type=str, default=None, help="e.g. paper=2,small=4")
    p.add_argument("--no-data", dest="data", action="store_false")
    p.add_argument("--data-batches", type=int, default=24)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--no-gpu", action="store_true", help="CPU only even when a GPU is present")
    p.add_argument("--no-precision", dest="precision", action="store_false", help="skip the fp32 / bf16 part")
    p.add_argument("--precision-only", action="store_true",
                   help="run only the fp32 / bf16 part and rewrite only its subsection of the speed section")
    p.add_argument("--precision-models", type=_names, default=None, help="generators timed in both precisions "
                   f"(default {','.join(n for n, m in MODELS.items() if m.precision)})")
    p.add_argument("--precision-seconds", type=float, default=None, help="input of those passes (default 4, quick 1)")
    p.add_argument("--precision-rounds", type=int, default=3, help="interleaved fp32 / bf16 rounds")
    p.add_argument("--compile-precision-only", action="store_true",
                   help="only the bf16 + torch.compile part (generators and the packaged default through the "
                        "interface, at the largest --threads), rewriting just its subsection")
    p.add_argument("--compile-precision-models", type=_names, default=None,
                   help="generators of that part (default: as --precision-models)")
    p.add_argument("--enhance-seconds", type=float, default=10.0,
                   help="file length for the packaged model through `upcycle-se enhance`")
    p.add_argument("--pesq-files", type=int, default=120,
                   help="benchmark test files scored with PESQ in fp32 and bf16 (0: skip)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    args.models = args.models or [n for n, m in MODELS.items() if m.grid]
    args.threads = args.threads or [1, 2]
    args.durations = args.durations or ([1.0, 10.0] if quick else [1.0, 10.0, 60.0])
    args.batches = args.batches or ([1, 16] if not quick else [1, 4])
    args.repeats = args.repeats or (2 if quick else 3)
    args.time_cap = args.time_cap or (30.0 if quick else 150.0)
    args.alloc_models = args.alloc_models or ["paper"] + ([] if quick else ["small"])
    args.alloc_pairs = (1 if quick else 2) if args.alloc_pairs is None else args.alloc_pairs
    args.batch1_seconds = args.batch1_seconds or 4.0
    args.batch1_repeats = args.batch1_repeats or (2 if quick else 3)
    args.compile_models = args.compile_models or ["paper"]
    if args.compile is None:
        args.compile = not quick
    args.train_models = args.train_models or ["small", "paper"]
    steps = {"small": 2, "paper": 1} if quick else {"small": 3, "paper": 2}
    if args.train_steps:
        steps.update({k: int(v) for k, v in (kv.split("=") for kv in args.train_steps.split(","))})
    args.train_steps = steps
    args.precision_models = args.precision_models or [n for n, m in MODELS.items() if m.precision]
    args.precision_seconds = args.precision_seconds or (1.0 if quick else 4.0)
    args.compile_precision_models = args.compile_precision_models or list(args.precision_models)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return {}
    args = resolve_defaults(args)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.speed"] + [shlex.quote(a) for a in given])
    if args.compile_precision_only:
        run = Runner(verbose=not args.silent)
        res = {"machine": machine_info(), "compile_precision": precision.run_compile_part(args, run)}
        res["total_s"] = time.perf_counter() - run.t_start
        section = "\n".join(precision.compile_precision_lines(res, command)) + "\n"
        return _publish(args, res, section, write_compile_results, "bf16 + torch.compile subsection")
    if args.precision_only:
        run = Runner(verbose=not args.silent)
        res = {"machine": machine_info(), "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
               "precision": precision.run_precision_part(args, run)}
        res["total_s"] = time.perf_counter() - run.t_start
        lines = precision.precision_lines(res)
        lines.insert(-1, f"_This subsection alone: `{command}` ({res['total_s'] / 60:.1f} min)._")
        lines.insert(-1, "")
        return _publish(args, res, "\n".join(lines) + "\n", write_precision_results, "precision subsection")
    res = run_benchmark(args)
    return _publish(args, res, render(res, command), write_results, "speed section")


def _publish(args: argparse.Namespace, res: Dict, section: str, write, what: str) -> Dict:
    """Writes ``res`` as JSON where asked, and ``section`` into the results file (or prints it)."""
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.no_write:
        print(section)
    else:
        write(args.results, section)
        if not args.silent:
            print(f"wrote the {what} of {args.results}")
    return res


if __name__ == "__main__":
    main()
