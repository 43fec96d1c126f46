"""Enhancing a folder of many short files and one long file in one `upcycle-se enhance` call, under load.

Writes, under benchmarks/work/reliability_load/, ``--short`` short files (``--short-seconds`` long: 60 %
16 kHz mono int16 wav, 20 % 44.1 kHz stereo flac, 20 % 8 kHz float wav, in two sub-folders), one
``--long-minutes`` 16 kHz mono file, three broken files (corrupt header, zero samples, a NaN sample) and a
text file that is not audio. A child process enhances one 20 s file (warm-up: model, allocator, a full
batch of chunks), notes its peak RSS (VmHWM), then enhances the whole folder with the CLI and notes the
peak again. Then it
checks that every input got an output of exactly its length, rate and channel count, and that the summary
accounts for every input (done + skipped + failed, with reasons). The model is a random-init small
generator exported like a recipe's (speed and memory do not depend on the weights) unless ``--model``.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/reliability_load.py [--short 500] [--long-minutes 10]``;
prints the figures and writes them to benchmarks/reliability_load.txt. tests/reliability uses the same
functions at a smaller size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
BROKEN = {"broken/corrupt.wav": "cannot be read as audio", "broken/empty.wav": "empty audio",
          "broken/nan.wav": "contains NaN or infinite samples"}

# Child process: an optional warm-up folder, then PASSES enhancements of the folder (pass k > 1 into
# OUT.pass<k>); prints the figures (MiB, s) as JSON on its last stdout line, "--- pass k" lines on stderr.
# VmRSS_live is the RSS once glibc has returned its free heap pages (malloc_trim): what is still in use.
CHILD = r"""
import ctypes, gc, json, sys, time
from upcycle_se.cli import main

def mem_mib():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    out = {k: int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS")}
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    out["VmRSS_live"] = int(fields["VmRSS"].split()[0]) / 1024
    return out

warm, folder, out, model, passes = sys.argv[1:6]
extra = sys.argv[6:]
figures = {"passes": []}
if warm:
    main(["enhance", warm, "-o", out + ".warmup", "--model", model, *extra])
figures["warm"] = mem_mib()
for k in range(1, int(passes) + 1):
    print(f"--- pass {k}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    rc = main(["enhance", folder, "-o", out if k == 1 else f"{out}.pass{k}", "--model", model, *extra])
    figures["passes"].append({"rc": rc, "wall_s": time.perf_counter() - start, **mem_mib()})
print(json.dumps(figures))
"""


def make_model(folder: Path, seed: int = 0) -> Path:
    """A model folder exported from a fake recipe save folder holding a random small generator."""
    import torch
    from speechbrain.utils.checkpoints import Checkpointer

    from upcycle_se.export import export_model
    from upcycle_se.models import UpCycleGenerator

    out = folder / "model"
    if (out / "generator.ckpt").is_file():
        return out
    torch.manual_seed(seed)
    gen = UpCycleGenerator.from_preset("small")
    save = folder / "recipe" / "save"
    Checkpointer(save, {"gen_n2c": gen}).save_checkpoint(meta={"pesq": 1.0})
    (save / "model_config.json").write_text(json.dumps({"gen_n2c": gen.config, "sample_rate": 16000}))
    return export_model(save, out, overwrite=True).folder


def _signal(n: int, channels: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like ``[n, channels]`` float32: a gliding harmonic tone with a 4 Hz envelope, plus noise."""
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    voiced = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / sr) / k for k in range(1, 8) if k * 150 < sr / 2)
    sig = 0.2 * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2 * voiced + 0.02 * rng.standard_normal(n)
    return np.repeat(sig[:, None], channels, axis=1).astype(np.float32)


def make_inputs(folder: Path, n_short: int, short_seconds: Tuple[float, float], long_seconds: float,
                seed: int = 0) -> Dict[str, int]:
    """Writes the input folder (see the module docstring); returns counts of what it holds."""
    rng = np.random.default_rng(seed)
    if folder.exists():
        shutil.rmtree(folder)
    kinds = [("a", 16000, 1, "wav", "PCM_16")] * 3 + [("b", 44100, 2, "flac", "PCM_16"),
                                                       ("c", 8000, 1, "wav", "FLOAT")]
    samples = 0
    for i in range(n_short):
        sub, sr, ch, ext, subtype = kinds[i % len(kinds)]
        n = int(rng.uniform(*short_seconds) * sr)
        path = folder / sub / f"short{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _signal(n, ch, sr, rng), sr, subtype=subtype)
        samples += n
    with sf.SoundFile(folder / "long.wav", "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
        for start in range(0, int(long_seconds * 16000), 160000):  # written in 10 s blocks
            f.write(_signal(min(160000, int(long_seconds * 16000) - start), 1, 16000, rng))
    (folder / "broken").mkdir()
    (folder / "broken" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + rng.bytes(64))
    sf.write(folder / "broken" / "empty.wav", np.zeros(0, np.float32), 16000)
    bad = _signal(8000, 1, 16000, rng)
    bad[4000] = np.nan
    sf.write(folder / "broken" / "nan.wav", bad, 16000, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio: never an input")
    return {"short": n_short, "long": 1, "broken": len(BROKEN), "audio": n_short + 1 + len(BROKEN)}


def make_warmup(folder: Path, seconds: float = 20.0) -> Path:
    """One file of each input kind, ``seconds`` long: enhancing them reaches the steady-state peak (a full
    batch of chunks at each rate and channel count, the resamplers built)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name, sr, ch, subtype in (("a.wav", 16000, 1, "PCM_16"), ("b.flac", 44100, 2, "PCM_16"),
                                  ("c.wav", 8000, 1, "FLOAT")):
        sf.write(folder / name, _signal(int(seconds * sr), ch, sr, rng), sr, subtype=subtype)
    return folder


def run_enhance(inputs: Path, out: Path, model: Path, passes: int = 1, warmup: bool = True,
                extra: Sequence[str] = (), timeout: Optional[float] = None) -> dict:
    """Runs the CLI on ``inputs`` in a child process (see CHILD).

    Returns ``{"warm": {"VmHWM", "VmRSS", "VmRSS_live"}, "passes": [{"rc", "wall_s", "VmHWM", "VmRSS",
    "VmRSS_live", "summary", "failures"}]}``: memory in MiB after the warm-up and after each pass (peak,
    resident, resident once free heap pages are returned), the pass's summary line and failure lines.
    """
    warm = make_warmup(out.parent / f"{out.name}.warmup_input") if warmup else ""
    # A fixed mmap threshold makes RSS follow live buffers, not glibc's heap fragmentation.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    res = subprocess.run([sys.executable, "-c", CHILD, str(warm), str(inputs), str(out), str(model), str(passes),
                          *extra], capture_output=True, text=True, env=env, timeout=timeout)
    if not res.stdout.strip():
        raise RuntimeError(f"enhance child failed (rc {res.returncode}): {res.stderr[-2000:]}")
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    summaries = [line for line in res.stdout.splitlines() if line.startswith("upcycle-se enhance: ")]
    stderr_passes = res.stderr.split("--- pass ")[1:]
    for k, info in enumerate(figures["passes"]):
        info["summary"] = summaries[k - len(figures["passes"])]
        info["failures"] = [line for line in stderr_passes[k].splitlines()
                            if line.startswith("upcycle-se enhance: failed:")]
    return figures


def parse_summary(line: str) -> Dict[str, object]:
    """``{"done", "skipped", "failed", "reasons": {reason: n}}`` from the CLI's summary line."""
    m = re.match(r"upcycle-se enhance: (\d+) done, (\d+) skipped(?: \(.*?\))?, (\d+) failed(?: \((.*)\))? -> ", line)
    if not m:
        raise ValueError(f"not a summary line: {line!r}")
    reasons = {}
    for part in (m.group(4) or "").split(", ") if m.group(4) else []:
        n, reason = part.split(" ", 1)
        reasons[reason] = int(n)
    return {"done": int(m.group(1)), "skipped": int(m.group(2)), "failed": int(m.group(3)), "reasons": reasons}


def check_outputs(inputs: Path, out: Path) -> Tuple[int, List[str]]:
    """(outputs checked, problems): every readable input's output has its frames, rate and channels."""
    problems, checked = [], 0
    for src in sorted(inputs.rglob("*")):
        rel = src.relative_to(inputs)
        if not src.is_file() or src.suffix == ".txt" or rel.as_posix() in BROKEN:
            continue
        dst = out / rel
        if not dst.is_file():
            problems.append(f"{rel}: no output")
            continue
        a, b = sf.info(str(src)), sf.info(str(dst))
        if (a.frames, a.samplerate, a.channels) != (b.frames, b.samplerate, b.channels):
            problems.append(f"{rel}: {b.frames} frames at {b.samplerate} Hz x {b.channels}, "
                            f"input {a.frames} at {a.samplerate} x {a.channels}")
        checked += 1
    return checked, problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=500, help="number of short files (default 500)")
    parser.add_argument("--short-seconds", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"))
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: random small model)")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "reliability_load")
    parser.add_argument("--out", type=Path, default=HERE / "reliability_load.txt")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or make_model(args.work)
    inputs, out = args.work / "noisy", args.work / "enhanced"
    for stale in args.work.glob(f"{out.name}*"):  # outputs, warm-up and second-pass folders of a past run
        shutil.rmtree(stale, ignore_errors=True)
    counts = make_inputs(inputs, args.short, tuple(args.short_seconds), args.long_minutes * 60)
    audio_s = sum(sf.info(str(p)).duration for p in inputs.rglob("*.*")
                  if p.suffix != ".txt" and p.relative_to(inputs).as_posix() not in BROKEN)
    figures = run_enhance(inputs, out, model, passes=2)
    warm, first, second = figures["warm"], figures["passes"][0], figures["passes"][1]
    summary = parse_summary(first["summary"])
    checked, problems = check_outputs(inputs, out)
    again = run_enhance(inputs, out, model, warmup=False)["passes"][0]
    rerun = parse_summary(again["summary"])

    lines = [
        f"reliability_load: one `upcycle-se enhance` call over {counts['audio']} audio files "
        f"({counts['short']} short of {args.short_seconds[0]:g}-{args.short_seconds[1]:g} s, "
        f"1 of {args.long_minutes:g} min, {counts['broken']} broken) + 1 text file",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end; model: "
        f"{'random-init small generator' if args.model is None else args.model}",
        f"audio enhanced: {audio_s / 60:.1f} min in {first['wall_s']:.1f} s wall "
        f"(real-time factor {first['wall_s'] / audio_s:.3f}, {counts['audio'] / first['wall_s']:.1f} files/s)",
        f"peak RSS (VmHWM): {warm['VmHWM']:.0f} MiB after the warm-up (20 s of each input kind), "
        f"{first['VmHWM']:.0f} MiB after the folder (+{first['VmHWM'] - warm['VmHWM']:.0f} MiB; the long "
        f"file alone is {args.long_minutes * 60 * 16000 * 4 / 2 ** 20:.0f} MiB as float32)",
        f"RSS after: warm-up {warm['VmRSS']:.0f} MiB, folder {first['VmRSS']:.0f} MiB, the folder again "
        f"{second['VmRSS']:.0f} MiB; in use (after malloc_trim): {warm['VmRSS_live']:.0f}, "
        f"{first['VmRSS_live']:.0f}, {second['VmRSS_live']:.0f} MiB "
        f"({second['VmRSS_live'] - first['VmRSS_live']:+.1f} MiB for a second pass: nothing retained per file)",
        f"summary: {first['summary']}",
        f"accounting: {summary['done']} done + {summary['skipped']} skipped + {summary['failed']} failed = "
        f"{summary['done'] + summary['skipped'] + summary['failed']} of {counts['audio']} audio inputs; "
        f"{len(first['failures'])} failure line(s) on stderr",
        f"outputs checked (frames, rate, channels equal to the input's): {checked}, problems: {len(problems)}"
        + (f" ({'; '.join(problems[:3])})" if problems else ""),
        f"rerun: {again['summary']} ({again['wall_s']:.1f} s)",
    ]
    ok = (summary["done"] == counts["audio"] - counts["broken"] and summary["failed"] == counts["broken"]
          and not problems and rerun["skipped"] == summary["done"] and rerun["done"] == 0)
    lines.append(f"result: {'OK' if ok else 'PROBLEM'}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
