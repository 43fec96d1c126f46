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


# ---------------------------------------------------------------------------------------- broad family
# Training noise drawn from wide parameter ranges, so that unseen test noises fall inside what was trained
# (a model trained on five fixed families lost to MMSE-LSA on every unseen family). Each generator draws
# all of its parameters from ``rng``; the test families above (pink, clicks, alsa, cafe) are not called.
def _random_shape(f: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Amplitude response ``[freq]``: a spectral slope of any sign, 0-4 random peaking EQ bands and
    random band limits (smooth 4th-order-like skirts)."""
    exponent = rng.uniform(-1.0, 3.0)  # blue (-1) ... white (0) ... pink (1) ... brown (2) ... darker
    fs = np.maximum(f, 20.0)
    shape = (fs / 1000.0) ** (-exponent / 2.0)
    log_f = np.log2(fs)
    for _ in range(int(rng.integers(0, 5))):
        centre = np.log2(rng.uniform(80.0, 0.45 * sr))
        width = rng.uniform(0.2, 1.5)  # octaves
        gain_db = rng.uniform(-15.0, 15.0)
        shape *= 10 ** (gain_db / 20.0 * np.exp(-0.5 * ((log_f - centre) / width) ** 2))
    lo = np.exp(rng.uniform(np.log(20.0), np.log(600.0))) if rng.random() < 0.6 else 20.0
    hi = np.exp(rng.uniform(np.log(1200.0), np.log(0.5 * sr))) if rng.random() < 0.6 else 0.5 * sr
    shape /= np.sqrt(1.0 + (lo / fs) ** 8) * np.sqrt(1.0 + (fs / hi) ** 8)
    shape[f < 20.0] = 0.0  # no DC / sub-audio drift
    return shape


def _shaped(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` filtered by :func:`_random_shape` (FFT filtering of the whole signal)."""
    n = len(x)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    return _unit(np.fft.irfft(np.fft.rfft(x) * _random_shape(f, sr, rng), n))


def _envelope(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A positive amplitude envelope ``[n]``: sinusoidal tremolo, a smooth random walk in dB, or on/off gating."""
    t = np.arange(n) / sr
    kind = rng.integers(3)
    if kind == 0:
        depth = rng.uniform(0.2, 0.95)
        return 1.0 + depth * np.sin(2 * np.pi * rng.uniform(0.3, 16.0) * t + rng.uniform(0, 2 * np.pi))
    if kind == 1:
        rate = rng.uniform(0.5, 8.0)  # Hz of the level changes
        ctrl = _lowpass(rng.standard_normal(n), rate, sr, 2)
        ctrl /= max(np.std(ctrl), 1e-12)
        return 10 ** (rng.uniform(3.0, 12.0) * ctrl / 20.0)
    period = rng.uniform(0.15, 1.5)  # s, on/off gating (intermittent machinery, sirens, pumps)
    gate = (np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) > rng.uniform(-0.5, 0.5)).astype(float)
    ramp = max(1, int(rng.uniform(0.005, 0.08) * sr))
    gate = np.convolve(gate, np.ones(ramp) / ramp, mode="same")
    return rng.uniform(0.0, 0.3) + gate


def stationary(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Stationary Gaussian noise of a random spectral slope, random EQ and random band limits."""
    return _shaped(rng.standard_normal(n), sr, rng)


def modulated(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Randomly shaped noise under a random amplitude envelope (tremolo, drifting level or gating)."""
    return _unit(_shaped(rng.standard_normal(n), sr, rng) * _envelope(n, sr, rng))


def tonal(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Tonal noise: 1-3 harmonic complexes (hum, whine, engine- or fan-like) with random fundamentals,
    harmonic decay, drift and vibrato, plus optional pure whistles, over a shaped noise floor."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        f0 = np.exp(rng.uniform(np.log(25.0), np.log(1200.0)))
        drift = 1.0 + rng.uniform(0.0, 0.06) * np.sin(2 * np.pi * rng.uniform(0.02, 0.5) * t + rng.uniform(0, 6.3))
        vibrato = 1.0 + rng.uniform(0.0, 0.01) * np.sin(2 * np.pi * rng.uniform(3.0, 9.0) * t)
        phase = 2 * np.pi * np.cumsum(f0 * drift * vibrato) / sr
        decay, odd_boost = rng.uniform(0.3, 2.0), rng.uniform(1.0, 2.0)
        for k in range(1, int(min(40, 0.45 * sr / (f0 * 1.1))) + 1):
            amp = k ** -decay * (odd_boost if k % 2 else 1.0)
            out += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) * 10 ** (rng.normal(0, 3.0) / 20.0)
    for _ in range(int(rng.integers(0, 3))):
        out += rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * rng.uniform(800.0, 0.42 * sr) * t + rng.uniform(0, 6.3))
    out = _unit(out)
    if rng.random() < 0.5:  # engines and fans thrum: the whole complex pulses at a firing rate
        out = _unit(out * (1.0 + rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * rng.uniform(5.0, 60.0) * t)))
    return _unit(out + 10 ** (rng.uniform(-35.0, -5.0) / 20.0) * _shaped(rng.standard_normal(n), sr, rng))


def babble_many(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Babble of 2-10 talkers from the split's babble pool, random levels, randomly coloured by the room."""
    pool = ctx.babble_pool()
    k = int(rng.integers(2, 11))
    out = sum(_talker_stream(n, rng, pool, sr) * 10 ** (rng.uniform(-9.0, 0.0) / 20.0) for _ in range(k))
    out = _unit(out + 1e-3 * rng.standard_normal(n))
    return _unit(_shaped(out, sr, rng)) if rng.random() < 0.5 else out


def bursts(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """Transient events at a random rate: shaped noise bursts (5-400 ms), impulses, damped resonances
    and low thuds, at random levels, over an optional faint floor."""
    out = np.zeros(n)
    count = max(1, int(rng.poisson(rng.uniform(0.5, 12.0) * n / sr)))
    for pos in np.sort(rng.integers(0, n, size=count)):
        kind = rng.integers(4)
        dur = int(rng.uniform(0.005, 0.4 if kind == 0 else 0.12) * sr) + 2
        tt = np.arange(dur) / sr
        if kind == 0:  # noise burst with a random attack/decay shape and colour
            env = np.minimum(1.0, tt / rng.uniform(1e-4, 0.03)) * np.exp(-tt / rng.uniform(0.005, 0.2))
            ev = _shaped(rng.standard_normal(dur), sr, rng) * env
        elif kind == 1:  # click / crack: a few-sample impulse ringing out through a random colour
            ev = np.zeros(dur)
            ev[0] = rng.choice([-1.0, 1.0])
            ev = sps.lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], ev)
        elif kind == 2:  # damped resonance (clink, bell, knock)
            f = np.exp(rng.uniform(np.log(300.0), np.log(0.42 * sr)))
            ev = np.sin(2 * np.pi * f * tt) * np.exp(-tt / rng.uniform(0.002, 0.05))
        else:  # thud (door, footstep, bump): low-frequency decaying
            f = rng.uniform(40.0, 250.0)
            ev = np.sin(2 * np.pi * f * tt) * np.exp(-tt / rng.uniform(0.01, 0.08))
        # peak-normalized: one sharp click must not carry the file's whole noise power (the mixer would
        # then scale the speech down to a few LSBs to keep that click below full scale)
        ev = ev / max(np.abs(ev).max(), 1e-12) * 10 ** (rng.normal(0.0, 6.0) / 20.0)
        end = min(n, pos + dur)
        out[pos:end] += ev[: end - pos]
    floor = 10 ** (rng.uniform(-40.0, -10.0) / 20.0) * _shaped(rng.standard_normal(n), sr, rng)
    return _unit(_unit(out) + floor)


def alsa_filtered(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """ALSA's recorded ``Noise.wav`` (random cross-faded segments) through a random slope / EQ / band limits.

    It is the recording behind the ``alsa`` *test* family, so the builder refuses it in training when the
    test set uses ``alsa``; ``broad`` leaves it out, ``broad_alsa`` adds it.
    """
    return _shaped(alsa(n, sr, rng, ctx), sr, rng)


#: Components of the ``broad`` family (the ALSA recording is only in ``broad_alsa``).
BROAD_COMPONENTS: Dict[str, Callable[..., np.ndarray]] = {
    "stationary": stationary, "modulated": modulated, "tonal": tonal, "hum": hum, "engine": engine,
    "babble_many": babble_many, "bursts": bursts,
}


def _broad_mixture(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext",
                   components: Dict[str, Callable[..., np.ndarray]]) -> np.ndarray:
    """One component (60 %) or a mixture of 2-3 at random relative levels (0 to -15 dB)."""
    names = sorted(components)
    if not ctx.has_babble():
        names = [k for k in names if k != "babble_many"]
    k = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
    picks = rng.choice(len(names), size=k, replace=False)
    out = sum(components[names[i]](n, sr, rng, ctx) * 10 ** (-rng.uniform(0.0, 15.0) / 20.0 if j else 0.0)
              for j, i in enumerate(picks))
    return _unit(out)


def broad(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """The broad training family: every draw picks generators of :data:`BROAD_COMPONENTS` and their parameters."""
    return _broad_mixture(n, sr, rng, ctx, BROAD_COMPONENTS)


def broad_alsa(n: int, sr: int, rng: np.random.Generator, ctx: "NoiseContext") -> np.ndarray:
    """:func:`broad` plus randomly filtered ALSA ``Noise.wav`` (only where the test set does not use ``alsa``)."""
    return _broad_mixture(n, sr, rng, ctx, {**BROAD_COMPONENTS, "alsa_filtered": alsa_filtered})


#: name -> generator ``(n, sample_rate, rng, ctx) -> unit-power noise``.
NOISE_TYPES: Dict[str, Callable[..., np.ndarray]] = {
    "white": white, "pink": pink, "brown": brown, "hum": hum, "engine": engine, "clicks": clicks,
    "babble": babble, "cafe": cafe, "alsa": alsa,
    "stationary": stationary, "modulated": modulated, "tonal": tonal, "babble_many": babble_many,
    "bursts": bursts, "alsa_filtered": alsa_filtered, "broad": broad, "broad_alsa": broad_alsa,
}
#: Noise types that use the split's babble voices (``broad`` draws on them when they are there).
NEEDS_BABBLE = ("babble", "cafe", "babble_many", "broad", "broad_alsa")
#: Noise types that read ALSA's ``Noise.wav``.
USES_ALSA_RECORDING = ("alsa", "alsa_filtered", "broad_alsa")


class NoiseContext:
    """Shared material for one split's noise: its babble utterances and ALSA's noise clip at ``sample_rate``."""

    def __init__(self, sample_rate: int, babble: Optional[Sequence[np.ndarray]] = None,
                 alsa_path: Path = ALSA_NOISE):
        self.sample_rate = sample_rate
        self._babble = list(babble or [])
        self._alsa_path = Path(alsa_path)
        self._alsa: Optional[np.ndarray] = None
        self._lock = threading.Lock()

    def has_babble(self) -> bool:
        """Whether this context holds babble utterances."""
        return bool(self._babble)

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
    uses = [name for name in names if name in USES_ALSA_RECORDING]
    if uses and not Path(alsa_path).is_file():
        raise UserError(f"noise type {uses[0]!r} needs {alsa_path} (install alsa-utils, "
                        f"e.g. `apt-get install alsa-utils`), or choose other noises")


def make_noise(name: str, n: int, sample_rate: int, rng: np.random.Generator, ctx: NoiseContext) -> np.ndarray:
    """``n`` samples of unit-power noise of type ``name``."""
    return NOISE_TYPES[name](n, sample_rate, rng, ctx)


