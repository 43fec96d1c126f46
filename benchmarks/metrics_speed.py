"""How fast the folder evaluator scores files, with 1 and 2 worker processes.

Makes 100 clean/enhanced pairs of 3 s at 16 kHz under benchmarks/work/metrics_speed/ (flite speech if flite
is installed, else a synthetic speech-like signal; the "enhanced" file is the clean one plus white noise
at 5-25 dB SNR), scores them with :func:`upcycle_se.metrics.evaluate_folders` (PESQ, STOI, CSIG, CBAK,
COVL, segSNR: what ``upcycle-se evaluate`` computes), and prints/writes files per second to
benchmarks/metrics_speed.txt. The 2-job figure is given cold (including starting the worker processes,
as a single CLI run pays it) and warm (workers already started, as in later validation epochs).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/metrics_speed.py [--files 100] [--seconds 3]``
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from upcycle_se.audio import read_audio, resample_audio  # noqa: E402
from upcycle_se.metrics import evaluate_folders  # noqa: E402

HERE = Path(__file__).resolve().parent
SR = 16000
SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.",
    "The rainbow is a division of white light into many beautiful colors.",
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "There is, according to legend, a boiling pot of gold at one end.",
    "People look, but no one ever finds it.",
    "The north wind and the sun were disputing which was the stronger.",
    "A traveller came along wrapped in a warm cloak.",
]


def make_files(folder: Path, n_files: int, seconds: float) -> None:
    """Writes ``n_files`` clean/enhanced pairs of ``seconds`` into folder/clean and folder/enhanced."""
    clean_dir, enh_dir = folder / "clean", folder / "enhanced"
    if clean_dir.is_dir() and len(list(clean_dir.glob("*.wav"))) == n_files:
        return
    shutil.rmtree(folder, ignore_errors=True)
    clean_dir.mkdir(parents=True)
    enh_dir.mkdir()
    rng = np.random.RandomState(0)
    n = int(seconds * SR)
    sources = _speech_sources(folder)
    for i in range(n_files):
        src = sources[i % len(sources)]
        start = rng.randint(0, max(1, src.size - n))
        x = np.resize(src[start:], n).astype(np.float64)  # loops short sources up to the length
        noise = rng.randn(n)
        snr = rng.uniform(5, 25)
        noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2) / 10 ** (snr / 10))
        sf.write(clean_dir / f"u{i:03d}.wav", x, SR, subtype="PCM_16")
        sf.write(enh_dir / f"u{i:03d}.wav", np.clip(x + noise, -1, 1), SR, subtype="PCM_16")


def _speech_sources(folder: Path) -> list:
    if shutil.which("flite"):
        out = []
        for j, text in enumerate(SENTENCES):
            path = folder / f"flite_{j}.wav"
            subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True, capture_output=True)
            sig, sr = read_audio(path)
            out.append(resample_audio(sig, sr, SR).numpy())
            path.unlink()
        return out
    t = np.arange(4 * SR) / SR  # fallback: harmonics of a gliding f0 with syllabic envelope
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.5 * t)) / SR
    voiced = sum(np.sin(h * phase) / h for h in range(1, 25)) * np.clip(np.sin(2 * np.pi * 2 * t), 0, None)
    return [0.3 * voiced / np.abs(voiced).max()]


def timed(folder: Path, n_jobs: int) -> float:
    start = time.perf_counter()
    result = evaluate_folders(folder / "clean", folder / "enhanced", n_jobs=n_jobs)
    elapsed = time.perf_counter() - start
    assert len(result.files) == len(result.enhanced)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    folder = HERE / "work" / "metrics_speed"
    make_files(folder, args.files, args.seconds)
    timed(folder, 1)  # warms the file cache and lazy imports; not counted
    t2_cold = timed(folder, 2)
    # interleaved best-of-3, so that a burst of load from other processes hits both settings alike
    runs = {1: [], 2: []}
    for _ in range(3):
        for jobs in (1, 2):
            runs[jobs].append(timed(folder, jobs))
    t1, t2_warm = min(runs[1]), min(runs[2])
    n = args.files
    lines = [
        f"metrics_speed: {n} files of {args.seconds:g} s at 16 kHz; PESQ-WB, STOI, CSIG, CBAK, COVL, segSNR "
        "(upcycle_se.metrics.evaluate_folders, reading included)",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average before the run "
        f"{load:.1f} (a shared machine makes these figures noisy)",
        f"n_jobs=1:        {t1:6.2f} s  {n / t1:6.1f} files/s  (best of 3)",
        f"n_jobs=2 (cold): {t2_cold:6.2f} s  {n / t2_cold:6.1f} files/s  (includes starting 2 worker processes)",
        f"n_jobs=2 (warm): {t2_warm:6.2f} s  {n / t2_warm:6.1f} files/s  speed-up {t1 / t2_warm:.2f}x (best of 3)",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (HERE / "metrics_speed.txt").write_text(text)


if __name__ == "__main__":
    main()
