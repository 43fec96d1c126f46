"""Speed benchmark of Up-Cycle-SENet: inference real-time factor, memory, efficiency, training throughput.

Usage::

    python benchmarks/speed.py            # full run (~13 min on the idle 2-core development CPU)
    python benchmarks/speed.py --quick    # smaller grid, no torch.compile, ~6 min
    python benchmarks/speed.py --no-write # print the section instead of updating benchmarks/RESULTS.md

It rewrites only its own section of ``benchmarks/RESULTS.md`` (between ``<!-- speed:begin -->`` and
``<!-- speed:end -->``), creating the file or the markers when missing.

What is measured (every inference and training figure in a fresh subprocess, so that its peak memory is
its own):

* **Physical limit**: a 2048^3 single-precision GEMM timed in the same run and thread count, both through
  ``torch.matmul`` (MKL) and through oneDNN (a 1x1 channels-last convolution, the library the models'
  convolutions run in); the larger is the machine's measured matmul peak.
* **Inference RTF** of the noisy->clean generator (``paper`` and ``small`` presets) and of a DCCRN-E-sized
  reference built from the same complex layers (:class:`DCCRNReference`), for 1 s, 10 s and 60 s inputs,
  batch 1 and 16, with 1 and 2 CPU threads (and on the GPU when ``torch.cuda.is_available()``).
  RTF = wall-clock seconds / seconds of audio processed (batch x duration); median of the timed passes
  after one warm-up pass. CPU seconds (``time.process_time``) are reported beside wall time: on a
  machine shared with other jobs they show the work done, wall time what a user waits.
  Peak memory is the subprocess's resident-set high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``,
  so it includes the Python/torch runtime and the weights; the RSS before the first pass is given too);
  on GPU ``torch.cuda.max_memory_allocated``. Configurations predicted to exceed the memory or time cap
  are skipped and marked so in the table.
* **Efficiency**: MACs counted by :func:`upcycle_se.models.profile.flop_counter` on the warm-up pass of
  each configuration; achieved GFLOP/s = 2 x MACs / wall time, as a share of the measured peak.
* **Before/after** of the speed work, cumulative steps from the code as it was before it (commit c20c54b,
  whose changed forward methods are reproduced below as ``_legacy_*``) to the current defaults, plus the
  opt-in allocator setting :func:`upcycle_se.models.runtime.keep_freed_memory`, and ``torch.compile``.
* **Precision** (issue 13): the fp32 and bf16 peaks (matmul and a channels-last conv), each Up-Cycle preset
  in fp32 and bf16 side by side (interleaved in one process) with % of the peak of its own precision, the
  packaged default model through ``upcycle-se enhance --precision auto`` vs ``fp32``, and PESQ bf16 vs
  fp32 on the ``benchmark`` test set. ``--precision-only`` runs just this part and rewrites just its
  subsection. Without bf16 hardware the bf16 rows are emulated (and flagged so).
* **bf16 with torch.compile**: each preset in fp32, bf16 and bf16 through ``torch.compile`` with inductor's
  ``freezing``, and the packaged default loaded once through the pretrained interface with and without
  the ``compile`` run option (``upcycle-se enhance --compile``). ``--compile-precision-only`` runs just
  this part and rewrites just its subsection.
* **Training throughput** (utterance-seconds per second) of one full cycle-GAN step
  (:meth:`upcycle_se.brain.UpCycleBrain.fit_batch`: both generators updated, then both discriminators)
  with the recipes' own hparams (``upcycle.yaml`` = paper, ``upcycle_small.yaml`` = small), batch 4 x 2 s;
  the real data pipeline (:func:`upcycle_se.data.pipeline.make_train_dataset` on a ``tiny`` synthetic
  corpus) is timed on its own, and one step of each preset is profiled with ``torch.profiler``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.results_file import cpu_model, replace_section  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULT_RESULTS = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
SR = 16000
NO_GPU = "not measured: no GPU lent to this session (`torch.cuda.is_available()` is False)"
MODELS = ("paper", "small", "dccrn")
MODEL_LABELS = {"paper": "Up-Cycle `paper`", "base": "Up-Cycle `base`", "small": "Up-Cycle `small`",
                "dccrn": "DCCRN-E-sized reference"}
RECIPE_HPARAMS = {"paper": "upcycle.yaml", "small": "upcycle_small.yaml"}

# ============================================================================ models


class DCCRNReference(nn.Module):
    """A DCCRN-E-sized complex U-Net made of :mod:`upcycle_se.nnet.complex` layers (the reference point).

    As DCCRN-E (Hu et al., Interspeech 2020): STFT 512 / window 400 / hop 100, DC bin dropped (256 bins);
    six encoder levels of complex convolutions with 32, 64, 128, 128, 256, 256 real channels (16 ... 128
    complex), kernel (5, 2) over (freq, frames), stride (2, 1), causal in time, each followed by complex
    BN and PReLU; a mirrored decoder of complex transposed convolutions on the concatenated skip; the
    polar complex mask ``tanh(|M|) e^{i angle M}`` (as in the Up-Cycle generator).

    Approximation: the library has no complex LSTM, so the bottleneck is a 2-layer *real* LSTM on the
    concatenated real/imaginary features (DCCRN-R style) plus a linear map back, with its hidden size
    (232) chosen so that the total lands at DCCRN-E's 3.7 M parameters. The LSTM runs in torch's C++
    kernel (no Python loop over frames). Like the generator it runs channels-last on CPU.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 64, 128, 128), kernel: Tuple[int, int] = (5, 2),
                 rnn_hidden: int = 232, rnn_layers: int = 2, n_freq: int = 256):
        super().__init__()
        from upcycle_se.nnet.complex import ComplexBatchNorm2d, ComplexConv2d, ComplexConvTranspose2d, ComplexPReLU
        from upcycle_se.nnet.stft import ComplexSTFT

        self.stft = ComplexSTFT(512, 400, 100)
        self.channels_last_on_cpu = True
        chans = [1] + list(channels)
        pad = (kernel[0] // 2, 0)
        self.encoder = nn.ModuleList(
            nn.Sequential(ComplexConv2d(c_in, c_out, kernel, stride=(2, 1), padding=pad),
                          ComplexBatchNorm2d(c_out), ComplexPReLU(c_out))
            for c_in, c_out in zip(chans[:-1], chans[1:]))
        feat = 2 * channels[-1] * (n_freq // 2 ** len(channels))
        self.rnn = nn.LSTM(feat, rnn_hidden, rnn_layers, batch_first=True)
        self.rnn_proj = nn.Linear(rnn_hidden, feat)
        dec = list(reversed(chans))
        self.decoder = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(dec[:-1], dec[1:])):
            up = ComplexConvTranspose2d(2 * c_in, c_out, kernel, stride=(2, 1), padding=pad, output_padding=(1, 0))
            last = i == len(dec) - 2
            self.decoder.append(nn.Sequential(up) if last else nn.Sequential(up, ComplexBatchNorm2d(c_out),
                                                                               ComplexPReLU(c_out)))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``[batch, time]`` -> enhanced ``[batch, time]``."""
        from upcycle_se.nnet.complex import complex_cat

        spec = self.stft.stft(wav)
        x = spec[:, :, 1:]
        if self.channels_last_on_cpu and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for level in self.encoder:
            x = level(F.pad(x, (1, 0)))  # causal: one past frame
            skips.append(x)
        b, c, f, t = x.shape
        h = self.rnn_proj(self.rnn(x.permute(0, 3, 1, 2).reshape(b, t, c * f))[0])
        x = h.reshape(b, t, c, f).permute(0, 2, 3, 1)
        if self.channels_last_on_cpu and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        for level in self.decoder:
            x = level[0](complex_cat([x, skips.pop()]))[..., :-1]
            for layer in level[1:]:
                x = layer(x)
        m = F.pad(x, (0, 0, 1, 0))  # the DC bin gets a zero mask
        mr, mi = m[:, 0:1], m[:, 1:2]
        mag = torch.sqrt(mr * mr + mi * mi + 1e-8)
        gain = torch.tanh(mag) / mag
        xr, xi = spec[:, 0:1], spec[:, 1:2]
        out = torch.cat([gain * (mr * xr - mi * xi), gain * (mr * xi + mi * xr)], dim=1)
        return self.stft.istft(out, length=wav.shape[-1])


def build_model(name: str) -> nn.Module:
    """The noisy->clean generator of a preset, or the DCCRN-E-sized reference; seeded, evaluation mode."""
    from upcycle_se.models import UpCycleGenerator

    torch.manual_seed(0)
    model = DCCRNReference() if name == "dccrn" else UpCycleGenerator.from_preset(name, mode="mask")
    return model.eval()


# ============================================================================ the code before the speed work
# The forward methods of commit c20c54b that the speed work changed, reproduced verbatim in behaviour so
# that the "before" column is measured in the same run as the "after" one.

def _legacy_dws_forward(self, x):
    return self.pointwise(self.depthwise(x))


def _legacy_res_forward(self, x):
    h = self.conv1(self.act1(self.norm1(x)))
    h = self.conv2(self.act2(self.norm2(h)))
    return h + self.shortcut(x)


def _legacy_aspp_forward(self, x):
    from upcycle_se.nnet.complex import complex_cat

    pooled = self.pool_act(self.pool_conv(x.mean(dim=(2, 3), keepdim=True))).expand(-1, -1, *x.shape[2:])
    branches = [x] + [branch(x) for branch in self.atrous] + [pooled]
    return self.project(complex_cat(branches))


#: Cumulative steps from the code before the speed work to today's defaults (+ the opt-in allocator).
LADDER: List[Tuple[str, str, Dict[str, bool]]] = [
    ("before", "before: c20c54b code, `torch.no_grad`", dict(
        legacy=True, inference_mode=False, channels_last=False, onednn_1x1=False, fold=False, allocator=False)),
    ("inference_mode", "+ `torch.inference_mode`", dict(
        legacy=True, inference_mode=True, channels_last=False, onednn_1x1=False, fold=False, allocator=False)),
    ("structure", "+ ASPP pooled branch as a bias, one shared depthwise reorder, in-place residual add", dict(
        legacy=False, inference_mode=True, channels_last=False, onednn_1x1=False, fold=False, allocator=False)),
    ("channels_last", "+ channels-last feature maps on CPU", dict(
        legacy=False, inference_mode=True, channels_last=True, onednn_1x1=False, fold=False, allocator=False)),
    ("onednn_1x1", "+ 1x1 convolutions sent to oneDNN", dict(
        legacy=False, inference_mode=True, channels_last=True, onednn_1x1=True, fold=False, allocator=False)),
    ("fold", "+ eval BN folded into convolutions, in-place activations (= library default)", dict(
        legacy=False, inference_mode=True, channels_last=True, onednn_1x1=True, fold=True, allocator=False)),
    ("allocator", "+ `keep_freed_memory()` (opt-in, process-wide)", dict(
        legacy=False, inference_mode=True, channels_last=True, onednn_1x1=True, fold=True, allocator=True)),
]
STEP = {key: variant for key, _label, variant in LADDER}
DEFAULT = STEP["fold"]  # what the library does out of the box; the grid is measured with it
_ORIGINAL: Dict[str, Any] = {}


def set_variant(model: nn.Module, variant: Dict[str, bool]) -> None:
    """Switches the code paths of this process to one step of :data:`LADDER`, in either direction.

    The allocator setting is not switched here (it cannot be undone exactly): see :func:`apply_variant`.
    """
    import upcycle_se.nnet.complex as C

    if not _ORIGINAL:
        _ORIGINAL.update(dws=C.ComplexDepthwiseSeparableConv2d.forward, res=C.ComplexResidualBlock.forward,
                         aspp=C.ComplexASPP.forward, ok=C._onednn_pointwise_ok,
                         foldable=C.ComplexBatchNorm2d.foldable, activate=C._activate)
    legacy = bool(variant.get("legacy"))
    C.ComplexDepthwiseSeparableConv2d.forward = _legacy_dws_forward if legacy else _ORIGINAL["dws"]
    C.ComplexResidualBlock.forward = _legacy_res_forward if legacy else _ORIGINAL["res"]
    C.ComplexASPP.forward = _legacy_aspp_forward if legacy else _ORIGINAL["aspp"]
    C._onednn_pointwise_ok = _ORIGINAL["ok"] if variant.get("onednn_1x1", True) else (lambda x: False)
    fold = variant.get("fold", True)
    C.ComplexBatchNorm2d.foldable = _ORIGINAL["foldable"] if fold else (lambda self: False)
    C._activate = _ORIGINAL["activate"] if fold else (lambda act, x: act(x))
    for module in model.modules():
        if hasattr(module, "channels_last_on_cpu"):
            module.channels_last_on_cpu = bool(variant.get("channels_last", True))


def apply_variant(model: nn.Module, variant: Dict[str, bool]) -> None:
    """:func:`set_variant` plus, when the step asks for it, the process-wide allocator setting."""
    from upcycle_se.models.runtime import keep_freed_memory

    set_variant(model, variant)
    if variant.get("allocator"):
        keep_freed_memory()


# ============================================================================ worker side (subprocesses)

def _rss_mb() -> float:
    with open("/proc/self/statm") as fin:
        return int(fin.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


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


def worker_ladder(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """All non-allocator steps of :data:`LADDER` in one process, interleaved pass by pass.

    Each step gets a warm-up pass, then ``rounds`` rounds time one pass of every step, the order rotated
    each round, so that all steps see the same machine load.
    """
    steps = [k for k in cfg["steps"] if k != "allocator"]
    model = build_model(cfg["model"])
    wav = 0.1 * torch.randn(1, int(round(cfg["seconds"] * SR)), generator=torch.Generator().manual_seed(1))
    for key in steps:
        set_variant(model, STEP[key])
        ctx = torch.inference_mode if STEP[key]["inference_mode"] else torch.no_grad
        with ctx():
            model(wav)
    out: Dict[str, Dict[str, List[float]]] = {k: {"walls": [], "cpus": []} for k in steps}
    for rnd in range(int(cfg.get("rounds", 3))):
        shift = rnd % len(steps)
        for key in steps[shift:] + steps[:shift]:
            set_variant(model, STEP[key])
            ctx = torch.inference_mode if STEP[key]["inference_mode"] else torch.no_grad
            with ctx():
                c0, w0 = time.process_time(), time.perf_counter()
                model(wav)
                out[key]["walls"].append(time.perf_counter() - w0)
                out[key]["cpus"].append(time.process_time() - c0)
    return {"steps": out, "load1": os.getloadavg()[0]}


def worker_info(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Parameters and MACs per second of audio of each model (4 s input, batch 1)."""
    from upcycle_se.models.profile import count_parameters, macs_per_second

    return {name: {"params": count_parameters(build_model(name)),
                   "gmacs_per_s": macs_per_second(build_model(name), SR, seconds=4.0) / 1e9}
            for name in cfg["models"]}


def worker_infer(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Times the model on ``batch x seconds`` of audio: one counted warm-up pass, then ``repeats`` passes."""
    from upcycle_se.models.profile import flop_counter

    device = cfg.get("device", "cpu")
    variant = cfg.get("variant", DEFAULT)
    peak_now = _onednn_peak() if device == "cpu" else None  # same process, same threads, same moment
    model = build_model(cfg["model"])
    apply_variant(model, variant)
    model = model.to(device)
    gen = torch.Generator().manual_seed(1)
    wav = (0.1 * torch.randn(int(cfg["batch"]), int(round(cfg["seconds"] * SR)), generator=gen)).to(device)
    ctx = torch.inference_mode if variant.get("inference_mode", True) else torch.no_grad
    rss_before = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with ctx():  # warm-up pass, eager, with its MACs counted
        t0 = time.perf_counter()
        with flop_counter() as counter:
            model(wav)
        _sync(device)
        warm_s = time.perf_counter() - t0
    runner = model
    compile_s = None
    if cfg.get("compile"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        runner = torch.compile(model, dynamic=False)
        t0 = time.perf_counter()
        with ctx():
            runner(wav)
        _sync(device)
        compile_s = time.perf_counter() - t0
    with ctx():
        pairs = []
        t_timed = time.perf_counter()
        for _ in range(int(cfg.get("repeats", 3))):
            for which, fn in ([("eager", model), ("compiled", runner)] if cfg.get("compile") else [("main", runner)]):
                c0, w0 = time.process_time(), time.perf_counter()
                fn(wav)
                _sync(device)
                pairs.append((which, time.perf_counter() - w0, time.process_time() - c0))
            if time.perf_counter() - t_timed > float(cfg.get("max_timed_s", 30.0)):
                break  # a loaded machine can make passes far slower than predicted: at least one, then stop
    main = [p for p in pairs if p[0] in ("main", "compiled")]
    walls, cpus = [p[1] for p in main], [p[2] for p in main]
    out = {
        "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "walls": walls, "warm_s": warm_s,
        "macs": counter.get_total_flops() / 2.0, "rss_before_mb": rss_before, "peak_rss_mb": _peak_rss_mb(),
        "load1": os.getloadavg()[0], "peak_gflops_now": peak_now,
    }
    if cfg.get("compile"):
        eager = [p for p in pairs if p[0] == "eager"]
        out.update(compile_s=compile_s, eager_wall_s=statistics.median(p[1] for p in eager),
                   eager_cpu_s=statistics.median(p[2] for p in eager))
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _make_brain(preset: str, workdir: Path, device: str, precision: str = "fp32"):
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


def _random_batch(batch: int, samples: int, seed: int):
    from speechbrain.dataio.batch import PaddedBatch

    gen = torch.Generator().manual_seed(seed)
    noisy, clean = 0.1 * torch.randn(batch, samples, generator=gen), 0.1 * torch.randn(batch, samples, generator=gen)
    return PaddedBatch([{"id": f"u{seed}_{i}", "noisy_sig": noisy[i], "clean_sig": clean[i]} for i in range(batch)])


def worker_train(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds per full cycle-GAN step (``fit_batch``) of a recipe's configuration; optionally profiled."""
    device = cfg.get("device", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        brain = _make_brain(cfg["preset"], Path(tmp), device)
        batch, samples = int(cfg.get("batch", 4)), int(cfg.get("samples", 32000))
        profile_shares = None
        if cfg.get("profile"):  # the warm-up step (Adam state, oneDNN primitives) is the profiled one
            profile_shares = _profile_step(brain, batch, samples, device)
        else:
            brain.fit_batch(_random_batch(batch, samples, 0))
        _sync(device)
        walls, cpus = [], []
        for step in range(int(cfg.get("steps", 2))):
            b = _random_batch(batch, samples, step + 1)
            c0, w0 = time.process_time(), time.perf_counter()
            loss = brain.fit_batch(b)
            _sync(device)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        out = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "walls": walls,
               "loss_finite": bool(torch.isfinite(loss)), "peak_rss_mb": _peak_rss_mb(), "load1": os.getloadavg()[0]}
        if device == "cuda":
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if profile_shares is not None:
            out["profile"] = profile_shares
    return out


#: The training-step variants of the precision part: SpeechBrain's ``--precision`` run option, and whether the
#: generators keep channels-last feature maps under autocast (before the oneDNN route-around they could not).
TRAIN_VARIANTS = {"fp32": ("fp32", True), "bf16_nchw": ("bf16", False), "bf16": ("bf16", True)}


def worker_train_precision(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds per cycle-GAN step (``fit_batch``) in each of :data:`TRAIN_VARIANTS`, one Brain each (same
    initial weights), timed steps interleaved; plus what the parts of a step cost on their own (the buffer
    copy, each optimizer's step) and a profile of one step per variant."""
    import speechbrain as sb  # noqa: F401  (the Brains below)

    batch, samples = int(cfg.get("batch", 4)), int(cfg.get("samples", 32000))
    names = list(cfg.get("variants", TRAIN_VARIANTS))
    walls: Dict[str, List[float]] = {n: [] for n in names}
    out: Dict[str, Any] = {"variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        brains = {}
        for n in names:
            precision, channels_last = TRAIN_VARIANTS[n]
            torch.manual_seed(0)
            brains[n] = brain = _make_brain(cfg["preset"], Path(tmp) / n, "cpu", precision)
            for g in ("gen_n2c", "gen_c2n"):
                brain.modules[g].channels_last_on_cpu = channels_last
            brain.fit_batch(_random_batch(batch, samples, 0))  # warm-up: Adam state, oneDNN primitives
        for step in range(int(cfg.get("steps", 2))):
            for n in (names if step % 2 == 0 else names[::-1]):
                b = _random_batch(batch, samples, step + 1)
                w0 = time.perf_counter()
                loss = brains[n].fit_batch(b)
                walls[n].append(time.perf_counter() - w0)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"{n}: non-finite loss {float(loss)}")
        for n, brain in brains.items():
            parts = {}
            t0 = time.perf_counter()
            for _ in range(5):
                brain._buffers()
            parts["buffer copy"] = (time.perf_counter() - t0) / 5
            for opt_name, opt in brain.optimizers_dict.items():  # Adam on the gradients of the last step
                for group in opt.param_groups:
                    for prm in group["params"]:
                        if prm.grad is None:
                            prm.grad = torch.zeros_like(prm)
                t0 = time.perf_counter()
                opt.step()
                parts[f"{opt_name} step"] = time.perf_counter() - t0
            shares = _profile_step(brain, batch, samples, "cpu") if cfg.get("profile", True) else None
            out["variants"][n] = {"wall_s": statistics.median(walls[n]), "walls": walls[n], "parts": parts,
                                  "profile": shares, "params": sum(p.numel() for p in brain.modules.parameters())}
    out["load1"] = os.getloadavg()[0]
    out["peak_rss_mb"] = _peak_rss_mb()
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


def _profile_step(brain, batch: int, samples: int, device: str) -> Dict[str, float]:
    """Share of one ``fit_batch``'s self CPU time per operator category (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    b = _random_batch(batch, samples, 0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        brain.fit_batch(b)
        _sync(device)
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

    from upcycle_se.data.corpus import build_preset
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


# ============================================================================ precision: fp32 vs bf16
# Issue 13: the bf16 peak next to the fp32 one, the generators in both precisions (one process, passes
# interleaved, so the ratio is measured under the same load), the packaged model through `upcycle-se
# enhance` with --precision auto vs fp32, and PESQ bf16 vs fp32 on the benchmark test set.

PRECISION_BEGIN, PRECISION_END = "<!-- speed-precision:begin -->", "<!-- speed-precision:end -->"
COMPILE_BEGIN, COMPILE_END = "<!-- speed-compile:begin -->", "<!-- speed-compile:end -->"
#: Where the quality benchmark leaves the `benchmark` corpus (the packaged model's test set).
BENCHMARK_CORPUS = REPO / "benchmarks" / "work" / "benchmark_ref" / "corpus"


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
    (the issue's kernels), fp32 and bf16. Without bf16 hardware the bf16 kernels are emulated and ~20-60x
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


def _speech_like(seconds: float, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.2 * env * voiced + 0.05 * rng.standard_normal(t.size)).astype("float32")


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
        sf.write(noisy, _speech_like(float(cfg["seconds"])), SR, subtype="PCM_16")

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

    sig = torch.from_numpy(_speech_like(float(cfg["seconds"])))
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


def _run_compile_part(args: argparse.Namespace, run: "Runner") -> Dict[str, Any]:
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


def _compile_precision_lines(res: Dict[str, Any], command: str) -> List[str]:
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
        head = f"| {MODEL_LABELS.get(r['model'], r['model'])} | {r['seconds']:g} s "
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


def _run_precision_part(args: argparse.Namespace, run: "Runner") -> Dict[str, Any]:
    """The precision part: kernel peaks, the generators in both precisions, the enhance path, PESQ."""
    from upcycle_se.models import GENERATOR_PRESETS

    out: Dict[str, Any] = {"kernels": {}, "models": [], "enhance": None, "pesq": None,
                           "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load_start": os.getloadavg()[0]}
    for threads in args.threads:
        run.log(f"precision: fp32 / bf16 kernel peaks, {threads} thread(s)")
        out["kernels"][threads] = run({"kind": "kernels", "threads": threads, "n": args.gemm_n})
    for model in [m for m in args.precision_models if m in GENERATOR_PRESETS]:
        for threads in args.threads:
            run.log(f"precision: {model} fp32 / bf16 x{threads}, {args.precision_seconds:g} s")
            row = run({"kind": "precision", "model": model, "threads": threads, "seconds": args.precision_seconds,
                       "batch": 1, "rounds": args.precision_rounds})
            out["models"].append({"model": model, "threads": threads, "seconds": args.precision_seconds, **row})
    threads = max(args.threads)
    out["train"] = []
    for preset in args.train_models:
        run.log(f"precision: cycle-GAN training step {preset}, {' / '.join(TRAIN_VARIANTS)}, x{threads}")
        out["train"].append({"preset": preset, "threads": threads, "batch": args.train_batch,
                             "seconds": args.train_seconds, **run({
                                 "kind": "train_precision", "preset": preset, "threads": threads,
                                 "batch": args.train_batch, "samples": int(round(args.train_seconds * SR)),
                                 "steps": args.train_steps.get(preset, 2)}, timeout=3600)})
    run.log(f"precision: packaged model through `upcycle-se enhance`, auto / fp32 / bf16, x{threads}")
    out["enhance"] = {"threads": threads, "seconds": args.enhance_seconds, **run({
        "kind": "enhance_precision", "threads": threads, "seconds": args.enhance_seconds,
        "precisions": ["auto", "fp32", "bf16"], "once": [] if _bf16_hw() else ["bf16"],
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
    """The training rows of the precision subsection: s/step per variant, what parts cost, the profile."""
    if not rows:
        return []
    emu = "" if hw else " (emulated)"
    out = ["**Cycle-GAN training step, fp32 vs bf16 autocast** (`UpCycleBrain.fit_batch` with the recipes' "
           "hparams, SpeechBrain's `--precision` run option: bf16 autocast with fp32 master weights; one Brain per "
           "variant from the same initial weights, timed steps interleaved, median):", "",
           "| preset | threads | batch x crop | fp32 s/step | bf16, NCHW (before) s/step | bf16, channels-last "
           "s/step | bf16 / fp32 speed-up | what channels-last adds | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['preset']} | {r['threads']} | {r['batch']} x {r['seconds']:g} s "
        if "error" in r:
            out.append(head + f"| failed: {r['error'][:150]} | | | | | |")
            continue
        v = {k: x["wall_s"] for k, x in r["variants"].items()}
        out.append(head + f"| {v['fp32']:.3g} | {v['bf16_nchw']:.3g}{emu} | {v['bf16']:.3g}{emu} "
                   f"| **{v['fp32'] / v['bf16']:.2f}x** | {v['bf16_nchw'] / v['bf16']:.2f}x | {r['load1']:.1f} |")
    out += ["", "Parts of a step, measured on their own after the timed steps (seconds), and the step's "
            "profile (self CPU time by operator category, top 4):", "",
            "| preset | variant | buffer copy | g_optimizer step | d_optimizer step | profile |", "|---|---|---|---|---|---|"]
    for r in rows:
        for name, x in (r.get("variants") or {}).items():
            parts = x["parts"]
            prof = ", ".join(f"{k} {100 * s:.0f} %" for k, s in list((x.get("profile") or {}).items())[:4])
            out.append(f"| {r['preset']} | {name} | {parts.get('buffer copy', 0):.4f} "
                       f"| {parts.get('g_optimizer step', 0):.3f} | {parts.get('d_optimizer step', 0):.3f} | {prof} |")
    out += ["", "bf16 NCHW is how `--precision=bf16` trained before: channels-last was switched off under "
            "autocast because one oneDNN bf16 backward (grouped + dilated convolution, channels-last) segfaults. "
            "Now only those layers (the ASPP branches) run in fp32 and the rest keeps channels-last.", ""]
    return out


def _bf16_hw() -> bool:
    from upcycle_se.models.runtime import cpu_has_bf16

    return cpu_has_bf16()


def _precision_peak(kernels: Dict[str, Any], name: str) -> float:
    return max(kernels.get(f"matmul_{name}", 0.0), kernels.get(f"conv_{name}", 0.0))


def _precision_lines(res: Dict[str, Any]) -> List[str]:
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
        out.append(f"| {t} | {_fmt(k['matmul_fp32'])} (n={k['matmul_fp32_n']}) | {_fmt(k['matmul_bf16'])} "
                   f"(n={k['matmul_bf16_n']}{flag}) | {_fmt(k['conv_fp32'])} | {_fmt(k['conv_bf16'])} "
                   f"(batch {k['conv_bf16_batch']}{flag}) | {ratio:.2f}x |")
    out += ["", "Kernels: `torch.matmul` of two n x n matrices; a 32 -> 32, 5 x 7 `F.conv2d` on channels-last "
            "[batch, 32, 257, 161] maps (batch 4; smaller where bf16 is emulated, to keep the run short). Best of "
            "5 (3) after a warm-up. The peak of a precision is the better of its two kernels.", "",
            "| model | threads | input | fp32 s | bf16 s | speed-up bf16 / fp32 | fp32 % of fp32 peak | "
            "bf16 % of bf16 peak | bf16 vs fp32 output SNR | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["models"]:
        head = f"| {MODEL_LABELS.get(r['model'], r['model'])} | {r['threads']} | {r['seconds']:g} s "
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


WORKERS = {"infer": worker_infer, "ladder": worker_ladder, "train": worker_train, "data": worker_data,
           "kernels": worker_kernels, "precision": worker_precision, "enhance_precision": worker_enhance_precision,
           "pesq_precision": worker_pesq_precision,
           "train_precision": worker_train_precision, "compile_precision": worker_compile_precision,
           "enhance_compile": worker_enhance_compile}


def run_worker(cfg_json: str) -> None:
    cfg = json.loads(cfg_json)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    result = WORKERS[cfg["kind"]](cfg)
    print("@@RESULT@@" + json.dumps(result), flush=True)


# ============================================================================ orchestration

class Runner:
    """Starts workers in fresh subprocesses and keeps a log."""

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.t_start = time.perf_counter()
        # A fresh inductor cache per run: the first compile of a run is a cold one, as a user's would be.
        self._cache = tempfile.TemporaryDirectory(prefix="upcycle_speed_inductor_")
        self.inductor_cache = self._cache.name

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{time.perf_counter() - self.t_start:7.1f} s] {msg}", flush=True)

    def __call__(self, cfg: Dict[str, Any], timeout: float = 1800.0) -> Dict[str, Any]:
        threads = int(cfg.get("threads", 1))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONWARNINGS="ignore", TORCHINDUCTOR_CACHE_DIR=self.inductor_cache)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                              capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO))
        for line in proc.stdout.splitlines():
            if line.startswith("@@RESULT@@"):
                return json.loads(line[len("@@RESULT@@"):])
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": " | ".join(tail)[-400:] or f"exit code {proc.returncode}"}


def machine_info() -> Dict[str, Any]:
    cpu = cpu_model()
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": mem_gb, "torch": torch.__version__,
            "python": platform.python_version(), "gpu": gpu, "onednn": torch.backends.mkldnn.is_available(),
            "bf16_hardware": _bf16_hw()}


def _mem_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 4096.0


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs every part selected by ``args``; returns the raw results (also what the section is made of)."""
    run = Runner(verbose=not args.silent)
    res: Dict[str, Any] = {"machine": machine_info(), "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                           "load_start": os.getloadavg(), "args": vars(args).copy()}
    res["args"].pop("results", None)
    cuda = torch.cuda.is_available() and not args.no_gpu
    res["cuda"] = cuda
    res["mem_available_mb"] = _mem_available_mb()

    # ---- physical limit and model sizes (in this process: nothing here is patched)
    res["peak"] = {}
    saved_threads = torch.get_num_threads()
    try:
        for threads in args.threads:
            run.log(f"peak GEMM, {threads} thread(s)")
            torch.set_num_threads(threads)
            res["peak"][threads] = worker_peak({"n": args.gemm_n, "cuda": cuda})
        run.log("parameters and MACs")
        res["info"] = worker_info({"models": list(args.models)})
    finally:
        torch.set_num_threads(saved_threads)

    # ---- inference grid
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
                mem_cap_mb = min(args.mem_cap_gb * 1024.0, 0.6 * _mem_available_mb())
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

    # ---- before / after: code steps interleaved in one process; the allocator step in process pairs
    res["ladder"], res["alloc"] = [], []
    steps = [k for k, _, _ in LADDER] if args.ladder == "full" else (
        ["before", "fold", "allocator"] if args.ladder == "ends" else [])
    for model in args.ladder_models if steps else []:
        for threads in args.threads:
            run.log(f"before/after {model} x{threads}: {len(steps) - 1} code steps interleaved")
            out = run({"kind": "ladder", "model": model, "threads": threads, "seconds": args.ladder_seconds,
                       "rounds": args.ladder_rounds, "steps": steps})
            res["ladder"].append({"model": model, "threads": threads, **out})
            for pair in range(args.alloc_pairs):
                for key in ("before", "fold", "allocator") if threads == min(args.threads) else ("fold", "allocator"):
                    run.log(f"allocator pair {pair + 1}: {model} x{threads} {key}")
                    out = run({"kind": "infer", "model": model, "threads": threads, "seconds": args.ladder_seconds,
                               "batch": 1, "repeats": args.ladder_repeats, "variant": STEP[key]})
                    res["alloc"].append({"model": model, "threads": threads, "step": key, "pair": pair, **out})

    # ---- torch.compile
    res["compile"] = []
    if args.compile:
        for model in args.compile_models:
            for threads in args.threads:
                run.log(f"torch.compile {model} x{threads}")
                out = run({"kind": "infer", "model": model, "threads": threads, "seconds": args.ladder_seconds,
                           "batch": 1, "repeats": args.ladder_repeats, "compile": True}, timeout=1200)
                res["compile"].append({"model": model, "threads": threads, **out})

    # ---- fp32 vs bf16
    if args.precision:
        res["precision"] = _run_precision_part(args, run)

    # ---- training
    res["train"] = []
    train_devices = [("cpu", max(args.threads))] + ([("cuda", 1)] if cuda else [])
    for preset in args.train_models:
        for device, threads in train_devices:
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
    # ---- the GEMM peak again: the table keeps the better of the two measurements
    saved_threads = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            again = worker_peak({"n": args.gemm_n, "cuda": False})
            for key, value in again.items():
                res["peak"][threads][key] = max(res["peak"][threads].get(key, 0.0), value)
    finally:
        torch.set_num_threads(saved_threads)
    res["load_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - run.t_start
    return res


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

def _fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def _peak_of(res: Dict[str, Any], threads: int) -> float:
    """The measured matmul peak at ``threads``: the best GEMM of the whole run (start, end and the one timed
    in every CPU inference process), i.e. the machine's limit rather than one moment's share of it."""
    p = res["peak"].get(threads) or res["peak"].get(str(threads)) or {}
    per_row = [r.get("peak_gflops_now") or 0.0 for r in res.get("infer", []) if r.get("threads") == threads
               and r.get("device") == "cpu"]
    return max([p.get("mkl", 0.0), p.get("onednn", 0.0)] + per_row)


def render(res: Dict[str, Any], command: str) -> str:
    """The markdown section (between the speed markers)."""
    m = res["machine"]
    info = res["info"]
    lines = [BEGIN, "## Speed", ""]
    load = res["load_start"]
    lines += [
        f"Measured {res['started']} with `{command}` (total {res['total_s'] / 60:.1f} min) on **{m['cpu']}**, "
        f"{m['cores']} cores, {m['mem_gb']:.0f} GB RAM, torch {m['torch']}, Python {m['python']}; "
        f"GPU: {m['gpu'] or 'none'}. The machine is shared with other jobs: 1-min load average "
        f"{load[0]:.1f} at the start, {res['load_end'][0]:.1f} at the end, and per configuration in the "
        "tables (`load`); with 2 cores, a load above ~2 means the timed process did not have its threads' "
        "cores to itself, so wall-clock figures are pessimistic there (CPU seconds are less affected).",
        "",
    ]
    # physical limit
    lines += ["### Physical limit (measured matmul peak)", "",
              "| threads | MKL sgemm (`torch.matmul`) GFLOP/s | oneDNN sgemm GFLOP/s | peak used below |",
              "|---|---|---|---|"]
    for t in res["args"]["threads"]:
        p = res["peak"].get(t) or res["peak"].get(str(t)) or {}
        lines.append(f"| {t} | {_fmt(p.get('mkl'))} | {_fmt(p.get('onednn'))} | {_fmt(_peak_of(res, t))} |")
    lines += ["", f"{res['args']['gemm_n']}^3 single-precision GEMM, best of 5 after a warm-up, measured at the start "
              "and at the end of the run (the better is shown; the `% peak` column also counts the oneDNN GEMM "
              "timed in each inference process), same thread count as the model runs. On this AMD CPU MKL takes its AVX2 path while oneDNN (which runs the models' "
              "convolutions) uses AVX-512, so the oneDNN figure is the limit the models can approach.", ""]
    # models
    lines += ["### Models", "", "| model | parameters | GMACs per s of audio |", "|---|---|---|"]
    for name in res["args"]["models"]:
        i = info.get(name, {})
        lines.append(f"| {MODEL_LABELS[name]} | {i.get('params', 0):,} | {_fmt(i.get('gmacs_per_s'))} |")
    lines += ["", "MACs of the convolutions and matrix products (LSTM, linear) of one forward pass on 4 s, per "
              "second of audio (`upcycle_se.models.profile`). The reference is described in "
              "`benchmarks/speed.py` (`DCCRNReference`): DCCRN-E's encoder/decoder (6 levels, 32-256 channels, "
              "kernel (5, 2), stride (2, 1)) in our complex layers, with a real 2-layer LSTM standing in for "
              "DCCRN-E's complex LSTM (sized to 3.7 M parameters in all).", ""]
    # inference
    lines += ["### Inference real-time factor (noisy -> clean)", "",
              "Library defaults (evaluation mode, `torch.inference_mode`, default allocator): what a user gets "
              "out of the box; the opt-in `upcycle_se.models.runtime.keep_freed_memory()` is faster still (see "
              "the before/after table). "
              "RTF = wall seconds / seconds of audio processed (batch x duration); below 1 is faster than "
              "real time. `cpu s` = process CPU seconds of one pass. GFLOP/s = 2 x MACs / wall time; "
              "`% peak` against the measured matmul peak at the same thread count (the best oneDNN sgemm of the "
              "run: at the start, at the end and in every inference process just before its model). Peak RSS = resident-set high-water "
              "mark of the fresh process (runtime + weights + activations), RSS before the first pass in "
              "brackets.", ""]
    lines += ["| model | device | threads | input | batch | RTF | wall s | cpu s | GFLOP/s | % peak | peak memory | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["infer"]:
        head = f"| {MODEL_LABELS[r['model']]} | {r['device'].upper()} | {r['threads'] if r['device'] == 'cpu' else '-'} " \
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
            peak = _peak_of(res, r["threads"])
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
    # ladder
    if res["ladder"]:
        lines += _ladder_lines(res)
    if res["compile"]:
        lines += _compile_lines(res)
    if res.get("precision"):
        lines += _precision_lines(res) + [""]
    # training
    lines += _train_lines(res)
    lines += ["", END]
    return "\n".join(lines) + "\n"


def _rows(res: Dict[str, Any], **match) -> List[Dict[str, Any]]:
    return [r for r in res["infer"] if all(r.get(k) == v for k, v in match.items()) and "wall_s" in r]


def _summary_lines(res: Dict[str, Any]) -> List[str]:
    out = ["Summary:"]
    threads = max(res["args"]["threads"])
    for model in res["args"]["models"]:
        rtfs = [r["wall_s"] / (r["seconds"] * r["batch"]) for r in _rows(res, model=model, device="cpu", threads=threads)]
        if rtfs:
            out.append(f"- {MODEL_LABELS[model]}, CPU, {threads} thread(s): RTF {min(rtfs):.3f} to {max(rtfs):.3f} "
                       f"over the grid ({'faster' if max(rtfs) < 1 else 'not always faster'} than real time).")
    for model in res["args"]["models"]:
        rows = _rows(res, model=model, device="cpu")
        eff = [2.0 * r["macs"] / r["wall_s"] / 1e9 / _peak_of(res, r["threads"]) for r in rows if _peak_of(res, r["threads"])]
        if eff:
            out.append(f"- {MODEL_LABELS[model]}: {100 * min(eff):.0f}-{100 * max(eff):.0f} % of the matmul peak.")
        scal = []
        for r in _rows(res, model=model, device="cpu", threads=max(res["args"]["threads"])):
            one = _rows(res, model=model, device="cpu", threads=min(res["args"]["threads"]), seconds=r["seconds"],
                        batch=r["batch"])
            if one and r["threads"] != one[0]["threads"]:
                scal.append(one[0]["wall_s"] / r["wall_s"])
        if scal:
            out.append(f"  {max(res['args']['threads'])} threads vs {min(res['args']['threads'])}: "
                       f"{statistics.median(scal):.2f}x faster (median over {len(scal)} configurations).")
    if "dccrn" in res["args"]["models"]:
        for model in [m for m in res["args"]["models"] if m != "dccrn"]:
            ratios = []
            for r in _rows(res, model=model, device="cpu"):
                ref = _rows(res, model="dccrn", device="cpu", threads=r["threads"], seconds=r["seconds"],
                            batch=r["batch"])
                if ref:
                    ratios.append(r["wall_s"] / ref[0]["wall_s"])
            if ratios:
                out.append(f"- RTF ratio {MODEL_LABELS[model]} / DCCRN-E-sized reference (same run, same config): "
                           f"median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}, "
                           f"{len(ratios)} CPU configurations).")
    return out


def _ladder_lines(res: Dict[str, Any]) -> List[str]:
    a = res["args"]
    out = ["### Before / after the speed work", "",
           f"{a['ladder_seconds']:g} s input, batch 1. The code steps (cumulative, top to bottom) run in one "
           f"process per model and thread count, switched pass by pass: a warm-up pass each, then {a['ladder_rounds']} "
           "rounds timing one pass of every step (order rotated each round), so all steps share the same machine "
           "load; median over rounds. The process-wide allocator setting cannot be switched back exactly, so its "
           f"row comes from {a['alloc_pairs']} alternating pair(s) of fresh processes (default / opt-in, median of "
           f"{a['ladder_repeats']} passes each): its time = the in-process default time / the pairs' ratio. Speed-up = "
           "`before` time / row time. Peak RSS (fresh processes, 1 thread): `before`, default and opt-in only.", "",
           "| model | threads | step | wall s | speed-up (wall) | cpu s | speed-up (cpu) | peak RSS |",
           "|---|---|---|---|---|---|---|---|"]
    labels = {k: label for k, label, _ in LADDER}
    for entry in res["ladder"]:
        if "steps" not in entry:
            out.append(f"| {MODEL_LABELS[entry['model']]} | {entry['threads']} | failed: {entry.get('error', '')[:150]} "
                       "| | | | | |")
            continue
        model, threads = entry["model"], entry["threads"]
        med = {k: (statistics.median(v["walls"]), statistics.median(v["cpus"])) for k, v in entry["steps"].items()}
        alloc = [r for r in res.get("alloc", []) if r["model"] == model and r["threads"] == threads and "wall_s" in r]
        mem_rows = [r for r in res.get("alloc", []) if r["model"] == model and r["threads"] == min(a["threads"])
                    and "peak_rss_mb" in r]

        def mem(key: str) -> str:
            vals = [r["peak_rss_mb"] for r in mem_rows if r["step"] == key and threads == min(a["threads"])]
            return f"{statistics.median(vals):,.0f} MB" if vals else "-"

        base = med.get("before")
        for key, label, _ in LADDER:
            if key == "allocator":
                d = [r for r in alloc if r["step"] == "fold"]
                o = [r for r in alloc if r["step"] == "allocator"]
                if not (d and o and "fold" in med):
                    continue
                rw = statistics.median(r["wall_s"] for r in d) / statistics.median(r["wall_s"] for r in o)
                rc = statistics.median(r["cpu_s"] for r in d) / statistics.median(r["cpu_s"] for r in o)
                w, c = med["fold"][0] / rw, med["fold"][1] / rc
                label = f"{label}; pairs: default / opt-in = {rw:.2f} (wall), {rc:.2f} (cpu)"
            elif key in med:
                w, c = med[key]
            else:
                continue
            sw = f"{base[0] / w:.2f}x" if base else "n/a"
            sc = f"{base[1] / c:.2f}x" if base else "n/a"
            out.append(f"| {MODEL_LABELS[model]} | {threads} | {label} | {w:.3g} | {sw} | {c:.3g} | {sc} | {mem(key)} |")
    out.append("")
    return out


def _compile_lines(res: Dict[str, Any]) -> List[str]:
    out = ["### torch.compile", "",
           "| model | threads | compile s | eager wall s | compiled wall s | compiled / eager (wall) | compiled / eager (cpu) |",
           "|---|---|---|---|---|---|---|"]
    for r in res["compile"]:
        if "error" in r:
            out.append(f"| {MODEL_LABELS[r['model']]} | {r['threads']} | failed: {r['error'][:200]} | | | | |")
            continue
        out.append(f"| {MODEL_LABELS[r['model']]} | {r['threads']} | {r['compile_s']:.0f} | {r['eager_wall_s']:.3g} "
                   f"| {r['wall_s']:.3g} | {r['wall_s'] / r['eager_wall_s']:.2f} | {r['cpu_s'] / r['eager_cpu_s']:.2f} |")
    out += ["", f"`torch.compile(model, dynamic=False)` with inductor's `freezing` (weights folded as constants, "
            f"oneDNN weight prepacking), on top of the same eager defaults, {res['args']['ladder_seconds']:g} s input, "
            "batch 1; eager and compiled passes interleaved in one process. A ratio below 1 means compiled is faster. "
            "The compile time is paid again for every new input shape.", ""]
    return out


def _train_lines(res: Dict[str, Any]) -> List[str]:
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
        inf = _rows(res, model=r["preset"], device="cpu", threads=r["threads"])
        if inf:
            rtf = statistics.median(i["wall_s"] / (i["seconds"] * i["batch"]) for i in inf)
            ratios.append(f"{r['preset']} {r['wall_s'] / (rtf * audio):.0f}x")
    if ratios:
        parts.append("a step (6 generator passes with backward, plus the discriminators and two optimizer steps) "
                     "costs " + ", ".join(ratios) + " the inference time of the same audio (median inference RTF "
                     "of the grid, same threads)")
    return "; ".join(parts) + "." if parts else "see the table."


def write_results(path: Path, section: str) -> None:
    """Replaces the speed section of ``path`` (appends it, or creates the file with both sections' markers)."""
    replace_section(path, section, BEGIN, END)


def write_precision_results(path: Path, section: str) -> None:
    """Replaces only the precision subsection, adding its markers at the end of the speed section first."""
    text = path.read_text() if path.is_file() else ""
    if PRECISION_BEGIN not in text:
        speed = text.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in text and END in text else "\n"
        write_results(path, BEGIN + speed.rstrip("\n") + f"\n\n{PRECISION_BEGIN}\n{PRECISION_END}\n\n{END}\n")
    replace_section(path, section, PRECISION_BEGIN, PRECISION_END)


def write_compile_results(path: Path, section: str) -> None:
    """Replaces only the bf16 + torch.compile subsection, adding its markers at the end of the speed section
    first."""
    text = path.read_text() if path.is_file() else ""
    if COMPILE_BEGIN not in text:
        speed = text.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in text and END in text else "\n"
        write_results(path, BEGIN + speed.rstrip("\n") + f"\n\n{COMPILE_BEGIN}\n{COMPILE_END}\n\n{END}\n")
    replace_section(path, section, COMPILE_BEGIN, COMPILE_END)


# ============================================================================ CLI

def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v]


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def _names(text: str) -> List[str]:
    names = [v for v in text.split(",") if v]
    bad = [n for n in names if n not in MODEL_LABELS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown model(s) {bad}; choose from {', '.join(MODEL_LABELS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller grid, fewer repeats, no compile (~6 min)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file whose speed section to rewrite")
    p.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    p.add_argument("--json", type=Path, default=None, help="also save the raw results here")
    p.add_argument("--silent", action="store_true", help="no progress log")
    p.add_argument("--models", type=_names, default=None, help="comma list of paper,small,dccrn")
    p.add_argument("--threads", type=_ints, default=None, help="CPU thread counts (default 1,2)")
    p.add_argument("--durations", type=_floats, default=None, help="input lengths in seconds (default 1,10,60)")
    p.add_argument("--batches", type=_ints, default=None, help="batch sizes (default 1,16)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per configuration (default 3)")
    p.add_argument("--mem-cap-gb", type=float, default=16.0,
                   help="skip configurations predicted above this peak RSS (or above 60 %% of free memory)")
    p.add_argument("--time-cap", type=float, default=None, help="skip configurations predicted to take longer (s)")
    p.add_argument("--gemm-n", type=int, default=2048)
    p.add_argument("--ladder", choices=("full", "ends", "none"), default="full",
                   help="before/after steps: all, only before + default + allocator, or none")
    p.add_argument("--ladder-models", type=_names, default=None)
    p.add_argument("--ladder-seconds", type=float, default=None)
    p.add_argument("--ladder-rounds", type=int, default=None, help="interleaved rounds of the code steps")
    p.add_argument("--ladder-repeats", type=int, default=None, help="timed passes per allocator-pair process")
    p.add_argument("--alloc-pairs", type=int, default=None, help="process pairs default / keep_freed_memory")
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
                   "(default paper,base,small)")
    p.add_argument("--precision-seconds", type=float, default=None, help="input of those passes (default 4, quick 1)")
    p.add_argument("--precision-rounds", type=int, default=3, help="interleaved fp32 / bf16 rounds")
    p.add_argument("--compile-precision-only", action="store_true",
                   help="only the bf16 + torch.compile part (generators and the packaged default through the "
                        "interface, at the largest --threads), rewriting just its subsection")
    p.add_argument("--compile-precision-models", type=_names, default=None,
                   help="generators of that part (default paper,base,small)")
    p.add_argument("--enhance-seconds", type=float, default=10.0,
                   help="file length for the packaged model through `upcycle-se enhance`")
    p.add_argument("--pesq-files", type=int, default=120,
                   help="benchmark test files scored with PESQ in fp32 and bf16 (0: skip)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    args.models = args.models or list(MODELS)
    args.threads = args.threads or [1, 2]
    args.durations = args.durations or ([1.0, 10.0] if quick else [1.0, 10.0, 60.0])
    args.batches = args.batches or ([1, 16] if not quick else [1, 4])
    args.repeats = args.repeats or (2 if quick else 3)
    args.time_cap = args.time_cap or (30.0 if quick else 150.0)
    args.ladder_models = args.ladder_models or ["paper"] + ([] if quick else ["small"])
    args.ladder_seconds = args.ladder_seconds or 4.0
    args.ladder_rounds = args.ladder_rounds or (3 if quick else 5)
    args.ladder_repeats = args.ladder_repeats or (2 if quick else 3)
    args.alloc_pairs = args.alloc_pairs or (1 if quick else 2)
    args.compile_models = args.compile_models or ["paper"]
    if args.compile is None:
        args.compile = not quick
    args.train_models = args.train_models or ["small", "paper"]
    steps = {"small": 2, "paper": 1} if quick else {"small": 3, "paper": 2}
    if args.train_steps:
        steps.update({k: int(v) for k, v in (kv.split("=") for kv in args.train_steps.split(","))})
    args.train_steps = steps
    args.precision_models = args.precision_models or ["paper", "base", "small"]
    args.precision_seconds = args.precision_seconds or (1.0 if quick else 4.0)
    args.compile_precision_models = args.compile_precision_models or ["paper", "base", "small"]
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return {}
    args = resolve_defaults(args)
    command = "python benchmarks/speed.py" + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
    if args.compile_precision_only:
        run = Runner(verbose=not args.silent)
        res = {"machine": machine_info(), "compile_precision": _run_compile_part(args, run)}
        res["total_s"] = time.perf_counter() - run.t_start
        section = "\n".join(_compile_precision_lines(res, command)) + "\n"
        return _publish(args, res, section, write_compile_results, "bf16 + torch.compile subsection")
    if args.precision_only:
        run = Runner(verbose=not args.silent)
        res = {"machine": machine_info(), "started": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
               "precision": _run_precision_part(args, run)}
        res["total_s"] = time.perf_counter() - run.t_start
        lines = _precision_lines(res)
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
