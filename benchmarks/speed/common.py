"""What the parts of the speed benchmark share: the measured models, the subprocess runner, the machine,
small measuring helpers and the results file's markers."""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.results_file import cpu_model, replace_section

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
PRECISION_BEGIN, PRECISION_END = "<!-- speed-precision:begin -->", "<!-- speed-precision:end -->"
COMPILE_BEGIN, COMPILE_END = "<!-- speed-compile:begin -->", "<!-- speed-compile:end -->"
SR = 16000
NO_GPU = "not measured: no GPU lent to this session (`torch.cuda.is_available()` is False)"
#: The recipes' hparams files of the trained presets (training throughput).
RECIPE_HPARAMS = {"paper": "upcycle.yaml", "small": "upcycle_small.yaml"}


# ============================================================================ the measured models

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


def _preset(name: str) -> Callable[[], nn.Module]:
    """The noisy->clean generator of a preset (mask mode): the authors' (``paper*``) or the redesign."""
    def build() -> nn.Module:
        from upcycle_se.models import build_generator

        return build_generator(name, mode="mask")
    return build


class Model(NamedTuple):
    label: str                      # how the tables name it
    build: Callable[[], nn.Module]  # a fresh, randomly initialised model (seeded by :func:`build_model`)
    grid: bool                      # in the default inference grid (``--models``)
    precision: bool                 # in the default fp32 / bf16 parts (needs ``set_unet_dtype``)


#: The measured models, one line each: ``--models`` and ``--precision-models`` choose among these names.
MODELS: Dict[str, Model] = {
    "paper": Model("Up-Cycle `paper` (the authors')", _preset("paper"), grid=True, precision=True),
    "redesign": Model("Up-Cycle `redesign`", _preset("redesign"), grid=True, precision=True),
    "base": Model("Up-Cycle `redesign_base`", _preset("base"), grid=False, precision=True),
    "small": Model("Up-Cycle `redesign_small`", _preset("small"), grid=True, precision=True),
    "dccrn": Model("DCCRN-E-sized reference", DCCRNReference, grid=True, precision=False),
}


def label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def build_model(name: str) -> nn.Module:
    """A model of :data:`MODELS`, seeded, in evaluation mode."""
    torch.manual_seed(0)
    return MODELS[name].build().eval()


# ============================================================================ measuring helpers

def rss_mb() -> float:
    with open("/proc/self/statm") as fin:
        return int(fin.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def speech_like(seconds: float, seed: int = 0):
    """A voiced, amplitude-modulated harmonic signal with a little noise (float32 numpy array)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.2 * env * voiced + 0.05 * rng.standard_normal(t.size)).astype("float32")


def bf16_hw() -> bool:
    from upcycle_se.models.runtime import cpu_has_bf16

    return cpu_has_bf16()


def fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


# ============================================================================ the machine and the runner

def machine_info() -> Dict[str, Any]:
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_gb": mem_gb, "torch": torch.__version__,
            "python": platform.python_version(), "gpu": gpu, "onednn": torch.backends.mkldnn.is_available(),
            "bf16_hardware": bf16_hw()}


def mem_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 4096.0


class Runner:
    """Starts workers (``python -m benchmarks.speed --worker CFG``) in fresh subprocesses and keeps a log."""

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
        proc = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--worker", json.dumps(cfg)],
                              capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO))
        for line in proc.stdout.splitlines():
            if line.startswith("@@RESULT@@"):
                return json.loads(line[len("@@RESULT@@"):])
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": " | ".join(tail)[-400:] or f"exit code {proc.returncode}"}


# ============================================================================ the results file

def write_results(path: Path, section: str) -> None:
    """Replaces the speed section of ``path`` (appends it, or creates the file with both sections' markers)."""
    replace_section(path, section, BEGIN, END)


def _write_subsection(path: Path, section: str, begin: str, end: str) -> None:
    """Replaces only one subsection, adding its markers at the end of the speed section first."""
    text = path.read_text() if path.is_file() else ""
    if begin not in text:
        speed = text.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in text and END in text else "\n"
        write_results(path, BEGIN + speed.rstrip("\n") + f"\n\n{begin}\n{end}\n\n{END}\n")
    replace_section(path, section, begin, end)


def write_precision_results(path: Path, section: str) -> None:
    """Replaces only the precision subsection of the speed section (``--precision-only``)."""
    _write_subsection(path, section, PRECISION_BEGIN, PRECISION_END)


def write_compile_results(path: Path, section: str) -> None:
    """Replaces only the bf16 + torch.compile subsection of the speed section (``--compile-precision-only``)."""
    _write_subsection(path, section, COMPILE_BEGIN, COMPILE_END)
