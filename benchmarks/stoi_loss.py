#!/usr/bin/env python3
"""Where STOI is lost: per-file PESQ and STOI of enhancers on real-voice sets, broken down by noise family,
SNR and clip (the speaker proxy: one real speaker, eight phrases), against the noisy input and each reference.

Usage::

    upcycle-se build-corpus /work/runs/hardvoice/realvoice_hard --preset realvoice_hard
    upcycle-se build-corpus /work/runs/hardvoice/realvoice --preset realvoice
    nice -n 19 python benchmarks/stoi_loss.py [--work /work/runs/hardvoice] [--sets realvoice_hard realvoice]
        [--systems noisy default unpaired mmse_lsa rnnoise webrtc noisereduce] [--model NAME=FOLDER ...]
        [--score-only | --render-only]

Every noisy file of each set (a folder in the real-voice layout of ``upcycle_se.corpus.realvoice``, under
``--work``) is enhanced by each system and scored (wide-band PESQ and STOI against the clean file, float
output clipped to [-1, 1], not written to disk): ``noisy`` is the input itself; ``default`` and ``unpaired``
the packaged models as shipped (their folders' own attenuation limits: 20 dB for ``default``), fp32 on the
CPU, whole files; ``mmse_lsa`` the classical baseline of ``benchmarks/baselines.py``; ``rnnoise``,
``webrtc`` and ``noisereduce`` the peers of ``benchmarks/peers.py``; ``--model NAME=FOLDER`` adds any exported
model folder (a candidate model, with its folder's attenuation limit) as system ``NAME``. Per-file scores are cached in
``WORK/stoi_loss/<set>/<system>.json`` (keyed by the set's build config), so a rerun only scores what is
missing.

The breakdown (:func:`breakdown`) gives, overall, per noise family, per SNR, per clip and per family x SNR:
each system's per-file mean with its 95 % CI (Student t, ``benchmarks.quality.ci95``), its per-file paired
difference against the noisy input, and each model's paired differences against MMSE-LSA and each peer
(``benchmarks.quality._paired_diff``). Writes ``--json`` (default ``benchmarks/stoi_loss.json``: rows,
breakdowns, machine) and ``--table`` (default ``benchmarks/stoi_loss.txt``: markdown tables).

One real speaker, 8 short phrases: a check of where intelligibility is lost, not a benchmark of real speech.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/stoi_loss.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.quality import _paired_diff, ci95, machine_info  # noqa: E402

Rows = Dict[str, Dict[str, float]]  # {file stem: {metric: value}}

METRICS = ("pesq", "stoi")
BASE = "noisy"
MODELS = ("default", "unpaired")
REFERENCES = ("mmse_lsa", "rnnoise", "webrtc", "noisereduce")
SYSTEMS = (BASE, *MODELS, *REFERENCES)
LABELS = {"noisy": "Noisy input", "default": "default (20 dB limit)", "unpaired": "unpaired",
          "mmse_lsa": "MMSE-LSA", "rnnoise": "RNNoise", "webrtc": "WebRTC NS", "noisereduce": "noisereduce"}
GROUPINGS = ("all", "family", "snr", "clip", "family_snr")
DEFAULT_WORK = Path("/work/runs/hardvoice")
DEFAULT_SETS = ("realvoice_hard", "realvoice")
CACHE_DIR = "stoi_loss"
SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------ set
def set_labels(root: Path) -> Dict[str, Dict[str, str]]:
    """``{file stem: {"family", "snr", "clip", "family_snr"}}`` of a real-voice set, from its log.

    The stem is ``<clip>_<family>_<SNR x 10>`` (``upcycle_se.corpus.realvoice.realvoice_name``); the SNR is
    kept as written in the log (``"2.5"``), the clip lower-case (``front_center``).
    """
    log = Path(root) / "logfiles" / "log_testset.txt"
    if not log.is_file():
        raise SystemExit(f"{root}: not a real-voice set (no {log.relative_to(root)}); build it with "
                         "`upcycle-se build-corpus OUT --preset realvoice_hard` (or realvoice)")
    out = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        stem, family, snr = line.split()
        suffix = f"_{family}_{int(round(float(snr) * 10)):03d}"
        if not stem.endswith(suffix):
            raise SystemExit(f"{log}: {stem!r} does not end with {suffix!r}")
        out[stem] = {"family": family, "snr": snr, "clip": stem[: -len(suffix)], "family_snr": f"{family} @ {snr}"}
    return out


def set_info(root: Path) -> Dict:
    """The set's ``realvoice_info.json`` (its ``config`` keys the score caches)."""
    return json.loads((Path(root) / "realvoice_info.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ systems
def make_enhancer(name: str, work: Path, folders: Optional[Dict[str, Path]] = None
                  ) -> Callable[[np.ndarray], np.ndarray]:
    """``f(noisy [time] float64 at 16 kHz) -> enhanced [time]`` for one system name (``folders``: the model
    folders of ``--model`` systems)."""
    folders = folders or {}
    if name == BASE:
        return lambda x: x
    if name in MODELS or name in folders:
        import torch

        from upcycle_se.inference import UpCycleEnhancement, packaged_model_dir

        torch.set_num_threads(1)  # the machine is shared: one core
        source = folders[name] if name in folders else packaged_model_dir(name)
        model = UpCycleEnhancement.from_hparams(source=str(source), savedir=str(folders.get(name, work / "models" / name)),
                                                run_opts={"device": "cpu", "precision": "fp32"})
        return lambda x: model.enhance_signal(x.astype(np.float32), SAMPLE_RATE).numpy().astype(np.float64)
    if name == "mmse_lsa":
        from benchmarks.baselines import mmse_lsa

        return lambda x: mmse_lsa(x, SAMPLE_RATE)
    if name in REFERENCES:
        from benchmarks.peers import PEERS, missing_peers

        why = missing_peers().get(name)
        if why:
            raise SystemExit(f"{name}: {why}")
        return lambda x: PEERS[name](x, SAMPLE_RATE)
    raise SystemExit(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")


def _model_key(folder: Optional[Path]) -> Optional[str]:
    """sha256 of a model folder's generator and hyperparams (a ``--model`` cache is keyed by it)."""
    if folder is None:
        return None
    import hashlib

    h = hashlib.sha256()
    for f in ("generator.ckpt", "hyperparams.yaml"):
        h.update((Path(folder) / f).read_bytes())
    return h.hexdigest()


def score_system(name: str, root: Path, work: Path, log=print, folder: Optional[Path] = None) -> Rows:
    """Per-file PESQ and STOI of system ``name`` on the set at ``root``: ``{file stem: {metric: value}}``.

    Cached in ``work/stoi_loss/<set folder>/<name>.json`` with the set's build config; files already there
    are not scored again (a cache of another build of the set, or of another model, packaged or ``folder``, is
    discarded).
    ``folder``: the model folder of a ``--model`` system. Scored and cached by :func:`scored_rows`.
    """
    root = Path(root)
    config = set_info(root)["config"]
    if folder is None and name in MODELS:  # a packaged model's scores follow its files too (a new default)
        from upcycle_se.inference import packaged_model_dir

        model_key = _model_key(packaged_model_dir(name))
    else:
        model_key = _model_key(folder)
    stems = sorted(set_labels(root))
    files = {st: (root / "noisy_testset_wav" / f"{st}.wav", root / "clean_testset_wav" / f"{st}.wav") for st in stems}
    return scored_rows(work / CACHE_DIR / root.name / f"{name}.json", files,
                       lambda: make_enhancer(name, work, {name: Path(folder)} if folder is not None else None),
                       match={"config": config, "model_key": model_key}, info={"system": name, "set": str(root)},
                       log=log, label=f"{root.name} {name}")


def scored_rows(cache: Path, files: Dict[str, tuple], make_enhance: Callable[[], Callable[[np.ndarray], np.ndarray]],
                match: Dict, info: Dict, log=print, label: str = "") -> Rows:
    """Per-file PESQ and STOI ``{file id: {metric: value}}`` of the files ``{id: (noisy path, clean path)}``
    enhanced by ``make_enhance()`` (``f(noisy [time] float64 at 16 kHz) -> enhanced [time]``, made only when a
    file is left to score).

    Cached in ``cache``: a saved file whose ``match`` fields (the set's build, the model's hash) all equal these
    is reused for the ids it holds, any other is discarded. Rewritten atomically every 16 files, so an
    interrupted run keeps its progress. The one per-file scorer of this module and ``speech_keep.py``.
    """
    from upcycle_se.audio import load_mono
    from upcycle_se.metrics.stats import score_pair

    rows: Rows = {}
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if all(saved.get(k) == v for k, v in match.items()):
            rows = {k: v for k, v in saved["rows"].items() if k in files}
    todo = [k for k in sorted(files) if k not in rows]
    if not todo:
        return rows
    enhance = make_enhance()
    t0 = time.perf_counter()
    for i, key in enumerate(todo):
        noisy_path, clean_path = files[key]
        noisy = load_mono(noisy_path, SAMPLE_RATE).numpy().astype(np.float64)
        clean = load_mono(clean_path, SAMPLE_RATE).numpy().astype(np.float64)
        out = np.clip(enhance(noisy), -1.0, 1.0)
        rows[key] = {m: float(v) for m, v in score_pair(clean, out, METRICS).items()}
        if (i + 1) % 16 == 0 or i + 1 == len(todo):
            _write_json_atomic(cache, {**info, **match, "rows": {k: rows[k] for k in sorted(rows)}})
            log(f"{label}: {i + 1}/{len(todo)} files scored ({time.perf_counter() - t0:.0f} s)")
    return rows


def dumps(obj) -> str:
    """JSON with one line per innermost object (a file's scores, a mean/CI cell): readable and diffable."""
    def flat(m: "re.Match") -> str:
        return "{" + ", ".join(line.strip().rstrip(",") for line in m.group(1).splitlines()) + "}"

    return re.sub(r"\{\n([^{}\[\]]*?)\n\s*\}", flat, json.dumps(obj, indent=1)) + "\n"


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.part"
    tmp.write_text(dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ breakdown
def _group_order(grouping: str, keys: Sequence[str], families: Sequence[str]) -> List[str]:
    if grouping == "snr":
        return sorted(keys, key=float)
    if grouping == "family":
        return sorted(keys, key=lambda k: (families.index(k) if k in families else len(families), k))
    if grouping == "family_snr":
        def key(k: str):
            fam, snr = k.split(" @ ")
            return (families.index(fam) if fam in families else len(families), fam, float(snr))
        return sorted(keys, key=key)
    return sorted(keys)


def breakdown(rows: Dict[str, Rows], labels: Dict[str, Dict[str, str]], *, base: str = BASE,
              models: Optional[Sequence[str]] = None, references: Sequence[str] = REFERENCES,
              metrics: Sequence[str] = METRICS, families: Sequence[str] = ()) -> Dict:
    """Per-group means and paired differences of every system's per-file scores.

    Arguments
    ---------
    rows : ``{system: {file stem: {metric: value}}}``; ``base`` (the noisy input) must be among them.
    labels : ``{file stem: {grouping: group}}`` for the groupings ``family``, ``snr``, ``clip``, ``family_snr``
        (:func:`set_labels`); ``all`` is added here.
    base : the system every other is compared with file by file (``noisy``).
    models : the systems compared with each reference (default: every system that is neither ``base`` nor a
        reference).
    references : the systems each model is compared with (those present in ``rows``).
    metrics : metric names in the rows.
    families : the family order of the tables (others follow, sorted).

    Returns
    -------
    ``{grouping: {group: {"n": files, "systems": {system: {metric: ci, "<metric>_vs_<base>": ci}},
    "pairs": {"<model> vs <reference>": {metric: ci}}}}}`` where every ``ci`` is ``benchmarks.quality.ci95``'s
    ``{"mean", "ci", "n"}`` over the group's files (paired: over the files both systems scored).
    """
    if base not in rows:
        raise ValueError(f"the rows need the base system {base!r} (got {', '.join(rows) or 'none'})")
    missing = sorted({s for r in rows.values() for s in r} - set(labels))
    if missing:
        raise ValueError(f"file {missing[0]!r} has no labels")
    refs = [r for r in references if r in rows]
    models = [m for m in (models if models is not None else rows) if m in rows and m != base and m not in refs]
    out: Dict[str, Dict] = {}
    for grouping in GROUPINGS:
        groups: Dict[str, List[str]] = {}
        for stem in sorted(labels):
            groups.setdefault("all" if grouping == "all" else labels[stem][grouping], []).append(stem)
        out[grouping] = {}
        for group in _group_order(grouping, list(groups), list(families)):
            stems = groups[group]

            def sub(system: str) -> Rows:
                return {s: rows[system][s] for s in stems if s in rows[system]}

            cell: Dict = {"n": len(stems), "systems": {}, "pairs": {}}
            for system in rows:
                r = sub(system)
                cell["systems"][system] = {m: ci95([v[m] for v in r.values()]) for m in metrics}
                if system != base:
                    for m in metrics:
                        cell["systems"][system][f"{m}_vs_{base}"] = _paired_diff(r, sub(base), m)
            for model in models:
                for ref in refs:
                    cell["pairs"][f"{model} vs {ref}"] = {m: _paired_diff(sub(model), sub(ref), m) for m in metrics}
            out[grouping][group] = cell
    return out


def significant_losses(bd: Dict, system: str, metric: str = "stoi", base: str = BASE) -> List[Dict]:
    """The groups of a :func:`breakdown` where ``system`` is below ``base`` on ``metric`` with the whole 95 %
    CI of the per-file paired difference below zero: ``[{"grouping", "group", "mean", "ci", "n"}]``, in the
    breakdown's order (overall, families, SNRs, clips, family x SNR)."""
    out = []
    for grouping, groups in bd.items():
        for group, cell in groups.items():
            d = cell["systems"].get(system, {}).get(f"{metric}_vs_{base}")
            if d and math.isfinite(d["mean"]) and math.isfinite(d["ci"]) and d["mean"] + d["ci"] < 0:
                out.append({"grouping": grouping, "group": group, **d})
    return out


# ------------------------------------------------------------------------------------------ tables
def _fmt(s: Dict[str, float], digits: int, signed: bool = False) -> str:
    if s is None or not math.isfinite(s["mean"]):
        return "n/a"
    mean = f"{s['mean']:+.{digits}f}" if signed else f"{s['mean']:.{digits}f}"
    return f"{mean} ± {s['ci']:.{digits}f}" if math.isfinite(s["ci"]) else mean


def _digits(metric: str) -> int:
    return 3 if metric == "stoi" else 2


def _grid(title: str, cells: Dict[str, Dict], systems: Sequence[str], value: Callable[[Dict, str], str]) -> List[str]:
    groups = list(cells)
    head = "| System | " + " | ".join(f"{g} ({cells[g]['n']})" for g in groups) + " |"
    lines = [title, "", head, "|" + "---|" * (len(groups) + 1)]
    for system in systems:
        lines.append(f"| {LABELS.get(system, system)} | " + " | ".join(value(cells[g], system) for g in groups) + " |")
    return lines + [""]


def _column_grid(title: str, cells: Dict[str, Dict], columns: Sequence[str],
                 value: Callable[[Dict, str], str]) -> List[str]:
    """Groups as rows, ``columns`` (systems or references) as columns: for groupings with many groups."""
    lines = [title, "", "| Group (files) | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for group, cell in cells.items():
        lines.append(f"| {group} ({cell['n']}) | " + " | ".join(value(cell, c) for c in columns) + " |")
    return lines + [""]


def render_set(name: str, meta: Dict, bd: Dict, systems: Sequence[str], base: str = BASE) -> List[str]:
    """Markdown of one set: overall table, then per family, SNR, clip and family x SNR, then the paired
    differences of each model against each reference."""
    lines = [f"## Set `{name}` ({meta['files']} files: {meta['clips']} ALSA clips x {', '.join(meta['families'])} x "
             f"SNR {'/'.join(meta['snrs'])} dB; `{meta['root']}`)", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    overall = bd["all"]["all"]
    lines += ["### Overall", "", f"| System | PESQ | STOI | PESQ − {base} | STOI − {base} |",
              "|---|---|---|---|---|"]
    for s in systems:
        c = overall["systems"][s]
        lines.append(f"| {LABELS.get(s, s)} | {_fmt(c['pesq'], 2)} | {_fmt(c['stoi'], 3)} | "
                     f"{_fmt(c.get(f'pesq_vs_{base}'), 2, True) if s != base else ''} | "
                     f"{_fmt(c.get(f'stoi_vs_{base}'), 3, True) if s != base else ''} |")
    lines.append("")
    others = [s for s in systems if s != base]
    n_groups = sum(len(g) for g in bd.values())
    lines += [f"### Where STOI is lost: groups whose whole 95 % CI of STOI − {base} is below 0", "",
              f"Of {n_groups} overlapping groups per system, one or two may fall below 0 by chance alone.", ""]
    for s in others:
        lost = significant_losses(bd, s, "stoi", base)
        where = ", ".join(f"{d['group'] if d['grouping'] != 'all' else 'overall'} {_fmt(d, 3, True)}" for d in lost)
        lines.append(f"- {LABELS.get(s, s)}: {where or 'none'}")
    lines.append("")
    for grouping, what in (("family", "noise family"), ("snr", "SNR (dB)")):
        cells = bd[grouping]
        lines += _grid(f"### STOI − {base} by {what} (per-file paired difference)", cells, others,
                       lambda c, s: _fmt(c["systems"][s][f"stoi_vs_{base}"], 3, True))
        lines += _grid(f"### STOI by {what}", cells, systems, lambda c, s: _fmt(c["systems"][s]["stoi"], 3))
        lines += _grid(f"### PESQ − {base} by {what} (per-file paired difference)", cells, others,
                       lambda c, s: _fmt(c["systems"][s][f"pesq_vs_{base}"], 2, True))
    for grouping, what in (("family_snr", "noise family @ SNR (dB)"), ("clip", "clip (phrase)")):
        lines += _column_grid(f"### STOI − {base} by {what} (per-file paired difference)", bd[grouping], others,
                              lambda c, s: _fmt(c["systems"][s][f"stoi_vs_{base}"], 3, True))
    pairs = list(overall["pairs"])
    if pairs:
        cells = {"all": bd["all"]["all"], **bd["family"], **bd["snr"]}
        for model in dict.fromkeys(p.split(" vs ")[0] for p in pairs):
            refs = [p.split(" vs ")[1] for p in pairs if p.startswith(f"{model} vs ")]
            for metric in ("stoi", "pesq"):
                lines += _column_grid(
                    f"### {metric.upper()}: {model} − reference (per-file paired difference), overall, by family, "
                    "by SNR", cells, refs,
                    lambda c, r: _fmt(c["pairs"][f"{model} vs {r}"][metric], _digits(metric), True))
    return lines


def render(result: Dict) -> str:
    """The markdown of ``stoi_loss.txt`` from the saved result (``meta`` and per-set breakdowns)."""
    m = result["meta"]["machine"]
    lines = ["# Where STOI is lost: real-voice sets, by noise family, SNR and clip", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}, "
             f"torch {m['torch']}, Python {m['python']}; {result['meta']['date']}. "
             f"Command: `{result['meta']['command']}`.", "",
             "Per-file mean ± 95 % CI (Student t over files). 'X − noisy' and 'model − reference': mean ± 95 % "
             "CI of the per-file paired differences. Models as shipped (packaged folders' attenuation limits: "
             "`default` and `unpaired` 20 dB), fp32, CPU, whole files; output clipped to [-1, 1], scored in float (wide-band "
             "PESQ, STOI). One real speaker (ALSA's clips): the per-clip tables are per phrase.", ""]
    for name, s in result["sets"].items():
        lines += render_set(name, s["meta"], s["breakdown"], s["systems"])
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ main
def run_set(root: Path, work: Path, systems: Sequence[str], log=print,
            folders: Optional[Dict[str, Path]] = None) -> Dict:
    """Scores (or reads from the caches) every system on one set and breaks the scores down (``folders``:
    the model folders of ``--model`` systems, scored after ``systems``)."""
    info = set_info(root)
    labels = set_labels(root)
    folders = folders or {}
    rows = {s: score_system(s, root, work, log, folders.get(s)) for s in [*systems, *folders]}
    systems = list(rows)
    families = list(info["config"]["noises"])
    meta = {"root": str(root), "files": len(labels), "clips": len({v["clip"] for v in labels.values()}),
            "families": families, "snrs": sorted({v["snr"] for v in labels.values()}, key=float),
            "description": info.get("description", ""), "config": info["config"]}
    return {"meta": meta, "systems": list(systems), "rows": rows,
            "breakdown": breakdown(rows, labels, families=families)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK})")
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS),
                        help="set folders under --work (or paths), default: " + " ".join(DEFAULT_SETS))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, metavar="SYSTEM",
                        help=f"default: {' '.join(SYSTEMS)}")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="also score the exported model folder FOLDER as system NAME (repeatable)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "stoi_loss.json")
    parser.add_argument("--table", type=Path, default=REPO / "benchmarks" / "stoi_loss.txt")
    parser.add_argument("--score-only", action="store_true", help="fill the score caches, write no report")
    parser.add_argument("--render-only", action="store_true", help="rewrite --table from --json")
    args = parser.parse_args(argv)
    if args.render_only:
        args.table.write_text(render(json.loads(args.json.read_text(encoding="utf-8"))), encoding="utf-8")
        return 0
    if BASE not in args.systems:
        raise SystemExit(f"--systems must include {BASE!r}: every difference is taken against it")
    folders: Dict[str, Path] = {}
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep or not name or name in SYSTEMS or name in folders:
            raise SystemExit(f"--model {spec!r}: expected NAME=FOLDER with a new NAME (not one of {', '.join(SYSTEMS)})")
        if not (Path(folder) / "generator.ckpt").is_file():
            raise SystemExit(f"--model {spec!r}: {folder} is not a model folder (no generator.ckpt)")
        folders[name] = Path(folder).absolute()
    work = args.work.absolute()
    t0 = time.perf_counter()
    sets = {}
    for s in args.sets:
        root = Path(s) if Path(s).is_absolute() else work / s
        if not (root / "realvoice_info.json").is_file():
            raise SystemExit(f"{root}: no real-voice set there; build it with "
                             f"`upcycle-se build-corpus {root} --preset realvoice_hard` (or realvoice)")
        sets[root.name] = run_set(root, work, args.systems, folders=folders)
    if args.score_only:
        return 0
    meta = {"machine": machine_info(), "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "minutes": round((time.perf_counter() - t0) / 60, 2),
            "command": " ".join(["python", "benchmarks/stoi_loss.py", *(sys.argv[1:] if argv is None else argv)])}
    result = {"meta": meta, "sets": sets}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(args.json, result)
    text = render(result)
    args.table.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
