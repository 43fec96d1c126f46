"""Input checks shared by every metric: one mono float64 signal per argument, same length, 16 kHz.

Policy (the same for PESQ, STOI and the composite measures):

- *invalid input* raises :class:`~upcycle_se.errors.AudioError` with one line: NaN/inf samples, more than
  one channel, an empty signal, or two signals whose lengths differ by more than ``max_len_diff_s``;
- *valid input on which a measure is undefined* (a silent signal, a signal shorter than the measure needs)
  gives ``nan`` and a :class:`MetricWarning` that says why. Means over a test set skip such values and
  report how many were skipped (see :class:`upcycle_se.metrics.QualityStats`).
"""
from __future__ import annotations

import warnings
from typing import Tuple, Union

import numpy as np
import torch

from upcycle_se.errors import AudioError

SignalLike = Union[np.ndarray, torch.Tensor]

#: Every measure here works at 16 kHz: wide-band PESQ (ITU-T P.862.2) is defined only at 16 kHz.
SAMPLE_RATE = 16000

#: Two signals whose lengths differ by at most this many seconds are truncated to the shorter one (with a
#: warning): enhancement front ends (STFT framing, resampling) legitimately drop or add a few ms at the
#: end. A larger difference almost always means mismatched files, so it is an error instead.
MAX_LEN_DIFF_S = 0.1

#: A signal whose peak is below 2**-24 is treated as digital silence: that is below the quantisation step
#: of 24-bit PCM, so no recorded or enhanced speech is that quiet. PESQ crashes on an all-zero degraded
#: signal (a NaN inside its level alignment), so silence must be caught before calling it.
SILENCE_PEAK = 2.0 ** -24


class MetricWarning(UserWarning):
    """A measure could not be computed on a valid input (and is reported as NaN), or the input was adjusted."""


def as_signal(x: SignalLike, name: str = "signal") -> np.ndarray:
    """Returns ``x`` as a 1-D float64 numpy array, or raises :class:`AudioError` saying what is wrong.

    Arguments
    ---------
    x : ``[time]`` (or ``[1, time]`` / ``[time, 1]``) numpy array or torch tensor, float or signed int.
        Integer PCM is scaled to [-1, 1) by its full scale (int16 / 32768); every measure here is
        insensitive to a common gain, but segSNR is not to a gain applied to only one of the two signals,
        so mixing an int16 reference with a float estimate is handled correctly this way.
    name : what to call it in the error message (e.g. "reference").
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind == "i":
        x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min)
    elif x.dtype.kind == "f":
        x = x.astype(np.float64, copy=False)
    else:
        raise AudioError(f"{name}: unsupported sample type {x.dtype} (expected float or signed integer PCM)")
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise AudioError(f"{name}: expected a mono 1-D signal, got shape {tuple(x.shape)} "
                         "(mix or pick one channel first)")
    if x.size == 0:
        raise AudioError(f"{name}: empty signal (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    return x


def align_pair(ref: SignalLike, deg: SignalLike, max_len_diff_s: float = MAX_LEN_DIFF_S,
               sample_rate: int = SAMPLE_RATE) -> Tuple[np.ndarray, np.ndarray]:
    """Checks a (reference, degraded) pair and truncates both to the shorter length.

    Returns
    -------
    (ref, deg): 1-D float64 arrays of equal length ``[time]``.

    Raises
    ------
    AudioError: invalid samples/shape (see :func:`as_signal`), or lengths differing by more than
    ``max_len_diff_s`` seconds. A smaller difference is truncated with a :class:`MetricWarning`.
    """
    ref = as_signal(ref, "reference")
    deg = as_signal(deg, "degraded")
    diff = ref.size - deg.size
    if diff:
        if abs(diff) > max_len_diff_s * sample_rate:
            raise AudioError(
                f"reference has {ref.size} samples and degraded {deg.size} "
                f"({abs(diff) / sample_rate:.3f} s apart, more than the {max_len_diff_s:g} s allowed): "
                "are they the same utterance?")
        warnings.warn(f"lengths differ by {abs(diff)} samples ({abs(diff) / sample_rate * 1000:.1f} ms); "
                      "both truncated to the shorter", MetricWarning, stacklevel=3)
        n = min(ref.size, deg.size)
        ref, deg = ref[:n], deg[:n]
    return ref, deg


def is_silent(x: np.ndarray) -> bool:
    """True if the 1-D signal is digital silence (peak below :data:`SILENCE_PEAK`)."""
    return float(np.max(np.abs(x))) < SILENCE_PEAK


def undefined(reason: str) -> float:
    """Warns that a measure is undefined for this input and returns NaN (the documented value)."""
    warnings.warn(reason, MetricWarning, stacklevel=3)
    return float("nan")
