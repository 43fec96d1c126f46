"""Noise types for the offline corpus, the SNR definition and the mixer.

Every generator returns float64 noise of unit mean power, ``[n]`` at ``sample_rate``, deterministic in the
:class:`numpy.random.Generator` it is given. Train and test use different types (as DEMAND's do).

SNR definition (see :func:`active_speech_power`): speech power is the mean power of the *active* 20 ms
frames of the clean signal (frames within 40 dB of its loudest frame, a simple stand-in for ITU-T P.56's
active speech level, so leading/trailing silence does not lower it); noise power is the mean power of the
noise over the whole file. :func:`measure_snr` applies the same definition to a written (clean, noisy) pair.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import signal as sps

from upcycle_se.audio import read_audio, resample_audio
from upcycle_se.errors import UserError

#: ALSA's recorded noise clip (package alsa-utils), 48 kHz mono, 1.4 s.
ALSA_NOISE = Path("/usr/share/sounds/alsa/Noise.wav")

FRAME_S = 0.020
ACTIVE_RANGE_DB = 40.0


# ---------------------------------------------------------------------------------------- SNR
def active_speech_power(sig: np.ndarray, sample_rate: int, *, range_db: float = ACTIVE_RANGE_DB) -> float:
    """Mean power of the 20 ms frames of ``sig`` within ``range_db`` dB of its loudest frame."""
    sig = np.asarray(sig, dtype=np.float64)
    hop = max(1, int(round(FRAME_S * sample_rate)))
    n = len(sig) // hop
    if n == 0:
        return float(np.mean(sig ** 2)) if len(sig) else 0.0
    energy = (sig[: n * hop].reshape(n, hop) ** 2).mean(axis=1)
    active = energy[energy >= energy.max() * 10 ** (-range_db / 10.0)]
    return float(active.mean())


def measure_snr(clean: np.ndarray, noisy: np.ndarray, sample_rate: int) -> float:
    """SNR in dB of ``noisy`` against ``clean`` under this module's definition (noise = noisy - clean)."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return 10.0 * np.log10(active_speech_power(clean, sample_rate) / max(float(np.mean(noise ** 2)), 1e-20))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int, *,
               peak: float = 0.99) -> Tuple[np.ndarray, np.ndarray]:
    """Returns ``(clean, noisy)`` with ``noisy = clean + g * noise`` at ``snr_db``.

    If the mixture (or the clean signal) would exceed ``peak``, both are scaled by the same factor, which
    keeps the SNR and the clean/noisy pairing exact.
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)[: len(clean)]
    p_speech = active_speech_power(clean, sample_rate)
    p_noise = max(float(np.mean(noise ** 2)), 1e-20)
    gain = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10.0)))
    noisy = clean + gain * noise
    top = max(np.abs(noisy).max(), np.abs(clean).max())
    if top > peak:
        clean, noisy = clean * (peak / top), noisy * (peak / top)
    return clean.astype(np.float32), noisy.astype(np.float32)


# ---------------------------------------------------------------------------------------- helpers
def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / max(np.sqrt(np.mean(x ** 2)), 1e-12)


def coloured_noise(n: int, sample_rate: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), high-passed at 20 Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shape = np.zeros_like(f)
    keep = f >= 20.0  # no DC / sub-audio drift (brown noise would otherwise wander off)
    shape[keep] = f[keep] ** (-exponent / 2.0)
    return _unit(np.fft.irfft(spec * shape, n))


def _lowpass(x: np.ndarray, cutoff: float, sample_rate: int, order: int = 4) -> np.ndarray:
    sos = sps.butter(order, min(cutoff, 0.45 * sample_rate), btype="low", fs=sample_rate, output="sos")
    return sps.sosfilt(sos, x)


def _bandpass(x: np.ndarray, lo: float, hi: float, sample_rate: int, order: int = 2) -> np.ndarray:
    sos = sps.butter(order, [lo, min(hi, 0.45 * sample_rate)], btype="band", fs=sample_rate, output="sos")
    return sps.sosfilt(sos, x)


# ---------------------------------------------------------------------------------------- generators
def white(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Stationary white Gaussian noise."""
    return _unit(rng.standard_normal(n))


def pink(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Stationary pink (1/f) noise."""
    return coloured_noise(n, sr, rng, 1.0)


def brown(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Stationary brown (1/f^2) noise."""
    return coloured_noise(n, sr, rng, 2.0)


def hum(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Mains hum (50/60 Hz) with decaying harmonics and a slow wobble, over a faint pink floor."""
    t = np.arange(n) / sr
    f0 = rng.choice([50.0, 60.0]) * (1.0 + rng.uniform(-0.01, 0.01))
    slope = rng.uniform(0.6, 1.4)
    out = np.zeros(n)
    for k in range(1, 13):
        amp = k ** -slope * (1.6 if k % 2 else 1.0)  # odd harmonics dominate transformer buzz
        out += amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    out *= 1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 2 * np.pi))
    return _unit(_unit(out) + 0.2 * coloured_noise(n, sr, rng, 1.0))


def engine(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Low-passed noise amplitude-modulated at a drifting firing rate, plus its harmonic rumble."""
    t = np.arange(n) / sr
    fire = rng.uniform(22.0, 55.0) * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
    phase = 2 * np.pi * np.cumsum(fire) / sr
    base = _lowpass(coloured_noise(n, sr, rng, 1.0), rng.uniform(250.0, 700.0), sr)
    rumble = sum((0.7 ** k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 5))
    mod = 1.0 + rng.uniform(0.4, 0.8) * np.sin(phase)
    return _unit(_unit(base * mod) + 0.5 * _unit(rumble))


def clicks(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Impulsive events (keyboard taps, clinks: short noise bursts and damped resonances) over a faint floor."""
    out = np.zeros(n)
    count = max(1, int(rng.poisson(rng.uniform(3.0, 9.0) * n / sr)))
    for pos in np.sort(rng.integers(0, n, size=count)):
        dur = int(rng.uniform(0.01, 0.06) * sr)
        tt = np.arange(dur) / sr
        decay = np.exp(-tt / rng.uniform(0.002, 0.015))
        if rng.random() < 0.5:
            ev = rng.standard_normal(dur) * decay
        else:
            ev = np.sin(2 * np.pi * rng.uniform(1500.0, min(6000.0, 0.4 * sr)) * tt) * decay
        ev *= np.exp(rng.normal(0.0, 0.6))
        end = min(n, pos + dur)
        out[pos:end] += ev[: end - pos]
    return _unit(_unit(out) + 0.08 * coloured_noise(n, sr, rng, 1.0))


def _talker_stream(n: int, rng: np.random.Generator, pool: Sequence[np.ndarray], sr: int) -> np.ndarray:
    parts: List[np.ndarray] = []
    total = 0
    offset = int(rng.integers(0, sr))  # talkers are not aligned with the file start
    while total < n + offset:
        utt = pool[int(rng.integers(len(pool)))]
        gap = np.zeros(int(rng.uniform(0.02, 0.3) * sr))
        parts += [utt, gap]
        total += len(utt) + len(gap)
    return np.concatenate(parts)[offset: offset + n]


def babble(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """A sum of 4-8 talkers (the split's babble voices), each a random sequence of their utterances."""
    pool = ctx.babble_pool()
    k = int(rng.integers(4, 9))
    out = sum(_talker_stream(n, rng, pool, sr) * 10 ** (rng.uniform(-6.0, 0.0) / 20.0) for _ in range(k))
    return _unit(_lowpass(out, 0.4 * sr, sr, 2) + 1e-3 * rng.standard_normal(n))


def cafe(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Cafe-like scene: 5-8 talker babble, clinks of cutlery and a broadband room floor."""
    return _unit(babble(n, sr, rng, ctx) + 0.4 * clicks(n, sr, rng, ctx)
                 + 0.3 * _bandpass(coloured_noise(n, sr, rng, 1.0), 80.0, 4000.0, sr))


def alsa(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """ALSA's recorded ``Noise.wav``: random segments of it, cross-faded, with a random spectral tilt."""
    src = ctx.alsa_noise()
    fade = int(0.02 * sr)
    seg_len = max(fade * 4, min(len(src) // 2, int(rng.uniform(0.3, 0.6) * sr)))
    ramp = np.linspace(0.0, 1.0, fade)
    out = np.zeros(n + seg_len)
    pos = 0
    while pos < n:
        start = int(rng.integers(0, len(src) - seg_len))
        seg = src[start: start + seg_len].copy()
        seg[:fade] *= ramp
        seg[-fade:] *= ramp[::-1]
        out[pos: pos + seg_len] += seg[: len(out) - pos]
        pos += seg_len - fade
    out = out[:n]
    tilt = rng.uniform(-0.5, 0.5)  # pre-emphasis-like filter: brighter or duller recordings
    return _unit(sps.lfilter([1.0, -tilt], [1.0], out))


#: name -> generator ``(n, sample_rate, rng, ctx) -> unit-power noise``.
NOISE_TYPES: Dict[str, Callable[..., np.ndarray]] = {
    "white": white, "pink": pink, "brown": brown, "hum": hum, "engine": engine, "clicks": clicks,
    "babble": babble, "cafe": cafe, "alsa": alsa,
}
#: Noise types that need synthesized babble voices.
NEEDS_BABBLE = ("babble", "cafe")


class NoiseContext:
    """Shared material for one split's noise: its babble utterances and ALSA's noise clip at ``sample_rate``."""

    def __init__(self, sample_rate: int, babble: Optional[Sequence[np.ndarray]] = None,
                 alsa_path: Path = ALSA_NOISE):
        self.sample_rate = sample_rate
        self._babble = list(babble or [])
        self._alsa_path = Path(alsa_path)
        self._alsa: Optional[np.ndarray] = None
        self._lock = threading.Lock()

    def babble_pool(self) -> List[np.ndarray]:
        """The babble utterances (float arrays at ``sample_rate``)."""
        if not self._babble:
            raise RuntimeError("this noise context has no babble voices")
        return self._babble

    def alsa_noise(self) -> np.ndarray:
        """ALSA's ``Noise.wav`` at ``sample_rate``, unit power."""
        with self._lock:
            if self._alsa is None:
                sig, sr = read_audio(self._alsa_path)
                self._alsa = _unit(resample_audio(sig, sr, self.sample_rate).numpy().astype(np.float64))
            return self._alsa


def check_noise_types(names: Sequence[str], alsa_path: Path = ALSA_NOISE) -> None:
    """Raises :class:`UserError` for an unknown noise type, or for ``alsa`` when its clip is missing."""
    for name in names:
        if name not in NOISE_TYPES:
            raise UserError(f"unknown noise type {name!r}; choose from {', '.join(sorted(NOISE_TYPES))}")
    if "alsa" in names and not Path(alsa_path).is_file():
        raise UserError(f"noise type 'alsa' needs {alsa_path} (install alsa-utils, "
                        f"e.g. `apt-get install alsa-utils`), or choose other test noises")


def make_noise(name: str, n: int, sample_rate: int, rng: np.random.Generator, ctx: NoiseContext) -> np.ndarray:
    """``n`` samples of unit-power noise of type ``name``."""
    return NOISE_TYPES[name](n, sample_rate, rng, ctx)
