"""Chunked, cross-faded enhancement of signals of any length, in memory independent of that length.

A signal is cut into chunks that overlap by a short ramp (:func:`plan_chunks`); each chunk is enhanced
on its own and the outputs are overlap-added with raised-cosine cross-fades (:func:`overlap_add`), so
no seam is audible and the model never sees more than one batch of chunks. Sources are read
sequentially (:class:`AudioSource`): a file (:class:`upcycle_se.audio.FileSource`) or a tensor
(:class:`TensorSource`).

:class:`upcycle_se.inference.UpCycleEnhancement` streams every file and signal through here.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Protocol, Sequence, Tuple

import torch

from upcycle_se.errors import ConfigError

#: ``each``: enhance every channel on its own; ``downmix``: average the channels, write mono.
CHANNEL_MODES = ("each", "downmix")


class AudioSource(Protocol):
    """What :func:`overlap_add` reads: ``channels`` x ``frames`` samples at ``sample_rate``, in order."""

    sample_rate: int
    channels: int
    frames: int

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` samples, ``[channels, n]`` float32."""

    def close(self) -> None:
        """Releases what the source holds."""


class TensorSource:
    """An in-memory ``[channels, time]`` signal behind the interface of :class:`AudioSource`."""

    def __init__(self, sig: torch.Tensor, sample_rate: int):
        self.sig, self.sample_rate = sig, int(sample_rate)
        self.channels, self.frames = sig.shape
        self._pos = 0

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` samples, ``[channels, n]``."""
        block = self.sig[:, self._pos: self._pos + n]
        self._pos += n
        return block

    def close(self) -> None:
        """Nothing to release."""


class ChunkPlan:
    """Where the chunks of a ``total``-sample signal start, and their cross-fade windows.

    Chunks are ``length`` samples long; consecutive ones overlap by ``ramp`` samples, except the last,
    which is moved back to end exactly at ``total`` (so no chunk needs padding) and may overlap more.
    Window ``k`` rises over its first ``ramp`` samples (unless it starts the signal) and falls over its
    last ``ramp`` (unless it ends it); the rise is ``sin^2`` sampled at half-sample offsets, so it is
    never exactly 0 and a rise plus the matching fall is exactly 1. Dividing the overlap-added output by
    the overlap-added windows makes the weights sum to 1 everywhere, irregular last overlap included.
    """

    def __init__(self, total: int, length: int, ramp: int, starts: Sequence[int]):
        self.total, self.length, self.ramp, self.starts = total, length, ramp, tuple(starts)
        rise = torch.sin(0.5 * math.pi * (torch.arange(ramp, dtype=torch.float64) + 0.5) / max(ramp, 1)) ** 2
        self._rise = rise.float()
        self._windows: Dict[Tuple[bool, bool], torch.Tensor] = {}

    def window(self, index: int) -> torch.Tensor:
        """Cross-fade window of chunk ``index``: ``[length]`` float32."""
        start = self.starts[index]
        key = (start > 0, start + self.length < self.total)
        if key not in self._windows:
            win = torch.ones(self.length)
            if self.ramp and key[0]:
                win[: self.ramp] = self._rise
            if self.ramp and key[1]:
                win[-self.ramp:] = self._rise.flip(0)
            self._windows[key] = win
        return self._windows[key]


def check_chunking(chunk_seconds: float, overlap_seconds: float) -> None:
    """Raises ConfigError unless ``chunk_seconds >= 0`` (0: whole signal) and ``0 <= overlap <= chunk / 2``."""
    if not (math.isfinite(chunk_seconds) and chunk_seconds >= 0):
        raise ConfigError(f"chunk seconds must be >= 0 (0 = whole file), got {chunk_seconds}")
    if not (math.isfinite(overlap_seconds) and overlap_seconds >= 0):
        raise ConfigError(f"overlap seconds must be >= 0, got {overlap_seconds}")
    if chunk_seconds > 0 and 2 * overlap_seconds > chunk_seconds:
        raise ConfigError(f"overlap ({overlap_seconds} s) must be at most half a chunk ({chunk_seconds} s)")


def plan_chunks(total: int, sample_rate: int, chunk_seconds: float, overlap_seconds: float,
                model_rate: int = 16000) -> ChunkPlan:
    """Splits ``total`` samples at ``sample_rate`` into cross-faded chunks (see :class:`ChunkPlan`).

    ``chunk_seconds`` 0 means one chunk for the whole signal. Chunk lengths are rounded to whole
    periods of the ``sample_rate``/``model_rate`` ratio (e.g. 441 samples at 44.1 kHz), so a chunk
    resampled to the model's rate and back has exactly its own length.
    """
    if total < 1:
        raise ValueError("cannot plan chunks for an empty signal")
    check_chunking(chunk_seconds, overlap_seconds)
    period = sample_rate // math.gcd(sample_rate, model_rate)
    length = total if chunk_seconds == 0 else max(period, round(chunk_seconds * sample_rate / period) * period)
    if length >= total:
        return ChunkPlan(total, total, 0, [0])
    ramp = min(int(round(overlap_seconds * sample_rate)), length // 2)
    step = length - ramp
    return ChunkPlan(total, length, ramp, list(range(0, total - length, step)) + [total - length])


def overlap_add(source: AudioSource, sink: Callable[[torch.Tensor], None], plan: ChunkPlan, channels: str,
                batch_size: int, enhance: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Enhances ``source`` chunk by chunk along ``plan`` and overlap-adds the cross-faded outputs.

    ``enhance`` maps ``[n, length]`` chunks at the source's rate to ``[n, length]`` float32 CPU outputs;
    it gets up to ``batch_size`` chunks at once (times the channels with ``channels="each"``, averaged
    first with ``"downmix"``). ``sink`` receives the finished output in order as ``[out_channels, n]``
    float32 CPU blocks. Memory holds one batch of chunks, whatever the source's length.
    """
    total = int(source.frames)
    n_out, length, starts = (source.channels if channels == "each" else 1), plan.length, plan.starts
    inbuf, in_start = torch.zeros(source.channels, 0), 0  # input not yet consumed, from sample in_start
    acc, wsum, acc_start = torch.zeros(n_out, 0), torch.zeros(0), 0  # output not yet final
    for first in range(0, len(starts), batch_size):
        group = starts[first: first + batch_size]
        end = group[-1] + length
        need = end - (in_start + inbuf.shape[1])
        if need > 0:
            inbuf = torch.cat([inbuf, source.read(need)], dim=1)
        x = torch.stack([inbuf[:, s - in_start: s - in_start + length] for s in group])  # [n, C, L]
        x = x.reshape(-1, length) if channels == "each" else x.mean(dim=1)
        y = enhance(x).reshape(len(group), n_out, length)
        grow = end - (acc_start + acc.shape[1])
        acc = torch.cat([acc, torch.zeros(n_out, grow)], dim=1)
        wsum = torch.cat([wsum, torch.zeros(grow)])
        for k, start in enumerate(group):
            win, off = plan.window(first + k), start - acc_start
            acc[:, off: off + length] += y[k] * win
            wsum[off: off + length] += win
        # No later chunk starts before `final`: everything up to it is finished.
        final = starts[first + batch_size] if first + batch_size < len(starts) else total
        done = final - acc_start
        sink(acc[:, :done] / wsum[:done])
        acc, wsum, acc_start = acc[:, done:].clone(), wsum[done:].clone(), final
        inbuf, in_start = inbuf[:, final - in_start:].clone(), final
