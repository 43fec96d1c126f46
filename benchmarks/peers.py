"""The denoisers a user would run instead, as enhancers beside the classical baselines of the quality benchmark.

* :func:`rnnoise` -- RNNoise (J.-M. Valin, "A hybrid DSP/deep learning approach to real-time full-band speech
  enhancement", MMSP 2018) through ``pyrnnoise``, whose ``librnnoise.so`` carries the model. RNNoise runs at
  48 kHz on 480-sample frames: the input is resampled to 48 kHz and back (``scipy.signal.resample_poly``,
  a linear-phase filter whose delay it removes), and fed to ``rnnoise_process_frame`` as float samples in
  the 16-bit range (no int16 rounding or clipping on the way in).
* :func:`webrtc_ns` -- WebRTC's noise suppression (``webrtc-noise-gain``, the webrtc-audio-processing
  library) at its strongest level, 4, with automatic gain off; 16 kHz 16-bit PCM in 10 ms frames, so the
  input is rounded to 16 bits (and resampled to 16 kHz if it is at another rate). The library also
  high-passes the signal (about -3 dB at 100 Hz): a phase lead at low frequencies, not a delay.
* :func:`noisereduce` -- spectral gating (T. Sainburg, ``noisereduce``) in its non-stationary mode with the
  package's defaults.

Each one takes a float waveform ``[time]`` (or ``[..., time]``, processed row by row) and returns one of the
same shape and length, time-aligned with its input: the peers' algorithmic delays were measured with
impulses and are removed (``RNNOISE_DELAY_48K``, ``WEBRTC_DELAY_16K``; noisereduce has none), the input
being padded with that many zeros at its end so that no output sample is lost. ``tests/test_peers.py``
checks the alignment with impulses.

The packages are the ``peers`` extra (``pip install '.[peers]'``, done by ``scripts/setup.sh``); they are
imported on first use, and :func:`missing_peers` says which ones this environment lacks.
"""
from __future__ import annotations

import ctypes
import importlib
from math import gcd
from typing import Callable, Dict, List, Tuple

import numpy as np
from scipy.signal import resample_poly

__all__ = ["rnnoise", "webrtc_ns", "noisereduce", "PEERS", "PEER_NAMES", "PEER_MODULES", "missing_peers",
           "RNNOISE_DELAY_48K", "WEBRTC_DELAY_16K"]

#: RNNoise's delay at 48 kHz: two 480-sample frames (measured: an impulse at sample n comes out at n + 960).
RNNOISE_DELAY_48K = 960
#: WebRTC noise suppression's delay at 16 kHz, levels 1 to 4 (measured: an impulse at sample n comes out at
#: n + 96; level 0, suppression off, has none).
WEBRTC_DELAY_16K = 96
#: Peer name -> the module it needs (from the ``peers`` extra).
PEER_MODULES = {"rnnoise": "pyrnnoise.rnnoise", "webrtc": "webrtc_noise_gain", "noisereduce": "noisereduce"}
#: The pip requirement that brings each peer (the pins of setup.py's ``peers`` extra).
PEER_PACKAGES = {"rnnoise": "pyrnnoise==0.4.5", "webrtc": "webrtc-noise-gain==1.3.0",
                 "noisereduce": "noisereduce==3.0.3"}

_RNNOISE_SR = 48000
_WEBRTC_SR = 16000
_WEBRTC_FRAME = 160  # 10 ms at 16 kHz
_PCM_SCALE = 32768.0


def missing_peers() -> Dict[str, str]:
    """``{peer name: why it cannot run}`` for every peer whose package does not import here."""
    out = {}
    for name, module in PEER_MODULES.items():
        try:
            importlib.import_module(module)
        except (ImportError, OSError) as err:  # pyrnnoise raises OSError when its library is missing
            out[name] = (f"{module} does not import ({type(err).__name__}: {err}); "
                         f"install the peers extra: pip install '.[peers]' ({PEER_PACKAGES[name]})")
    return out


def waveform_rows(noisy: np.ndarray) -> Tuple[np.ndarray, Tuple[int, ...], np.dtype]:
    """``[..., time]`` -> (float64 ``[rows, time]``, checked finite; the input's shape; the output dtype)."""
    x = np.asarray(noisy)
    if x.ndim == 0:
        raise ValueError("expected a waveform [time] or [..., time], got a scalar")
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or Inf")
    rows = x.reshape(-1, x.shape[-1]) if x.size else x.reshape(0, x.shape[-1])  # -1 is ambiguous when empty
    return rows, x.shape, out_dtype


def _per_row(noisy: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    x, shape, dtype = waveform_rows(noisy)
    T = shape[-1]
    if x.size == 0:
        return np.zeros(shape, dtype=dtype)
    # Digital silence stays silence (noisereduce alone returns NaN for it: 0 / 0 in its gate).
    out = np.stack([fn(row)[:T] if np.any(row) else np.zeros(T) for row in x])
    if out.shape[-1] != T:
        raise RuntimeError(f"a peer returned {out.shape[-1]} samples for {T}")
    return out.reshape(shape).astype(dtype, copy=False)


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Zero-phase polyphase resampling of ``x [time]`` (no delay); the identity when the rates match."""
    if sr_in == sr_out:
        return x
    g = gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g)


def rnnoise(noisy: np.ndarray, sr: int = 16000) -> np.ndarray:
    """RNNoise (``pyrnnoise`` 0.4.5's ``librnnoise``) at 48 kHz, delay removed.

    Arguments
    ---------
    noisy : waveform ``[time]`` or ``[..., time]`` at ``sr``, full scale 1.0.
    sr : sample rate in Hz.

    Returns
    -------
    enhanced waveform, same shape and length as ``noisy``, time-aligned with it.
    """
    R = importlib.import_module("pyrnnoise.rnnoise")
    frame = int(R.FRAME_SIZE)
    fptr = ctypes.POINTER(ctypes.c_float)

    def one(row: np.ndarray) -> np.ndarray:
        x48 = _resample(row, sr, _RNNOISE_SR) * _PCM_SCALE
        n = x48.size
        total = -(-(n + RNNOISE_DELAY_48K) // frame) * frame  # whole frames covering the delayed signal
        buf = np.zeros(total, dtype=np.float32)
        buf[:n] = x48
        out = np.empty_like(buf)
        state = R.lib.rnnoise_create(None)
        try:
            for i in range(0, total, frame):
                src = np.ascontiguousarray(buf[i:i + frame])
                dst = out[i:i + frame]  # contiguous view: written in place
                R.lib.rnnoise_process_frame(state, dst.ctypes.data_as(fptr), src.ctypes.data_as(fptr))
        finally:
            R.lib.rnnoise_destroy(state)
        y48 = out[RNNOISE_DELAY_48K:RNNOISE_DELAY_48K + n].astype(np.float64) / _PCM_SCALE
        return _resample(y48, _RNNOISE_SR, sr)

    return _per_row(noisy, one)


def webrtc_ns(noisy: np.ndarray, sr: int = 16000, *, level: int = 4) -> np.ndarray:
    """WebRTC noise suppression (``webrtc-noise-gain`` 1.3.0) at ``level``, automatic gain off, delay removed.

    Arguments
    ---------
    noisy : waveform ``[time]`` or ``[..., time]`` at ``sr``, full scale 1.0 (clipped to it: 16-bit PCM).
    sr : sample rate in Hz (resampled to 16 kHz and back when it differs).
    level : suppression level, 0 (off) to 4 (strongest).

    Returns
    -------
    enhanced waveform, same shape and length as ``noisy``, time-aligned with it.
    """
    if not 0 <= int(level) <= 4:
        raise ValueError(f"level must be 0 to 4, got {level}")
    AudioProcessor = importlib.import_module("webrtc_noise_gain").AudioProcessor

    def one(row: np.ndarray) -> np.ndarray:
        x16 = _resample(row, sr, _WEBRTC_SR)
        n = x16.size
        delay = WEBRTC_DELAY_16K if level > 0 else 0
        total = -(-(n + delay) // _WEBRTC_FRAME) * _WEBRTC_FRAME
        pcm = np.zeros(total, dtype=np.int16)
        pcm[:n] = np.clip(np.round(x16 * _PCM_SCALE), -32768, 32767)
        proc = AudioProcessor(0, int(level))  # auto gain 0 dBFS = off
        out = np.concatenate([np.frombuffer(proc.Process10ms(pcm[i:i + _WEBRTC_FRAME].tobytes()).audio,
                                            dtype=np.int16) for i in range(0, total, _WEBRTC_FRAME)])
        y16 = out[delay:delay + n].astype(np.float64) / _PCM_SCALE
        return _resample(y16, _WEBRTC_SR, sr)

    return _per_row(noisy, one)


def noisereduce(noisy: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Non-stationary spectral gating (``noisereduce`` 3.0.3, its defaults otherwise; no delay).

    Arguments
    ---------
    noisy : waveform ``[time]`` or ``[..., time]`` at ``sr``.
    sr : sample rate in Hz.

    Returns
    -------
    enhanced waveform, same shape and length as ``noisy``, time-aligned with it.
    """
    nr = importlib.import_module("noisereduce")
    return _per_row(noisy, lambda row: np.asarray(nr.reduce_noise(y=row, sr=sr, stationary=False, n_jobs=1),
                                                  dtype=np.float64))


#: Name -> enhancer ``f(noisy [time], sr=16000) -> [time]``, as ``benchmarks.baselines.BASELINES``.
PEERS: Dict[str, Callable[..., np.ndarray]] = {"rnnoise": rnnoise, "webrtc": webrtc_ns, "noisereduce": noisereduce}
#: The names above, in table order.
PEER_NAMES: List[str] = list(PEERS)
