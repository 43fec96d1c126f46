"""Regenerates ``shipped_outputs.npz``: what the shipped models output on fixed inputs.

``tests/test_shipped_outputs.py`` compares the current code against this file, so a refactor that
changes any shipped model's numbers fails. Rerun this only when a change of the outputs is intended::

    .venv/bin/python tests/data/make_shipped_outputs.py

The file keeps every ``STRIDE``-th output sample (float32) plus each output's sum and energy in float64,
which together catch a change anywhere in the signal while keeping the file small.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "shipped_outputs.npz"
#: The shipped models, by the names ``packaged_model_dir`` takes.
MODELS = ("default", "unpaired", "small")
#: Every STRIDE-th output sample is stored.
STRIDE = 7
#: (name, seconds, sample rate, chunk seconds, overlap seconds): whole signals at the model's rate, and
#: one at another rate in short chunks, which also runs resampling and the cross-fade.
CASES = (
    ("s0.7", 0.7, 16000, None, None),
    ("s1.3", 1.3, 16000, None, None),
    ("s2.05", 2.05, 16000, None, None),
    ("s2.05_22k_chunked", 2.05, 22050, 0.8, 0.2),
)


def make_input(seconds: float, sample_rate: int, seed: int) -> torch.Tensor:
    """A deterministic test signal ``[time]`` float32: a few sinusoids plus white noise.

    Built in float64 from a seeded CPU generator, then rounded to float32, so it is the same on every
    machine.
    """
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * sample_rate))
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    freqs = 100.0 + 3000.0 * torch.rand(5, generator=gen, dtype=torch.float64)
    amps = 0.05 + 0.1 * torch.rand(5, generator=gen, dtype=torch.float64)
    phases = 2 * math.pi * torch.rand(5, generator=gen, dtype=torch.float64)
    sig = (amps[:, None] * torch.sin(2 * math.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    sig = sig + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    return sig.float()


def load(name: str):
    """Shipped model ``name`` in fp32 on the CPU."""
    from upcycle_se.inference import UpCycleEnhancement, packaged_model_dir

    return UpCycleEnhancement.from_hparams(source=packaged_model_dir(name),
                                           run_opts={"device": "cpu", "precision": "fp32"})


def outputs() -> Iterator[Tuple[str, torch.Tensor]]:
    """(key, full output ``[time]`` float32) for every model and case, keys ``<model>/<case>``."""
    for model in MODELS:
        enhancer = load(model)
        for seed, (case, seconds, rate, chunk, overlap) in enumerate(CASES):
            noisy = make_input(seconds, rate, seed)
            out = enhancer.enhance_signal(noisy, rate, chunk_seconds=chunk, overlap_seconds=overlap)
            yield f"{model}/{case}", out


def summarize(out: torch.Tensor) -> Dict[str, np.ndarray]:
    """What the file stores of one output ``[time]``."""
    arr = out.numpy().astype(np.float64)
    return {"samples": out[::STRIDE].numpy().astype(np.float32), "sum": np.float64(arr.sum()),
            "energy": np.float64((arr ** 2).sum()), "length": np.int64(out.numel())}


def main() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    data = {}
    for key, out in outputs():
        for field, value in summarize(out).items():
            data[f"{key}/{field}"] = value
        print(f"{key}: {out.numel()} samples, peak {out.abs().max().item():.4f}", file=sys.stderr)
    data["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
