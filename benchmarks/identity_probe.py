#!/usr/bin/env python3
"""How far trained generators move from the identity map, on the paired test files of a corpus.

For each training run (a recipe output folder), its best-validation checkpoint is loaded and, over the
test files (noisy ``x``, clean ``s``, whole files, fp32):

- ``change``: ``||G_n2c(x) - x|| / ||x - s||``, how much the enhancer changes its input, relative to the
  noise that is there (0: the identity; a perfect enhancer: 1);
- ``snr_gain``: ``10 log10(||x - s||^2 / ||G_n2c(x) - s||^2)`` dB, how much of the noise it takes out;
- ``c2n_snr`` (cycle-GAN runs): ``10 log10(||s||^2 / ||G_c2n(s) - s||^2)`` dB, how much the clean->noisy
  generator adds to clean speech (the training mixtures' SNRs are what it should imitate).

Each figure is a per-file mean with a 95 % CI. Usage::

    python benchmarks/identity_probe.py --corpus WORK/corpus RUN_DIR [RUN_DIR ...] --out probe.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quality import ci95  # noqa: E402
from upcycle_se.audio import read_audio  # noqa: E402
from upcycle_se.export import find_best_checkpoint  # noqa: E402
from upcycle_se.models import UpCycleGenerator  # noqa: E402


def load_generators(run: Path) -> Dict[str, UpCycleGenerator]:
    """``gen_n2c`` (and ``gen_c2n`` where the run trained one) of the best checkpoint, in eval mode; the
    checkpoint is the one ``upcycle-se export`` would pick (complete, best validation score)."""
    best, _, _ = find_best_checkpoint(run)
    ckpt = best.path
    configs = json.loads((run / "save" / "model_config.json").read_text())
    gens = {"gen_n2c": UpCycleGenerator(**configs["gen_n2c"])}
    if "gen_c2n" in configs:  # the recipe records it when the run trains one
        gens["gen_c2n"] = UpCycleGenerator(**configs["gen_c2n"])
    elif (ckpt / "gen_c2n.ckpt").is_file() and (run / "hyperparams.yaml").is_file():
        # runs from before model_config.json recorded it: trained unless supervised L1 only (loss_type l1)
        hp = (run / "hyperparams.yaml").read_text()
        if "\nloss_type: l1\n" not in hp:
            gens["gen_c2n"] = UpCycleGenerator(**{**configs["gen_n2c"], "mode": "map"})
    for name, gen in gens.items():
        gen.load_state_dict(torch.load(ckpt / f"{name}.ckpt", map_location="cpu"))
        gen.eval()
    return gens


def _db(num: float, den: float) -> float:
    return 10.0 * math.log10(max(num, 1e-12) / max(den, 1e-12))


@torch.no_grad()
def probe(run: Path, pairs: Sequence[tuple]) -> Dict[str, Dict[str, float]]:
    """The three figures (see the module docstring) of one run over ``pairs`` of (noisy, clean) paths."""
    gens = load_generators(run)
    rows: Dict[str, List[float]] = {"change": [], "snr_gain": [], "c2n_snr": []}
    for noisy_path, clean_path in pairs:
        x, _ = read_audio(noisy_path)
        s, _ = read_audio(clean_path)
        x, s = x.reshape(1, -1).float(), s.reshape(1, -1).float()
        n = min(x.shape[-1], s.shape[-1])
        x, s = x[:, :n], s[:, :n]
        y = gens["gen_n2c"](x)
        noise = float((x - s).pow(2).sum())
        rows["change"].append(math.sqrt(float((y - x).pow(2).sum()) / max(noise, 1e-12)))
        rows["snr_gain"].append(_db(noise, float((y - s).pow(2).sum())))
        if "gen_c2n" in gens:
            rows["c2n_snr"].append(_db(float(s.pow(2).sum()), float((gens["gen_c2n"](s) - s).pow(2).sum())))
    return {k: ci95(v) for k, v in rows.items() if v}


def test_pairs(corpus: Path, limit: Optional[int] = None) -> List[tuple]:
    """(noisy, clean) test files of a VoiceBank-layout corpus, sorted by name."""
    noisy = sorted((corpus / "noisy_testset_wav").glob("*.wav"))[:limit]
    if not noisy:
        raise SystemExit(f"identity_probe: no wav files in {corpus / 'noisy_testset_wav'}")
    return [(p, corpus / "clean_testset_wav" / p.name) for p in noisy]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="recipe output folders (with save/CKPT+*)")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus with noisy_/clean_testset_wav")
    parser.add_argument("--limit", type=int, default=None, help="first N test files only")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = test_pairs(args.corpus, args.limit)
    results = {}
    print(f"{'run':40s} {'change':>14s} {'snr_gain dB':>14s} {'c2n_snr dB':>14s}   ({len(pairs)} files)")
    for run in args.runs:
        res = probe(run, pairs)
        results[run.name] = {"files": len(pairs), **res}
        cells = [f"{res[k]['mean']:6.3f} ± {res[k]['ci']:.3f}" if k in res else f"{'-':>14s}"
                 for k in ("change", "snr_gain", "c2n_snr")]
        print(f"{run.name:40s} " + " ".join(f"{c:>14s}" for c in cells), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
