#!/usr/bin/env python3
"""PESQ and STOI of a model against its attenuation limit, on validation data only.

Usage::

    python benchmarks/attenuation_limit.py --corpus WORK/corpus [--model default] [--limits none 30 20 15 12 9 6]

Enhances every file of the corpus's *validation* split (the held-out training speakers of
``upcycle_se.data.prepare.prepare_voicebank``, the split the recipes choose checkpoints on; never a test set)
with the model at each attenuation limit (``UpCycleEnhancement.set_max_attenuation_db``; ``none``: no
limit), in fp32, and scores PESQ (wide band) and STOI against the clean files. Writes:

- ``--json`` (default ``benchmarks/attenuation_limit.json``): per-file scores, per-limit means with 95 %
  CIs (Student t over files), and per-file paired differences against no limit, overall and per noise family;
- ``--table`` (default ``benchmarks/attenuation_limit.txt``): the same as text;
- ``--plot`` (default ``docs/attenuation_limit.png``): PESQ and STOI against the limit, with their CIs.

A default is chosen on these numbers only if a limit keeps PESQ within its CI of no limit and raises STOI.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/attenuation_limit.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.quality import ci95, machine_info  # noqa: E402

METRICS = ("pesq", "stoi")
DEFAULT_LIMITS = ("none", "30", "20", "15", "12", "9", "6")


def parse_limit(text: str) -> Optional[float]:
    """``none`` -> None, else a limit in dB (checked: >= 0)."""
    from upcycle_se.models.attenuation import check_max_attenuation_db

    return check_max_attenuation_db(None if str(text).lower() == "none" else float(text))


def validation_files(corpus: Path, prep: Path) -> Dict[str, Dict[str, str]]:
    """``{utterance id: {"noisy", "clean", "spk"}}`` of the corpus's validation split (prepared into ``prep``)."""
    from upcycle_se.data.prepare import prepare_voicebank

    prepare_voicebank(corpus, prep, sample_rate=16000)  # reused when up to date
    entries = json.loads((prep / "valid.json").read_text())
    out = {}
    for uid, e in sorted(entries.items()):
        if "clean_wav" not in e:
            raise SystemExit(f"{prep / 'valid.json'}: {uid} has no clean reference; a paired validation split is needed")
        out[uid] = {k: e[f"{k}_wav"].replace("{data_root}", str(corpus)) for k in ("noisy", "clean")}
        out[uid]["spk"] = e["spk"]
    return out


def noise_families(corpus: Path) -> Dict[str, str]:
    """``{utterance id: noise family}`` of the training half (where the validation speakers come from)."""
    path = corpus / "logfiles" / "log_trainset.txt"
    if not path.is_file():
        return {}
    return {p[0]: p[1] for p in (line.split() for line in path.read_text().splitlines()) if len(p) >= 3}


def measure(model: str, files: Dict[str, Dict[str, str]], limits: Sequence[Optional[float]], log=print
            ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{limit label: {utterance id: {metric: value}}}``: each file enhanced at each limit and scored."""
    from upcycle_se.audio import load_mono
    from upcycle_se.cli.enhance import load_enhancer
    from upcycle_se.metrics.stats import score_pair

    enhancer = load_enhancer(model, "cpu", "fp32")
    rows: Dict[str, Dict[str, Dict[str, float]]] = {label(x): {} for x in limits}
    for i, (uid, f) in enumerate(files.items()):
        noisy = load_mono(f["noisy"], 16000)
        clean = load_mono(f["clean"], 16000).numpy()
        for limit in limits:
            enhancer.set_max_attenuation_db(limit)
            out = enhancer.enhance_batch(noisy[None])[0].numpy()
            rows[label(limit)][uid] = score_pair(clean, out, METRICS)
        if (i + 1) % 10 == 0 or i + 1 == len(files):
            log(f"{i + 1}/{len(files)} files")
    enhancer.set_max_attenuation_db(None)
    return rows


def label(limit: Optional[float]) -> str:
    return "none" if limit is None else f"{limit:g}"


def summarize(rows: Dict[str, Dict[str, Dict[str, float]]], families: Dict[str, str]) -> Dict:
    """Means ± 95 % CI per limit, and paired differences (limit minus no limit), overall and per family."""
    base = rows.get("none")
    groups = {"all": sorted(next(iter(rows.values())))}
    for uid in groups["all"]:
        if uid in families:
            groups.setdefault(families[uid], []).append(uid)
    out = {}
    for group, uids in groups.items():
        out[group] = {}
        for lab, r in rows.items():
            cell = {"n": len(uids)}
            for m in METRICS:
                cell[m] = ci95([r[u][m] for u in uids])
                if base is not None:
                    cell[f"{m}_vs_none"] = ci95([r[u][m] - base[u][m] for u in uids])
            out[group][lab] = cell
    return out


def render_table(summary: Dict, meta: Dict) -> str:
    lines = [f"Attenuation limit against PESQ and STOI: model `{meta['model']}`, validation split of {meta['corpus']} "
             f"({meta['n_files']} files, speakers {', '.join(meta['speakers'])}), fp32, whole files.",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores (shared); {meta['date']}.",
             "Mean ± 95 % CI (Student t over files); 'vs none': per-file paired difference against no limit.", ""]
    for group, cells in summary.items():
        n = next(iter(cells.values()))["n"]
        lines += [f"[{group}] ({n} files)",
                  f"{'limit dB':>9} | {'PESQ':>13} | {'STOI':>15} | {'PESQ vs none':>15} | {'STOI vs none':>17}"]
        for lab, c in cells.items():
            def fmt(s, d):
                return "n/a" if not math.isfinite(s["mean"]) else (
                    f"{s['mean']:.{d}f} ± {s['ci']:.{d}f}" if math.isfinite(s["ci"]) else f"{s['mean']:.{d}f}")

            def diff(s, d):
                return "" if s is None or not math.isfinite(s["mean"]) else (
                    f"{s['mean']:+.{d}f} ± {s['ci']:.{d}f}" if math.isfinite(s["ci"]) else f"{s['mean']:+.{d}f}")
            lines.append(f"{lab:>9} | {fmt(c['pesq'], 3):>13} | {fmt(c['stoi'], 4):>15} | "
                         f"{diff(c.get('pesq_vs_none'), 3):>15} | {diff(c.get('stoi_vs_none'), 4):>17}")
        lines.append("")
    return "\n".join(lines)


def plot(summary: Dict, path: Path, title: str) -> None:
    """PESQ and STOI against the limit (top: mean ± 95 % CI; bottom: paired difference against no limit),
    limits increasing to the right and no limit last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summary["all"]
    labels = sorted(cells, key=lambda k: math.inf if k == "none" else float(k))
    xs = np.arange(len(labels))
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True)
    for col, (m, name) in enumerate(zip(METRICS, ("PESQ (wide band)", "STOI"))):
        for row, (key, what) in enumerate(((m, name), (f"{m}_vs_none", f"{name} minus no limit"))):
            ax = axes[row, col]
            if any(key not in cells[k] for k in labels):
                ax.set_visible(False)
                continue
            ax.errorbar(xs, [cells[k][key]["mean"] for k in labels], yerr=[cells[k][key]["ci"] for k in labels],
                        marker="o", capsize=3)
            if row == 1:
                ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
            ax.set_xticks(xs, [f"{k} dB" if k != "none" else "none" for k in labels])
            if row == 1:
                ax.set_xlabel("attenuation limit")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(meta: Dict) -> str:
    return (f"model `{meta['model']}`, validation files of the `{Path(meta['corpus']).parent.name}` work folder's "
            f"corpus ({meta['n_files']}, speakers {', '.join(meta['speakers'])}): mean ± 95 % CI over files")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus in the VoiceBank-DEMAND layout")
    parser.add_argument("--prep", type=Path, default=None, help="its prepared manifests (default CORPUS/../prep)")
    parser.add_argument("--model", default="default", help="a packaged model's name or a model folder")
    parser.add_argument("--limits", nargs="+", default=list(DEFAULT_LIMITS), help="limits in dB; none: no limit")
    parser.add_argument("--max-files", type=int, default=None, help="the first N validation files only")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "attenuation_limit.json")
    parser.add_argument("--table", type=Path, default=REPO / "benchmarks" / "attenuation_limit.txt")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "attenuation_limit.png")
    parser.add_argument("--render-only", action="store_true", help="rewrite the table and plot from --json")
    args = parser.parse_args(argv)
    if args.render_only:
        saved = json.loads(args.json.read_text())
        args.table.write_text(render_table(saved["summary"], saved["meta"]) + "\n")
        plot(saved["summary"], args.plot, _title(saved["meta"]))
        return 0

    corpus = args.corpus.absolute()
    prep = (args.prep or corpus.parent / "prep").absolute()
    limits = [parse_limit(x) for x in args.limits]
    files = validation_files(corpus, prep)
    if args.max_files:
        files = dict(list(files.items())[: args.max_files])
    t0 = time.perf_counter()
    rows = measure(args.model, files, limits)
    summary = summarize(rows, noise_families(corpus))
    meta = {"model": args.model, "corpus": str(corpus), "n_files": len(files),
            "speakers": sorted({f["spk"] for f in files.values()}), "limits": [label(x) for x in limits],
            "machine": machine_info(), "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "minutes": (time.perf_counter() - t0) / 60,
            "command": " ".join(["python", "benchmarks/attenuation_limit.py", *(sys.argv[1:] if argv is None else argv)])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    text = render_table(summary, meta)
    args.table.write_text(text + "\n")
    plot(summary, args.plot, _title(meta))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
