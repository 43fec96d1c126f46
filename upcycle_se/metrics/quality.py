"""Wide-band PESQ and (extended) STOI on one pair of 16 kHz signals.

Thin wrappers over the reference libraries (``pesq`` = ITU-T P.862.2 C code; ``pystoi`` = Taal et al.'s
STOI and Jensen & Taal's ESTOI): the values are exactly those of a direct library call on the same float
samples. The wrappers add the input checks of :mod:`upcycle_se.metrics.signals` and turn the libraries'
failure modes into documented values:

============================================  ==========================================================
input                                         result
============================================  ==========================================================
identical signals                             PESQ 4.644 (the P.862.2 mapping's ceiling), STOI 1.0
silent reference (peak < 2**-24)              NaN + MetricWarning (nothing to compare with)
silent degraded signal                        PESQ NaN + warning (P.862 cannot level-align silence; the
                                              library would crash); STOI as computed (about 0)
shorter than 0.25 s                           PESQ NaN + warning (P.862's minimum)
too little speech for STOI (< 30 frames of    STOI NaN + warning (pystoi would return 1e-5, which would
384 ms after silence removal)                 silently drag a mean down)
no utterance found by PESQ                    NaN + warning
NaN/inf samples, stereo, lengths > 0.1 s off  AudioError
============================================  ==========================================================
"""
from __future__ import annotations

import warnings

import numpy as np
import pystoi
from pystoi.stoi import FS as STOI_RATE, N_FRAME as STOI_FRAME
from pesq import PesqError, pesq as _pesq

from upcycle_se.metrics.signals import (
    MAX_LEN_DIFF_S,
    SAMPLE_RATE,
    SignalLike,
    align_pair,
    is_silent,
    undefined,
)

#: P.862's minimum input length: the C code refuses buffers shorter than a quarter of a second.
PESQ_MIN_SAMPLES = SAMPLE_RATE // 4


def pesq_wb(ref: SignalLike, deg: SignalLike, max_len_diff_s: float = MAX_LEN_DIFF_S) -> float:
    """Wide-band PESQ (ITU-T P.862.2 MOS-LQO, range about 1.04-4.64) of ``deg`` against ``ref``.

    Arguments
    ---------
    ref, deg : ``[time]`` signals at 16 kHz (float or int PCM, numpy or torch).
    max_len_diff_s : see :func:`upcycle_se.metrics.signals.align_pair`.

    Returns
    -------
    The score, or NaN (with a :class:`MetricWarning`) where PESQ is undefined (see the module table).
    """
    ref, deg = align_pair(ref, deg, max_len_diff_s)
    return pesq_aligned(ref, deg)


def stoi(ref: SignalLike, deg: SignalLike, extended: bool = False,
         max_len_diff_s: float = MAX_LEN_DIFF_S) -> float:
    """STOI (Taal et al. 2011) or, with ``extended``, ESTOI (Jensen & Taal 2016), in [0, 1] (ESTOI can dip below 0).

    Arguments
    ---------
    ref, deg : ``[time]`` signals at 16 kHz (pystoi resamples to its internal 10 kHz).
    extended : compute extended STOI.
    max_len_diff_s : see :func:`upcycle_se.metrics.signals.align_pair`.
    """
    ref, deg = align_pair(ref, deg, max_len_diff_s)
    return stoi_aligned(ref, deg, extended)


def pesq_aligned(ref: np.ndarray, deg: np.ndarray) -> float:
    """PESQ on an already aligned float64 pair, with the failure modes turned into NaN + warning."""
    if ref.size < PESQ_MIN_SAMPLES:
        return undefined(f"PESQ undefined: {ref.size / SAMPLE_RATE:.3f} s is shorter than P.862's 0.25 s minimum")
    if is_silent(ref):
        return undefined("PESQ undefined: the reference is silent")
    if is_silent(deg):
        return undefined("PESQ undefined: the degraded/enhanced signal is silent")
    try:
        return float(_pesq(SAMPLE_RATE, ref, deg, "wb"))
    except PesqError as err:  # NoUtterancesError, BufferTooShortError: the C code found no usable speech
        msg = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        return undefined(f"PESQ undefined: {msg}")
    except ValueError as err:  # a NaN inside the C code's level alignment on degenerate inputs
        return undefined(f"PESQ undefined: {err}")


def stoi_aligned(ref: np.ndarray, deg: np.ndarray, extended: bool) -> float:
    """(E)STOI on an already aligned float64 pair; pystoi's 1e-5 'not enough frames' sentinel becomes NaN."""
    if is_silent(ref):
        return undefined(f"{'ESTOI' if extended else 'STOI'} undefined: the reference is silent")
    if ref.size * STOI_RATE < STOI_FRAME * SAMPLE_RATE:  # not one frame at 10 kHz: pystoi raises AxisError
        return undefined(f"{'ESTOI' if extended else 'STOI'} undefined: less than 30 frames (384 ms) "
                         "of speech after silence removal")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(ref, deg, SAMPLE_RATE, extended=extended))
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            return undefined(f"{'ESTOI' if extended else 'STOI'} undefined: less than 30 frames (384 ms) "
                             "of speech after silence removal")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value
