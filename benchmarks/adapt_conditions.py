"""Noise conditions for the adaptation benchmark (``benchmarks/adapt.py``): noises the packaged models never saw.

The packaged models trained on the randomized ``broad`` family of :mod:`upcycle_se.corpus.noise` and were
validated on its pink / clicks / alsa / cafe test families. ``upcycle-se adapt`` is for a user whose noise is
*one particular* environment, so each condition here is a **scene** -- fixed machines, rooms, vehicles,
drawn once from a seed by ``<name>_scene(seed)`` -- and every file gets a fresh stretch of that scene from
its own ``rng`` (event times, levels, speed changes, talkers' sentences):

* :func:`factory` -- a press striking at a steady cycle, each strike ringing the machine's resonant modes
  (metallic, 0.4-5 kHz, decays of tens to hundreds of ms), lighter part-ejection hits between strikes, a
  motor's harmonic series with a gear-mesh whine riding on it, and a ventilation floor.
* :func:`callcentre` -- a few colleagues talking at their desks (a pool of natural talker utterances, Piper
  and espeak-ng voices in the benchmark), smeared by a short office reverberation, keyboard typing in bursts
  (press and release clicks) and an air-conditioning floor.
* :func:`vehicle` -- a car cabin: low-frequency road rumble with a slowly changing road texture, engine
  orders whose rpm sweeps slowly (gear changes, acceleration), gusty wind buffeting and faint tyre hiss.

Every generator has the signature ``(n_samples, sr, rng, *, scene=None, ...) -> noise [n_samples]`` (float64,
zero mean, unit mean power; ``scene=None`` means ``<name>_scene(0)``) and is deterministic in ``rng`` and the
scene. :data:`CONDITIONS` maps each name to its generator and scene function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from scipy import signal as sps

__all__ = ["factory", "callcentre", "vehicle", "factory_scene", "callcentre_scene", "vehicle_scene",
           "Condition", "CONDITIONS", "CONDITION_NAMES", "make_condition_noise", "spectral_centroid"]

_CODES = {"factory": 1, "callcentre": 2, "vehicle": 3}


# ----------------------------------------------------------------------------------------------- helpers
def _unit(x: np.ndarray) -> np.ndarray:
    """``x [n]`` with its mean removed and unit mean power (zeros stay zeros)."""
    x = x - x.mean()
    return x / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)


def _sos(kind: str, freq, sr: int, order: int = 4) -> np.ndarray:
    if kind == "band":
        freq = [freq[0], min(freq[1], 0.45 * sr)]
    elif kind == "low":
        freq = min(freq, 0.45 * sr)
    return sps.butter(order, freq, btype=kind, fs=sr, output="sos")


def _filt(x: np.ndarray, kind: str, freq, sr: int, order: int = 4) -> np.ndarray:
    return sps.sosfilt(_sos(kind, freq, sr, order), x)


def _pink(n: int, sr: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent, nothing below 20 Hz, unit power: ``[n]``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    shape = np.zeros_like(f)
    keep = f >= 20.0
    shape[keep] = f[keep] ** (-exponent / 2.0)
    return _unit(np.fft.irfft(spec * shape, n))


def _slow_walk(n: int, sr: int, rng: np.random.Generator, rate_hz: float) -> np.ndarray:
    """A smooth zero-mean unit-std random control signal ``[n]`` varying at about ``rate_hz``."""
    hop = max(1, sr // 100)  # drawn at 100 Hz and interpolated: cheap for long files
    m = n // hop + 8
    ctrl = sps.sosfiltfilt(_sos("low", rate_hz, 100, 2), rng.standard_normal(m))
    ctrl = (ctrl - ctrl.mean()) / max(float(ctrl.std()), 1e-12)
    return np.interp(np.arange(n) / hop, np.arange(m), ctrl)


def spectral_centroid(x: np.ndarray, sr: int) -> float:
    """Power-weighted mean frequency of ``x [n]`` in Hz."""
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    return float((f * p).sum() / max(float(p.sum()), 1e-20))


# ----------------------------------------------------------------------------------------------- factory
def factory_scene(seed: int = 0) -> Dict:
    """The machines of one factory floor, drawn from ``seed``: press cycle, resonant modes, motor and gear."""
    r = np.random.default_rng([int(seed), 701, _CODES["factory"]])
    n_modes = int(r.integers(3, 6))
    return {
        "period_s": float(r.uniform(0.45, 0.9)),  # press cycle
        "modes_hz": sorted(float(f) for f in np.exp(r.uniform(np.log(400.0), np.log(5000.0), n_modes))),
        "decays_s": [float(d) for d in r.uniform(0.03, 0.25, n_modes)],
        "gains": [float(g) for g in r.uniform(0.3, 1.0, n_modes)],
        "ejection_hz": float(r.uniform(2500.0, 6000.0)),  # the lighter hit's ring
        "motor_f0": float(r.uniform(24.0, 60.0)),  # 1440-3600 rpm
        "motor_slope": float(r.uniform(0.5, 1.1)),
        "gear_hz": float(r.uniform(700.0, 1800.0)),
        "mix": {"impacts": 1.0, "motor": float(r.uniform(0.35, 0.6)), "gear": float(r.uniform(0.15, 0.3)),
                "floor": float(r.uniform(0.25, 0.4))},
    }


def _ring(sr: int, freqs: Sequence[float], decays: Sequence[float], gains: Sequence[float],
          rng: np.random.Generator, click_s: float = 0.002) -> np.ndarray:
    """One impact's waveform ``[time]``: damped sinusoids at ``freqs`` plus a broadband click, peak 1."""
    length = int(min(1.5, 5.0 * max(decays)) * sr)
    tt = np.arange(length) / sr
    out = np.zeros(length)
    for f, d, g in zip(freqs, decays, gains):
        if f < 0.45 * sr:
            out += g * np.sin(2 * np.pi * f * tt + rng.uniform(0, 2 * np.pi)) * np.exp(-tt / d)
    out += 0.8 * rng.standard_normal(length) * np.exp(-tt / click_s)
    return out / max(float(np.abs(out).max()), 1e-12)


def factory(n_samples: int, sr: int, rng: np.random.Generator, *, scene: Optional[Dict] = None,
            **_: object) -> np.ndarray:
    """Factory floor noise ``[n_samples]``, unit power: periodic press strikes ringing the machine's resonances,
    lighter ejection hits, a motor's harmonics with a gear-mesh whine, ventilation floor.

    Arguments
    ---------
    n_samples : length; sr : sample rate in Hz; rng : decides this stretch (hit times, levels, phases).
    scene : :func:`factory_scene`'s dict (None: ``factory_scene(0)``).
    """
    s = scene or factory_scene(0)
    n = int(n_samples)
    # strikes: the press cycle with 2 % jitter from a random phase; each strike a little louder or softer
    strike = _ring(sr, s["modes_hz"], s["decays_s"], s["gains"], rng)
    eject = _ring(sr, [s["ejection_hz"], 1.37 * s["ejection_hz"]], [0.015, 0.01], [1.0, 0.5], rng, 0.001)
    lead = len(strike)  # strikes up to one ring length before the file start ring on into it
    train_s, train_e = np.zeros(lead + n), np.zeros(lead + n)
    pos = rng.uniform(0.0, s["period_s"]) - lead / sr
    while pos < n / sr:
        k = lead + int(round(pos * sr))
        if k >= 0:
            train_s[k] += 10 ** (rng.normal(0.0, 1.5) / 20.0)
        k_e = lead + int(round((pos + s["period_s"] * rng.uniform(0.35, 0.65)) * sr))
        if 0 <= k_e < lead + n and rng.random() < 0.6:
            train_e[k_e] += 0.4 * 10 ** (rng.normal(0.0, 3.0) / 20.0)
        pos += s["period_s"] * (1.0 + rng.normal(0.0, 0.02))
    impacts = (sps.fftconvolve(train_s, strike)[lead:lead + n]
               + sps.fftconvolve(train_e, eject)[lead:lead + n])
    # motor: harmonic series on a slightly wandering speed; the gear whine is amplitude-modulated by it
    f0 = s["motor_f0"] * (1.0 + 0.004 * _slow_walk(n, sr, rng, 0.3))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    motor = np.zeros(n)
    for k in range(1, int(min(30, 0.45 * sr / s["motor_f0"])) + 1):
        motor += k ** -s["motor_slope"] * (1.5 if k % 2 == 0 else 1.0) * np.sin(k * phase + rng.uniform(0, 6.3))
    gear = np.sin(phase * s["gear_hz"] / s["motor_f0"] + rng.uniform(0, 6.3)) * (1.0 + 0.5 * np.sin(phase))
    floor = _filt(_pink(n, sr, rng, 0.6), "band", (120.0, 7000.0), sr, 2)
    m = s["mix"]
    out = (m["impacts"] * _unit(impacts) + m["motor"] * _unit(motor) + m["gear"] * _unit(gear)
           + m["floor"] * _unit(floor))
    return _unit(_filt(out, "high", 30.0, sr, 2))


# ----------------------------------------------------------------------------------------------- call centre
def callcentre_scene(seed: int = 0) -> Dict:
    """One call-centre floor, drawn from ``seed``: how many colleagues talk, their levels, the room, the typing."""
    r = np.random.default_rng([int(seed), 701, _CODES["callcentre"]])
    talkers = int(r.integers(3, 6))
    return {
        "talkers": talkers,
        "talker_db": [float(x) for x in r.uniform(-8.0, 0.0, talkers)],
        "pause_s": (float(r.uniform(0.2, 0.5)), float(r.uniform(1.0, 2.5))),  # between a talker's sentences
        "rt60_s": float(r.uniform(0.25, 0.5)),
        "keys_per_s": float(r.uniform(4.0, 8.0)),
        "key_hz": float(r.uniform(2000.0, 4500.0)),  # the keyboard's click resonance
        "typing_duty": float(r.uniform(0.3, 0.6)),  # fraction of time someone nearby types
        "mix": {"babble": 1.0, "keys": float(r.uniform(0.35, 0.6)), "floor": float(r.uniform(0.15, 0.3))},
    }


def _conversation(n: int, sr: int, rng: np.random.Generator, pool: Sequence[np.ndarray],
                  pause_s: Sequence[float]) -> np.ndarray:
    """One colleague's speech ``[n]``: random sentences of ``pool`` separated by listening pauses."""
    parts: List[np.ndarray] = []
    total = 0
    offset = int(rng.integers(0, 2 * sr))  # talkers are not aligned with the file start
    while total < n + offset:
        utt = pool[int(rng.integers(len(pool)))]
        gap = np.zeros(int(rng.uniform(*pause_s) * sr))
        parts += [utt, gap]
        total += len(utt) + len(gap)
    return np.concatenate(parts)[offset: offset + n]


def _typing(n: int, sr: int, rng: np.random.Generator, s: Dict) -> np.ndarray:
    """Keyboard noise ``[n]``: bursts of typing (press and release clicks per key) between silences."""
    out = np.zeros(n)
    dur = int(0.012 * sr)
    tt = np.arange(dur) / sr
    b, a = sps.iirpeak(min(s["key_hz"], 0.4 * sr), 3.0, fs=sr)
    pos = -rng.uniform(0.0, 3.0)
    while pos < n / sr:
        burst = rng.uniform(0.8, 4.0)
        gap = burst * (1.0 - s["typing_duty"]) / s["typing_duty"] * rng.uniform(0.5, 1.5)
        k_t = pos
        while k_t < pos + burst:
            for lag, level in ((0.0, 1.0), (rng.uniform(0.05, 0.12), 0.5)):  # press, release
                k = int(round((k_t + lag) * sr))
                if 0 <= k < n:
                    click = sps.lfilter(b, a, rng.standard_normal(dur)) * np.exp(-tt / rng.uniform(0.001, 0.004))
                    click = click / max(float(np.abs(click).max()), 1e-12) * level * 10 ** (rng.normal(0, 3) / 20)
                    end = min(n, k + dur)
                    out[k:end] += click[: end - k]
            k_t += rng.exponential(1.0 / s["keys_per_s"]) + 0.03
        pos += burst + gap
    return out


def callcentre(n_samples: int, sr: int, rng: np.random.Generator, *, scene: Optional[Dict] = None,
               pool: Optional[Sequence] = None, **_: object) -> np.ndarray:
    """Call-centre noise ``[n_samples]``, unit power: colleagues' conversations in a small reverberant office,
    keyboard typing in bursts and an air-conditioning floor.

    Arguments
    ---------
    n_samples, sr, rng : length, sample rate (Hz) and the draws of this stretch.
    scene : :func:`callcentre_scene`'s dict (None: ``callcentre_scene(0)``).
    pool : talker utterances ``[time]`` at ``sr`` (natural voices, other than the target speakers'), required:
        a list of lists (one per colleague; colleague ``i`` of the scene talks from list ``i % len(pool)``) or
        one list shared by all of them.
    """
    if pool is None or len(pool) == 0:
        raise ValueError("callcentre noise needs a pool of talker utterances (pool=[...], arrays at sr)")
    s = scene or callcentre_scene(0)
    n = int(n_samples)
    # one list per colleague (each talks in their own voice), or one shared list of utterances
    flat = isinstance(pool[0], np.ndarray) or (len(pool[0]) > 0 and np.isscalar(pool[0][0]))
    groups = [[_unit(np.asarray(u, dtype=np.float64)) for u in g] for g in ([pool] if flat else pool)]
    babble = sum(_conversation(n, sr, rng, groups[i % len(groups)], s["pause_s"]) * 10 ** (db / 20.0)
                 for i, db in enumerate(s["talker_db"]))
    ir_len = int(s["rt60_s"] * sr)  # exponentially decaying noise: a small office's late reverberation
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * np.arange(ir_len) / ir_len)
    ir[0] = 4.0 * np.sqrt(np.sum(ir ** 2))  # the direct sound still dominates
    babble = _filt(sps.fftconvolve(babble, ir)[:n], "band", (100.0, 6000.0), sr, 2)
    keys = _typing(n, sr, rng, s)
    floor = _filt(_pink(n, sr, rng, 1.5), "low", 900.0, sr, 2)
    m = s["mix"]
    out = m["babble"] * _unit(babble) + m["keys"] * _unit(keys + 1e-9 * rng.standard_normal(n)) \
        + m["floor"] * _unit(floor)
    return _unit(out)


# ----------------------------------------------------------------------------------------------- vehicle
def vehicle_scene(seed: int = 0) -> Dict:
    """One car, drawn from ``seed``: cylinders, cruising rpm, cabin resonance, how windy and how rough the road."""
    r = np.random.default_rng([int(seed), 701, _CODES["vehicle"]])
    return {
        "cylinders": int(r.choice([4, 6])),
        "rpm": float(r.uniform(1800.0, 2800.0)),
        "rpm_swing": float(r.uniform(0.12, 0.25)),  # relative rpm change within a file (slow sweeps)
        "boom_hz": float(r.uniform(35.0, 70.0)),  # the cabin's low boom resonance
        "rumble_lp_hz": float(r.uniform(150.0, 260.0)),
        "wind_band": (float(r.uniform(60.0, 120.0)), float(r.uniform(900.0, 1600.0))),
        "gust_db": float(r.uniform(5.0, 10.0)),
        "mix": {"rumble": 1.0, "engine": float(r.uniform(0.4, 0.7)), "wind": float(r.uniform(0.6, 0.9)),
                "hiss": float(r.uniform(0.12, 0.25))},
    }


def vehicle(n_samples: int, sr: int, rng: np.random.Generator, *, scene: Optional[Dict] = None,
            **_: object) -> np.ndarray:
    """Car-cabin noise ``[n_samples]``, unit power: road rumble, engine orders with slowly sweeping rpm, gusty
    wind buffeting and faint tyre hiss.

    Arguments
    ---------
    n_samples, sr, rng : length, sample rate (Hz) and the draws of this stretch.
    scene : :func:`vehicle_scene`'s dict (None: ``vehicle_scene(0)``).
    """
    s = scene or vehicle_scene(0)
    n = int(n_samples)
    # road rumble: dark noise through the cabin's boom resonance, its level following the road texture
    rumble = _filt(_pink(n, sr, rng, 2.0), "low", s["rumble_lp_hz"], sr, 4)
    b, a = sps.iirpeak(s["boom_hz"], 2.0, fs=sr)
    rumble = _unit(rumble) + 0.7 * _unit(sps.lfilter(b, a, rumble))
    rumble *= 10 ** (2.0 * _slow_walk(n, sr, rng, 0.8) / 20.0)
    # engine: the firing order (cylinders / 2 per revolution) and its multiples, rpm sweeping slowly
    rpm = s["rpm"] * (1.0 + s["rpm_swing"] * np.tanh(_slow_walk(n, sr, rng, 0.15)))
    fire = rpm / 60.0 * s["cylinders"] / 2.0
    phase = 2 * np.pi * np.cumsum(fire) / sr
    engine = sum((0.6 ** (k - 1)) * np.sin(k * phase + rng.uniform(0, 6.3)) for k in range(1, 9))
    engine = engine + 0.5 * np.sin(0.5 * phase + rng.uniform(0, 6.3))  # half order: uneven firing
    engine = _filt(engine, "low", 600.0, sr, 2) * (1.0 + 0.2 * _filt(rng.standard_normal(n), "low", 40.0, sr, 2))
    # wind: band noise under gusts (slow) and flutter (faster)
    wind = _filt(_pink(n, sr, rng, 1.0), "band", s["wind_band"], sr, 2)
    gust = s["gust_db"] * _slow_walk(n, sr, rng, 0.7) + 2.0 * _slow_walk(n, sr, rng, 6.0)
    wind *= 10 ** (gust / 20.0)
    hiss = _filt(_pink(n, sr, rng, 0.5), "band", (600.0, 4000.0), sr, 2)
    m = s["mix"]
    out = (m["rumble"] * _unit(rumble) + m["engine"] * _unit(engine) + m["wind"] * _unit(wind)
           + m["hiss"] * _unit(hiss))
    return _unit(_filt(out, "high", 20.0, sr, 2))


# ----------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Condition:
    """One benchmark condition: its noise generator, its scene drawer, a one-line description, and whether
    its generator needs a ``pool`` of talker utterances."""

    name: str
    generator: Callable[..., np.ndarray]
    scene: Callable[[int], Dict]
    description: str
    needs_pool: bool = False


CONDITIONS: Dict[str, Condition] = {c.name: c for c in (
    Condition("factory", factory, factory_scene, "factory floor: periodic press strikes ringing metal resonances, "
              "ejection hits, motor harmonics and gear whine, ventilation"),
    Condition("callcentre", callcentre, callcentre_scene, "call centre: 3-5 colleagues talking (Piper / espeak-ng "
              "voices) in a reverberant office, keyboard typing, air conditioning", needs_pool=True),
    Condition("vehicle", vehicle, vehicle_scene, "car cabin: road rumble and boom, engine orders with slowly "
              "sweeping rpm, gusty wind buffeting, tyre hiss"),
)}
#: The condition names, in report order.
CONDITION_NAMES: List[str] = list(CONDITIONS)


def make_condition_noise(name: str, n_samples: int, sr: int, rng: np.random.Generator, *,
                         scene: Optional[Dict] = None, pool: Optional[Sequence] = None) -> np.ndarray:
    """``n_samples`` of condition ``name``'s noise ``[n_samples]`` (unit power) for the given scene (and pool)."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; choose from {', '.join(CONDITIONS)}")
    return CONDITIONS[name].generator(n_samples, sr, rng, scene=scene, pool=pool)
