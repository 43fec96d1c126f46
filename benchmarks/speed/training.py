"""Training throughput: one full cycle-GAN step (:meth:`upcycle_se.brain.UpCycleBrain.fit_batch`: both
generators updated, then both discriminators) with the recipes' own hparams (``upcycle.yaml`` = paper,
``upcycle_small.yaml`` = small); the real data pipeline (:func:`upcycle_se.data.pipeline.make_train_dataset`
on a ``tiny`` synthetic corpus) timed on its own; one step of each preset profiled with ``torch.profiler``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from .common import NO_GPU, RECIPE_HPARAMS, REPO, SR, Runner, peak_rss_mb, sync


# ============================================================================ workers (subprocesses)

def make_brain(preset: str, workdir: Path, device: str, precision: str = "fp32"):
    """The recipe's :class:`UpCycleBrain` (its own hparams file), set up as ``fit`` does before batch 1;
    ``precision`` is SpeechBrain's run option (``bf16``: autocast, fp32 master weights)."""
    import speechbrain as sb

    from upcycle_se.brain import UpCycleBrain
    from upcycle_se.recipe import load_hparams

    hparams_file = REPO / "recipes" / "VoiceBankDEMAND" / "hparams" / RECIPE_HPARAMS[preset]
    hp = load_hparams(str(hparams_file), {
        "data_folder": str(workdir), "output_folder": str(workdir / f"out_{preset}"), "crop_samples": 32000,
        "batch_size": 4, "n_jobs": 1, "valid_metrics": ["pesq"], "tensorboard_logger": None})
    brain = UpCycleBrain(modules=hp["modules"], hparams=hp, run_opts={"device": device, "precision": precision},
                         checkpointer=hp["checkpointer"])
    brain.on_fit_start()
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    return brain


def random_batch(batch: int, samples: int, seed: int):
    from speechbrain.dataio.batch import PaddedBatch

    gen = torch.Generator().manual_seed(seed)
    noisy, clean = 0.1 * torch.randn(batch, samples, generator=gen), 0.1 * torch.randn(batch, samples, generator=gen)
    return PaddedBatch([{"id": f"u{seed}_{i}", "noisy_sig": noisy[i], "clean_sig": clean[i]} for i in range(batch)])


def worker_train(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds per full cycle-GAN step (``fit_batch``) of a recipe's configuration; optionally profiled."""
    device = cfg.get("device", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        brain = make_brain(cfg["preset"], Path(tmp), device)
        batch, samples = int(cfg.get("batch", 4)), int(cfg.get("samples", 32000))
        profile_shares = None
        if cfg.get("profile"):  # the warm-up step (Adam state, oneDNN primitives) is the profiled one
            profile_shares = profile_step(brain, batch, samples, device)
        else:
            brain.fit_batch(random_batch(batch, samples, 0))
        sync(device)
        walls, cpus = [], []
        for step in range(int(cfg.get("steps", 2))):
            b = random_batch(batch, samples, step + 1)
            c0, w0 = time.process_time(), time.perf_counter()
            loss = brain.fit_batch(b)
            sync(device)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        out = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "walls": walls,
               "loss_finite": bool(torch.isfinite(loss)), "peak_rss_mb": peak_rss_mb(), "load1": os.getloadavg()[0]}
        if device == "cuda":
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if profile_shares is not None:
            out["profile"] = profile_shares
    return out


def _categorise(name: str) -> str:
    n = name.lower()
    if "conv" in n and "backward" in n:
        return "convolution backward"
    if "conv" in n:
        return "convolution forward"
    if "batch_norm" in n or "native_batch_norm" in n:
        return "batch norm (fwd + bwd)"
    if "fft" in n or "stft" in n:
        return "STFT / ISTFT"
    if "_foreach" in n or "adam" in n or "addcdiv" in n or "lerp" in n:
        return "optimizer (Adam, grad clipping)"
    if "lstm" in n or "mm" in n or "linear" in n:
        return "matmul"
    if "copy" in n or "cat" in n or "clone" in n or "contiguous" in n or "pad" in n or "index" in n:
        return "copies / cat / pad"
    return "element-wise and other"


def profile_step(brain, batch: int, samples: int, device: str) -> Dict[str, float]:
    """Share of one ``fit_batch``'s self CPU time per operator category (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    b = random_batch(batch, samples, 0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        brain.fit_batch(b)
        sync(device)
    shares: Dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.self_cpu_time_total <= 0:
            continue
        cat = _categorise(ev.key)
        shares[cat] = shares.get(cat, 0.0) + ev.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def worker_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds per batch of the real training pipeline on a ``tiny`` synthetic corpus (in-process loading)."""
    from speechbrain.dataio.dataloader import make_dataloader

    from upcycle_se.corpus.build import build_preset
    from upcycle_se.data.pipeline import make_train_dataset
    from upcycle_se.data.prepare import prepare_voicebank

    with tempfile.TemporaryDirectory() as tmp:
        root, save = Path(tmp) / "corpus", Path(tmp) / "prep"
        t0 = time.perf_counter()
        build_preset(root, "tiny", sample_rate=SR, seed=0)
        manifests = prepare_voicebank(root, save)
        build_s = time.perf_counter() - t0
        dataset = make_train_dataset(manifests["train"], root, crop_samples=int(cfg.get("samples", 32000)),
                                     save_folder=save)
        loader = make_dataloader(dataset, batch_size=int(cfg.get("batch", 4)), shuffle=True,
                                 num_workers=0, drop_last=True)
        n_batches, walls = 0, []
        epoch = 0
        while n_batches < int(cfg.get("batches", 24)):
            epoch += 1
            dataset.set_epoch(epoch)
            it = iter(loader)
            while True:
                t0 = time.perf_counter()
                try:
                    next(it)
                except StopIteration:
                    break
                walls.append(time.perf_counter() - t0)
                n_batches += 1
        return {"s_per_batch": statistics.median(walls), "mean_s_per_batch": statistics.fmean(walls),
                "batches": n_batches, "files": len(dataset), "build_s": build_s, "load1": os.getloadavg()[0]}


WORKERS = {"train": worker_train, "data": worker_data}


# ============================================================================ orchestration

def run_training(res: Dict[str, Any], args: argparse.Namespace, run: Runner, cuda: bool) -> None:
    """Training steps of each preset (CPU at the largest thread count, and the GPU), then the data pipeline."""
    res["train"] = []
    devices = [("cpu", max(args.threads))] + ([("cuda", 1)] if cuda else [])
    for preset in args.train_models:
        for device, threads in devices:
            run.log(f"training step {preset} {device} x{threads}")
            steps_n = args.train_steps.get(preset, 2) if device == "cpu" else 10
            out = run({"kind": "train", "preset": preset, "device": device, "threads": threads,
                       "batch": args.train_batch, "samples": int(round(args.train_seconds * SR)),
                       "steps": steps_n, "profile": bool(args.profile and device == "cpu")}, timeout=2400)
            res["train"].append({"preset": preset, "device": device, "threads": threads, **out})
    if args.data:
        run.log("data pipeline")
        res["data"] = run({"kind": "data", "threads": 1, "batch": args.train_batch,
                           "samples": int(round(args.train_seconds * SR)), "batches": args.data_batches})


# ============================================================================ report

def train_lines(res: Dict[str, Any]) -> List[str]:
    seconds, batch = res["args"]["train_seconds"], res["args"]["train_batch"]
    out = ["### Training throughput (full cycle-GAN step)", "",
           f"`UpCycleBrain.fit_batch` with the recipes' hparams (`paper` = `upcycle.yaml`: paper generators, "
           f"3-scale MelGAN discriminators; `small` = `upcycle_small.yaml`), batch {batch} x {seconds:g} s: "
           "6 generator passes (translation, cycle, identity) with backward, both generators' Adam step, then "
           "both discriminators' losses, backward and Adam step. Random signals (the step's cost does not depend "
           "on them); median over the timed steps after one warm-up step.", "",
           "| preset | device | threads | s / step | utterance-s / s | cpu s / step | peak memory | load |",
           "|---|---|---|---|---|---|---|---|"]
    for r in res["train"]:
        head = f"| {r['preset']} | {r['device'].upper()} | {r['threads'] if r['device'] == 'cpu' else '-'} "
        if "error" in r:
            out.append(head + f"| failed: {r['error'][:150]} | | | | |")
            continue
        mem = f"{r['peak_rss_mb']:,.0f} MB RSS" if r["device"] == "cpu" else f"{r.get('peak_gpu_mb', 0):,.0f} MB GPU"
        out.append(head + f"| {r['wall_s']:.3g} | **{batch * seconds / r['wall_s']:.3g}** | {r['cpu_s']:.3g} | {mem} "
                   f"| {r['load1']:.1f} |")
    if not res["cuda"]:
        out.append(f"| paper, small | GPU | - | {NO_GPU} | | | | |")
    data = res.get("data")
    if data and "error" not in data:
        out += ["", f"**Data loading** (the real pipeline: `make_train_dataset` on a `tiny` synthetic corpus built "
                f"with `build_preset`, {data['files']} training files; SpeechBrain loader, batch {batch} of "
                f"{seconds:g} s random crops, in-process, `num_workers=0`): {data['s_per_batch'] * 1000:.1f} ms per "
                f"batch (median over {data['batches']} batches), i.e. {batch * seconds / data['s_per_batch']:,.0f} "
                "utterance-seconds per second from one core."]
        for r in res["train"]:
            if r["device"] == "cpu" and "wall_s" in r:
                out.append(f"- {r['preset']}: loading is {100.0 * data['s_per_batch'] / r['wall_s']:.2f} % of a "
                           f"training step's time.")
    prof = [r for r in res["train"] if r.get("profile")]
    if prof:
        out += ["", "**Profile of one step** (torch.profiler, self CPU time by operator category):", "",
                "| preset | " + " | ".join(["1st", "2nd", "3rd", "4th"]) + " |", "|---|---|---|---|---|"]
        for r in prof:
            top = list(r["profile"].items())[:4]
            out.append(f"| {r['preset']} | " + " | ".join(f"{k} {100 * v:.0f} %" for k, v in top) + " |")
    out += ["", "**What limits training throughput:** " + _train_verdict(res)]
    return out


def _train_verdict(res: Dict[str, Any]) -> str:
    from .inference import rows

    data = res.get("data")
    cpu = [r for r in res["train"] if r["device"] == "cpu" and "wall_s" in r]
    if not cpu:
        return "not measured."
    parts = []
    if data and "error" not in data:
        worst = max(100.0 * data["s_per_batch"] / r["wall_s"] for r in cpu)
        parts.append(f"compute, not data: loading a batch takes at most {worst:.2f} % of a step on one core "
                     "(and the recipes load in `num_workers=2` background processes, overlapping it with the step)")
    prof = [r for r in cpu if r.get("profile")]
    if prof:
        conv = [sum(v for k, v in r["profile"].items() if k.startswith("convolution")) for r in prof]
        parts.append(f"convolutions (forward + backward) take {100 * min(conv):.0f}-{100 * max(conv):.0f} % of the "
                     "step's CPU time, so the step is bound by the generators' convolution arithmetic")
    audio = res["args"]["train_batch"] * res["args"]["train_seconds"]
    ratios = []
    for r in cpu:
        inf = rows(res, model=r["preset"], device="cpu", threads=r["threads"])
        if inf:
            rtf = statistics.median(i["wall_s"] / (i["seconds"] * i["batch"]) for i in inf)
            ratios.append(f"{r['preset']} {r['wall_s'] / (rtf * audio):.0f}x")
    if ratios:
        parts.append("a step (6 generator passes with backward, plus the discriminators and two optimizer steps) "
                     "costs " + ", ".join(ratios) + " the inference time of the same audio (median inference RTF "
                     "of the grid, same threads)")
    return "; ".join(parts) + "." if parts else "see the table."
