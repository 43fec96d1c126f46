"""Spectrogram figures of noisy, enhanced and clean speech (matplotlib, Agg; no pyplot state).

:func:`spectrogram_figure` stacks one panel per signal, time in seconds against frequency in kHz, on one
shared dB colour scale (0 dB = the loudest bin of all panels), so that panels compare by colour.
:func:`save_figure` writes a figure atomically. The figure also goes to TensorBoard as it is:
``SummaryWriter.add_figure(tag, spectrogram_figure(...), step)``.

Example
-------
>>> import torch
>>> wav = torch.randn(16000) * 0.1
>>> fig = spectrogram_figure({"noisy": wav, "enhanced": 0.5 * wav}, sample_rate=16000)
>>> [ax.get_title() for ax in fig.axes[:2]]
['noisy', 'enhanced']
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import torch
import torchaudio.functional as AF
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Signal = Union[torch.Tensor, np.ndarray]

#: Darkest colour of the scale, in dB below the loudest bin: quieter bins all look alike.
DYNAMIC_RANGE_DB = 80.0
#: STFT window length in seconds (32 ms; 512 samples at 16 kHz) and its hop (a quarter of it).
WINDOW_SECONDS = 0.032


def spectrogram_figure(signals: Mapping[str, Signal], sample_rate: int, title: Optional[str] = None) -> Figure:
    """One spectrogram panel per signal, in the mapping's order, on a shared dB colour scale.

    Arguments
    ---------
    signals : name (the panel's title, e.g. "noisy", "enhanced", "clean") -> waveform ``[time]``, or
        ``[channels, time]`` (channels averaged), float, at ``sample_rate``. Lengths may differ.
    sample_rate : Hz; the frequency axis goes up to ``sample_rate / 2``.
    title : optional title above the panels.

    Returns
    -------
    A matplotlib ``Figure`` on an Agg canvas: x axis time (s), y axis frequency (kHz), a colour bar in dB
    relative to the loudest bin of all panels, down to ``-DYNAMIC_RANGE_DB``.

    Raises
    ------
    ValueError: no signals, a non-positive rate, or an empty, non-finite or >2-D signal (one line).
    """
    if not signals:
        raise ValueError("spectrogram_figure needs at least one signal")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    powers = {name: _power_spectrogram(_as_mono(name, sig), int(sample_rate)) for name, sig in signals.items()}
    loudest = max(float(p.max()) for p in powers.values())
    ref = max(loudest, 1e-20)  # all-silent input: 0 dB is then an arbitrary tiny power
    hop = _hop(int(sample_rate))

    fig = Figure(figsize=(10, 0.6 + 2.2 * len(powers)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(len(powers), 1, sharex=True, sharey=True, squeeze=False)[:, 0])
    image = None
    for ax, (name, power) in zip(axes, powers.items()):
        db = AF.amplitude_to_DB(power, multiplier=10.0, amin=1e-20, db_multiplier=math.log10(ref))
        frames = power.shape[-1]
        image = ax.imshow(db.clamp_min(-DYNAMIC_RANGE_DB).numpy(), origin="lower", aspect="auto", cmap="magma",
                          vmin=-DYNAMIC_RANGE_DB, vmax=0.0, interpolation="nearest",
                          extent=(0.0, frames * hop / sample_rate, 0.0, sample_rate / 2000))
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_ylabel("Frequency (kHz)")
    axes[-1].set_xlabel("Time (s)")
    fig.colorbar(image, ax=list(axes), label="Power (dB re. loudest bin)", pad=0.01)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(figure: Figure, path: Union[str, os.PathLike], dpi: int = 100) -> Path:
    """Writes ``figure`` to ``path`` (format from its extension, e.g. ``.png``) atomically: it is drawn into
    a hidden temporary file beside ``path`` and renamed over it. Returns ``path``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            figure.savefig(f, format=fmt, dpi=dpi)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_spectrograms(signals: Mapping[str, Signal], sample_rate: int, path: Union[str, os.PathLike],
                      title: Optional[str] = None) -> Path:
    """:func:`spectrogram_figure` saved with :func:`save_figure`; returns ``path``."""
    return save_figure(spectrogram_figure(signals, sample_rate, title), path)


def _as_mono(name: str, signal: Signal) -> torch.Tensor:
    """``[time]`` or ``[channels, time]`` -> float32 ``[time]`` (channels averaged), checked."""
    sig = torch.as_tensor(np.asarray(signal) if not isinstance(signal, torch.Tensor) else signal)
    sig = sig.detach().cpu().float()
    if sig.dim() == 2:
        sig = sig.mean(dim=0)
    if sig.dim() != 1 or sig.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty [time] or [channels, time] signal, got {tuple(sig.shape)}")
    if not torch.isfinite(sig).all():
        raise ValueError(f"{name}: contains NaN or infinite samples")
    return sig


def _n_fft(sample_rate: int) -> int:
    """The power of two nearest to :data:`WINDOW_SECONDS` at ``sample_rate`` (512 at 16 kHz)."""
    return 2 ** max(4, round(math.log2(WINDOW_SECONDS * sample_rate)))


def _hop(sample_rate: int) -> int:
    return _n_fft(sample_rate) // 4


def _power_spectrogram(sig: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[time]`` -> power ``[freq, frames]`` (Hann window, centred frames: frame k is at k * hop)."""
    n_fft = _n_fft(sample_rate)
    return AF.spectrogram(sig, pad=0, window=torch.hann_window(n_fft), n_fft=n_fft, hop_length=_hop(sample_rate),
                          win_length=n_fft, power=2.0, normalized=False, center=True, pad_mode="constant")
