"""The real-voice test set: ALSA's recorded voice clips mixed with the corpus's *test* noises at the test SNRs.

The synthetic corpus tests on synthetic voices; a model can beat the classical enhancers there and still
lose on a real voice. ``alsa-utils`` ships eight short recordings of one real speaker
(``/usr/share/sounds/alsa/Front_Center.wav`` ...), the only real speech that installs offline here. Each
clip is mixed with every test noise family at every test SNR (by default pink and ALSA's recorded noise,
stationary, plus clicks and cafe babble, non-stationary: half and half), under the corpus's SNR
definition, and written in the test half of the VoiceBank-DEMAND layout::

    OUT/clean_testset_wav/front_center_pink_025.wav   (clip, noise family, SNR x 10)
    OUT/noisy_testset_wav/front_center_pink_025.wav
    OUT/logfiles/log_testset.txt                       "<name> <noise> <snr>" per line
    OUT/realvoice_info.json                            clips, noises and their class, SNRs, seed (written last)

Every clip is padded with 0.3 s of silence on both sides (enhancers and metrics see a pause, as in
VoiceBank) and set to -26 dBFS active level before mixing. The build is deterministic in ``seed``. The
``cafe`` family needs the corpus's *test* babble voices (flite / espeak-ng), so no training voice is in it.

One real speaker and 8 short phrases: a check of generalization to real speech, not a benchmark of it,
and never a VoiceBank-DEMAND score.

The hard preset, ``realvoice_hard`` (:func:`build_realvoice_hard`), mixes the same clips, the same way and at
the same SNRs (same file layout) with noises chosen where an enhancer can cost intelligibility:

* ``real_babble`` -- babble of *real* voices: 4-7 simultaneous talkers, each a stream of ALSA's *other*
  clips (never the target clip), concatenated in random order with short gaps and a random offset; every
  talker is a pseudo-speaker made by one seeded resampling warp (x0.8-1.25: pitch, formants and tempo move
  together) at a random level. All talkers are warps of the target's own speaker: the hardest babble there
  is for a model that has to tell the target voice from the crowd.
* ``band_bursts`` -- non-stationary band-limited noise bursts (:func:`band_bursts`): 50-500 ms bursts of
  band-pass noise (0.5-2 octaves wide, centred 250-5000 Hz), 1.5-5 per second at random levels, with
  smooth ramps and tremolo, over a faint floor. The corpus's ``bursts`` (clicks, resonances, thuds and
  mostly broadband bursts, 5-400 ms) is a component of the ``broad`` *training* family, so it is not used.
* ``alsa`` -- ALSA's recorded ``Noise.wav``, as in the first set: the recorded real noise.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import signal as sps

from upcycle_se.audio import read_audio, resample_audio, write_audio_atomic
from upcycle_se.corpus import noise as N
from upcycle_se.corpus.build import TEST_NOISES, TEST_SNRS, babble_utterance, babble_voices, seeded_rng
from upcycle_se.corpus.speech import base_voices, require_tools
from upcycle_se.errors import UserError

PathLike = Union[str, os.PathLike]

#: ``upcycle-se build-corpus --preset realvoice`` builds this set.
REALVOICE_PRESET = "realvoice"
#: ``upcycle-se build-corpus --preset realvoice_hard`` builds the hard set (:func:`build_realvoice_hard`).
REALVOICE_HARD_PRESET = "realvoice_hard"
#: The hard set's noise families: real-voice babble, band-limited bursts, ALSA's recorded noise.
HARD_NOISES = ("real_babble", "band_bursts", "alsa")
#: ALSA's recorded voice clips (alsa-utils), 48 kHz mono, 1.3-1.5 s each.
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
VOICE_CLIPS = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right",
               "Side_Left", "Side_Right")
#: Stationary or not, per noise family (the classical enhancers' noise trackers assume the first).
NOISE_CLASS = {"pink": "stationary", "white": "stationary", "brown": "stationary", "hum": "stationary",
               "alsa": "stationary", "stationary": "stationary", "clicks": "non-stationary",
               "cafe": "non-stationary", "babble": "non-stationary", "engine": "non-stationary",
               "bursts": "non-stationary", "babble_many": "non-stationary", "modulated": "non-stationary",
               "real_babble": "non-stationary", "band_bursts": "non-stationary"}
INFO_FILE = "realvoice_info.json"
CLEAN_DIR, NOISY_DIR, LOG_FILE = "clean_testset_wav", "noisy_testset_wav", "logfiles/log_testset.txt"
FORMAT_VERSION = 1
_PAD_S = 0.3
_LEVEL_DBFS = -26.0
_BABBLE_PER_TALKER = 2
#: Hard set: talkers per babble file (inclusive), pseudo-speaker warp range, talker levels (dB).
REAL_BABBLE_TALKERS = (4, 7)
REAL_BABBLE_WARP = (0.8, 1.25)
_REAL_BABBLE_LEVEL_DB = (-6.0, 0.0)
_HARD_SPLIT = 5  # seeded_rng key of the hard set's noise draws (3 is the first set's)


def realvoice_name(clip: str, noise: str, snr: float) -> str:
    """File stem of one mixture, e.g. ``front_center_pink_025`` for 2.5 dB."""
    return f"{clip.lower()}_{noise}_{int(round(snr * 10)):03d}"


def load_clip(path: PathLike, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One recorded clip as float64 ``[time]`` at ``sample_rate``: mono, DC removed, padded with silence,
    active level -26 dBFS, plus a -78 dBFS floor like the synthetic corpus (never digital zero)."""
    sig, sr = read_audio(path)
    sig = resample_audio(sig, sr, sample_rate).numpy().astype(np.float64)
    sig = sig.mean(axis=0) if sig.ndim > 1 else sig
    sig = sig - sig.mean()
    sig *= np.sqrt(10 ** (_LEVEL_DBFS / 10.0) / max(N.active_speech_power(sig, sample_rate), 1e-20))
    pad = np.zeros(int(_PAD_S * sample_rate))
    sig = np.concatenate([pad, sig, pad])
    return sig + 10 ** (-78 / 20.0) * rng.standard_normal(len(sig))


def build_realvoice(out_dir: PathLike, *, sample_rate: int = 16000, seed: int = 0,
                    noises: Sequence[str] = TEST_NOISES, snrs: Sequence[float] = TEST_SNRS,
                    clip_dir: PathLike = ALSA_SOUNDS, alsa_noise: PathLike = N.ALSA_NOISE,
                    overwrite: bool = False) -> Dict:
    """Writes the real-voice test set under ``out_dir``; returns a summary.

    Arguments
    ---------
    out_dir : folder to create (``clean_testset_wav/``, ``noisy_testset_wav/``, ``logfiles/``).
    sample_rate : of every file (Hz, >= 8000).
    seed : decides the noise draws; same arguments -> same bytes.
    noises, snrs : noise families (the corpus's test families by default) and SNRs in dB.
    clip_dir : folder holding ALSA's voice clips (``Front_Center.wav`` ...).
    alsa_noise : the clip behind the ``alsa`` noise family.
    overwrite : replace a different set in ``out_dir``; an identical complete one is reused.

    Returns
    -------
    dict with ``out_dir``, ``clean_dir``, ``noisy_dir``, ``sample_rate``, ``seed``, ``clips``, ``noises``,
    ``noise_class``, ``snrs``, ``utterances``, ``seconds``, ``build_seconds``, ``reused``.

    Raises
    ------
    UserError: clips missing (install alsa-utils), unknown noise, flite / espeak-ng missing for ``cafe``
        or ``babble``, or a different set in the way.
    """
    t0 = time.perf_counter()
    out, clip_dir = Path(out_dir), Path(clip_dir)
    _check_inputs(clip_dir, sample_rate, noises, snrs)
    N.check_noise_types(list(noises), Path(alsa_noise))
    _check_classes(noises)
    needs_babble = any(nz in N.NEEDS_BABBLE for nz in noises)
    if needs_babble:
        require_tools()
    config = dict(sample_rate=int(sample_rate), seed=int(seed), noises=list(noises),
                  snrs=[float(s) for s in snrs], clips=list(VOICE_CLIPS), format=FORMAT_VERSION)
    reused = _existing(out, config, overwrite)
    if reused is not None:
        reused.update(build_seconds=round(time.perf_counter() - t0, 3), reused=True)
        return reused

    sr = int(sample_rate)
    babble: List[np.ndarray] = []
    if needs_babble:  # the corpus's test babble talkers: unseen in training
        _, test_pool = base_voices()
        talkers = babble_voices("test", test_pool, seed)
        babble = [babble_utterance(v, seeded_rng(seed, 3, j, k, 6), sr)
                  for j, v in enumerate(talkers) for k in range(_BABBLE_PER_TALKER)]
    ctx = N.NoiseContext(sr, babble, Path(alsa_noise))

    def noise_of(c_idx: int, n_idx: int, s_idx: int, n: int) -> Tuple[np.ndarray, Optional[List[str]]]:
        return N.make_noise(noises[n_idx], n, sr, seeded_rng(seed, 3, c_idx, n_idx, s_idx, 4), ctx), None

    description = ("Real-voice test set: ALSA's 8 recorded voice clips (one real speaker) mixed with the "
                   "synthetic corpus's test noises at its test SNRs (upcycle_se.corpus.realvoice). "
                   "Not VoiceBank-DEMAND.")
    summary = _write_set(out, config, clip_dir, noise_of, description)
    summary.update(build_seconds=round(time.perf_counter() - t0, 3), reused=False)
    return summary


# ------------------------------------------------------------------------------------------ hard set
def warp_clip(sig: np.ndarray, warp: float) -> np.ndarray:
    """``sig [time]`` resampled so that its pitch and formants scale by ``warp`` (and its duration by
    ``1 / warp``): a pseudo-speaker of the same recording. Returns ``[round(time / warp)]`` about."""
    ratio = Fraction(1.0 / float(warp)).limit_denominator(64)
    if ratio == 1:
        return np.asarray(sig, dtype=np.float64).copy()
    return sps.resample_poly(np.asarray(sig, dtype=np.float64), ratio.numerator, ratio.denominator)


def active_part(sig: np.ndarray, sample_rate: int) -> np.ndarray:
    """``sig [time]`` as float64, trimmed to its first and last 20 ms frame within 40 dB of its loudest (the
    corpus's active-speech definition): a recording's leading and trailing pauses cut."""
    sig = np.asarray(sig, dtype=np.float64)
    hop = max(1, int(round(N.FRAME_S * sample_rate)))
    n = len(sig) // hop
    if not n:
        return sig
    energy = (sig[: n * hop].reshape(n, hop) ** 2).mean(axis=1)
    active = np.flatnonzero(energy >= energy.max() * 10 ** (-N.ACTIVE_RANGE_DB / 10.0))
    return sig[active[0] * hop: (active[-1] + 1) * hop]


def babble_pool(clips: Dict[str, np.ndarray], target: str, sample_rate: int) -> Dict[str, np.ndarray]:
    """The babble material of one target clip: every *other* clip ``{name: [time]}``, trimmed to its active
    part (20 ms frames within 40 dB of its loudest) and scaled to unit active speech power."""
    if target not in clips:
        raise UserError(f"unknown target clip {target!r}; clips: {', '.join(clips)}")
    pool = {}
    for name, sig in clips.items():
        if name == target:
            continue
        sig = active_part(sig, sample_rate)
        pool[name] = sig / np.sqrt(max(N.active_speech_power(sig, sample_rate), 1e-20))
    if not pool:
        raise UserError("real babble needs at least one clip other than the target")
    return pool


def real_babble(n: int, sample_rate: int, rng: np.random.Generator, pool: Dict[str, np.ndarray], *,
                talkers: Tuple[int, int] = REAL_BABBLE_TALKERS, warp: Tuple[float, float] = REAL_BABBLE_WARP
                ) -> Tuple[np.ndarray, List[str]]:
    """Babble of real voices: ``n`` samples of unit mean power, and the sources it used.

    Arguments
    ---------
    n, sample_rate : length in samples and rate of the noise.
    rng : decides everything (talker count, warps, clip order, gaps, offsets, levels).
    pool : ``{clip name: [time]}`` the talkers speak from (:func:`babble_pool`: never the target clip).
    talkers : how many simultaneous talkers, inclusive range.
    warp : range of each talker's resampling warp (log-uniform): one pseudo-speaker per talker.

    Returns
    -------
    (noise ``[n]`` float64, ``["<clip>@<warp>", ...]`` one entry per clip occurrence, in talker order).
    """
    if n <= 0:
        raise UserError(f"real babble needs a positive length, not {n}")
    if not pool:
        raise UserError("real babble needs a non-empty clip pool")
    names = sorted(pool)
    out = np.zeros(n)
    used: List[str] = []
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        w = float(np.exp(rng.uniform(np.log(warp[0]), np.log(warp[1]))))
        voice = {name: warp_clip(pool[name], w) for name in names}  # one pseudo-speaker
        offset = int(rng.integers(0, sample_rate))  # talkers are not aligned with the file start
        parts: List[np.ndarray] = []
        total = 0
        while total < n + offset:
            name = names[int(rng.integers(len(names)))]
            gap = np.zeros(int(rng.uniform(0.02, 0.25) * sample_rate))
            parts += [voice[name], gap]
            total += len(voice[name]) + len(gap)
            used.append(f"{name}@{w:.3f}")
        stream = np.concatenate(parts)[offset: offset + n]
        out += stream * 10 ** (rng.uniform(*_REAL_BABBLE_LEVEL_DB) / 20.0)
    out = out + 1e-3 * rng.standard_normal(n)
    out -= out.mean()
    return out / max(np.sqrt(np.mean(out ** 2)), 1e-12), used


def band_bursts(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Non-stationary band-limited noise bursts: ``[n]`` float64 of unit mean power.

    1.5-5 bursts per second (at least two per file) at random times; each is 50-500 ms of Gaussian noise
    through a 4th-order Butterworth band-pass 0.5-2 octaves wide, centred log-uniformly at 250-5000 Hz
    (at most 0.3 of the rate), under a raised-cosine attack and release (5-50 ms) and a tremolo (2-20 Hz,
    depth 0-0.8), at a random level (sd 4 dB, RMS-normalized per burst); a pink floor 30-40 dB below the
    bursts' mean power keeps the gaps from digital silence.
    """
    if n <= 0:
        raise UserError(f"band bursts need a positive length, not {n}")
    sr = sample_rate
    out = np.zeros(n)
    count = max(2, int(rng.poisson(rng.uniform(1.5, 5.0) * n / sr)))
    for pos in np.sort(rng.integers(0, n, size=count)):
        dur = int(rng.uniform(0.05, 0.5) * sr)
        centre = float(np.exp(rng.uniform(np.log(250.0), np.log(min(5000.0, 0.3 * sr)))))
        half = 2 ** (rng.uniform(0.5, 2.0) / 2.0)
        lo, hi = max(centre / half, 40.0), min(centre * half, 0.42 * sr)
        sos = sps.butter(4, [lo, hi], btype="band", fs=sr, output="sos")
        ev = sps.sosfilt(sos, rng.standard_normal(dur + 256))[256:]  # filter settled
        tt = np.arange(dur) / sr
        ev *= 1.0 + rng.uniform(0.0, 0.8) * np.sin(2 * np.pi * rng.uniform(2.0, 20.0) * tt + rng.uniform(0, 6.3))
        ramp = max(2, min(dur // 2, int(rng.uniform(0.005, 0.05) * sr)))
        edge = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, ramp))
        ev[:ramp] *= edge
        ev[-ramp:] *= edge[::-1]
        ev = ev / max(np.sqrt(np.mean(ev ** 2)), 1e-12) * 10 ** (rng.normal(0.0, 4.0) / 20.0)
        end = min(n, pos + dur)
        out[pos:end] += ev[: end - pos]
    out /= max(np.sqrt(np.mean(out ** 2)), 1e-12)
    out += 10 ** (-rng.uniform(30.0, 40.0) / 20.0) * N.coloured_noise(n, sr, rng, 1.0)
    out -= out.mean()
    return out / max(np.sqrt(np.mean(out ** 2)), 1e-12)


def build_realvoice_hard(out_dir: PathLike, *, sample_rate: int = 16000, seed: int = 0,
                         noises: Sequence[str] = HARD_NOISES, snrs: Sequence[float] = TEST_SNRS,
                         clip_dir: PathLike = ALSA_SOUNDS, alsa_noise: PathLike = N.ALSA_NOISE,
                         overwrite: bool = False) -> Dict:
    """Writes the hard real-voice set (preset ``realvoice_hard``) under ``out_dir``; returns a summary.

    The same clips, padding, levels, SNR definition, file names and layout as :func:`build_realvoice`
    (the clean files are the first set's, sample for sample, unless the mixer had to scale a pair down to
    keep it below full scale), with the noises :data:`HARD_NOISES`: ``real_babble`` (:func:`real_babble`
    over :func:`babble_pool`: the other clips, warped), ``band_bursts`` (:func:`band_bursts`) and ``alsa``.
    ``realvoice_info.json`` also lists, per ``real_babble`` file, the clips and warps its babble used.

    Arguments
    ---------
    out_dir : folder to create (``clean_testset_wav/``, ``noisy_testset_wav/``, ``logfiles/``).
    sample_rate : of every file (Hz, >= 8000).
    seed : decides the noise draws; same arguments -> same bytes.
    noises : a subset of :data:`HARD_NOISES`; snrs : SNRs in dB (the test SNRs by default).
    clip_dir : folder holding ALSA's voice clips; alsa_noise : the clip behind ``alsa``.
    overwrite : replace a different set in ``out_dir``; an identical complete one is reused.

    Returns
    -------
    the summary of :func:`build_realvoice` (``utterances``: clips x noises x SNRs, 96 by default).

    Raises
    ------
    UserError: clips missing (install alsa-utils), a noise outside :data:`HARD_NOISES`, or a different set in
        the way.
    """
    t0 = time.perf_counter()
    out, clip_dir = Path(out_dir), Path(clip_dir)
    _check_inputs(clip_dir, sample_rate, noises, snrs)
    unknown = [nz for nz in noises if nz not in HARD_NOISES]
    if unknown:
        raise UserError(f"noise {unknown[0]!r} is not a family of the hard real-voice set; "
                        f"choose from {', '.join(HARD_NOISES)}")
    if "alsa" in noises:
        N.check_noise_types(["alsa"], Path(alsa_noise))
    config = dict(preset=REALVOICE_HARD_PRESET, sample_rate=int(sample_rate), seed=int(seed), noises=list(noises),
                  snrs=[float(s) for s in snrs], clips=list(VOICE_CLIPS), talkers=list(REAL_BABBLE_TALKERS),
                  warp=list(REAL_BABBLE_WARP), format=FORMAT_VERSION)
    reused = _existing(out, config, overwrite)
    if reused is not None:
        reused.update(build_seconds=round(time.perf_counter() - t0, 3), reused=True)
        return reused

    sr = int(sample_rate)
    ctx = N.NoiseContext(sr, None, Path(alsa_noise))
    clips = {c: load_clip(clip_dir / f"{c}.wav", sr, seeded_rng(seed, 3, i, 2)) for i, c in enumerate(VOICE_CLIPS)}
    pools = {c: babble_pool(clips, c, sr) for c in VOICE_CLIPS}

    def noise_of(c_idx: int, n_idx: int, s_idx: int, n: int) -> Tuple[np.ndarray, Optional[List[str]]]:
        rng = seeded_rng(seed, _HARD_SPLIT, c_idx, n_idx, s_idx, 4)
        nz = noises[n_idx]
        if nz == "real_babble":
            return real_babble(n, sr, rng, pools[VOICE_CLIPS[c_idx]])
        if nz == "band_bursts":
            return band_bursts(n, sr, rng), None
        return N.make_noise(nz, n, sr, rng, ctx), None

    description = ("Hard real-voice test set: ALSA's 8 recorded voice clips (one real speaker) mixed with "
                   "babble of the other clips (warped pseudo-speakers of the same real voice), band-limited "
                   "noise bursts and ALSA's recorded noise at the test SNRs (upcycle_se.corpus.realvoice, "
                   "preset realvoice_hard). Not VoiceBank-DEMAND.")
    summary = _write_set(out, config, clip_dir, noise_of, description, clips)
    summary.update(build_seconds=round(time.perf_counter() - t0, 3), reused=False)
    return summary


def _check_inputs(clip_dir: Path, sample_rate: int, noises: Sequence[str], snrs: Sequence[float]) -> None:
    missing = [c for c in VOICE_CLIPS if not (clip_dir / f"{c}.wav").is_file()]
    if missing:
        raise UserError(f"the real-voice set needs ALSA's recorded voice clips ({clip_dir}/{missing[0]}.wav "
                        f"is missing); install alsa-utils, e.g. `apt-get install alsa-utils`")
    if int(sample_rate) < 8000:
        raise UserError(f"sample_rate must be at least 8000 Hz, not {sample_rate}")
    if not noises or not snrs:
        raise UserError("the real-voice set needs at least one noise family and one SNR")


def _check_classes(noises: Sequence[str]) -> None:
    unknown = [nz for nz in noises if nz not in NOISE_CLASS]
    if unknown:
        raise UserError(f"noise {unknown[0]!r} has no stationary/non-stationary class for the real-voice set; "
                        f"choose from {', '.join(sorted(NOISE_CLASS))}")


def _write_set(out: Path, config: dict, clip_dir: Path,
               noise_of: Callable[[int, int, int, int], Tuple[np.ndarray, Optional[List[str]]]],
               description: str, clips: Optional[Dict[str, np.ndarray]] = None) -> Dict:
    """Mixes every clip x noise x SNR (``noise_of(clip index, noise index, SNR index, samples)`` ->
    (unit-power noise, babble sources or None)), writes the pairs, the log and, last, the info file."""
    sr, seed, noises = config["sample_rate"], config["seed"], config["noises"]
    lines, seconds, sources = [], 0.0, {}
    for c_idx, clip in enumerate(VOICE_CLIPS):
        clean_full = (clips[clip] if clips is not None
                      else load_clip(clip_dir / f"{clip}.wav", sr, seeded_rng(seed, 3, c_idx, 2)))
        for n_idx, nz in enumerate(noises):
            for s_idx, snr in enumerate(config["snrs"]):
                noise, used = noise_of(c_idx, n_idx, s_idx, len(clean_full))
                clean, noisy = N.mix_at_snr(clean_full, noise, snr, sr)
                name = realvoice_name(clip, nz, snr)
                write_audio_atomic(out / CLEAN_DIR / f"{name}.wav", clean, sr)
                write_audio_atomic(out / NOISY_DIR / f"{name}.wav", noisy, sr)
                lines.append(f"{name} {nz} {snr:g}\n")
                seconds += len(clean) / sr
                if used is not None:
                    sources[name] = used
    _write_text_atomic(out / LOG_FILE, "".join(sorted(lines)))
    info = {
        "description": description,
        "config": config,
        "noise_class": {nz: NOISE_CLASS[nz] for nz in noises},
        "counts": len(lines),
        "seconds": round(seconds, 3),
    }
    if sources:
        info["babble_sources"] = {k: sources[k] for k in sorted(sources)}
    _write_text_atomic(out / INFO_FILE, json.dumps(info, indent=2) + "\n")  # last: marks a complete set
    return _summary(out, info)


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.part"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_realvoice_log(root: PathLike) -> Dict[str, Dict[str, Union[str, float]]]:
    """``{file stem: {"noise", "snr", "class"}}`` of a built real-voice set."""
    root = Path(root)
    info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    out = {}
    for line in (root / LOG_FILE).read_text(encoding="utf-8").splitlines():
        name, nz, snr = line.split()
        out[name] = {"noise": nz, "snr": float(snr), "class": info["noise_class"][nz]}
    return out


def _summary(out: Path, info: dict) -> Dict:
    cfg = info["config"]
    return {"out_dir": str(out), "clean_dir": str(out / CLEAN_DIR), "noisy_dir": str(out / NOISY_DIR),
            "sample_rate": cfg["sample_rate"], "seed": cfg["seed"], "clips": len(cfg["clips"]),
            "noises": list(cfg["noises"]), "noise_class": dict(info["noise_class"]), "snrs": list(cfg["snrs"]),
            "utterances": info["counts"], "seconds": info["seconds"]}


def _existing(out: Path, config: dict, overwrite: bool) -> Optional[Dict]:
    ours = [out / CLEAN_DIR, out / NOISY_DIR, out / LOG_FILE, out / INFO_FILE]
    if not any(p.exists() for p in ours):
        return None
    if not overwrite and (out / INFO_FILE).is_file():
        try:
            info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        complete = all(len(list((out / d).glob("*.wav"))) == info.get("counts") for d in (CLEAN_DIR, NOISY_DIR))
        if info.get("config") == config and complete:
            return _summary(out, info)
    if not overwrite:
        raise UserError(f"{out} already holds a real-voice set built with other settings (or an incomplete one); "
                        f"pass overwrite=True / --overwrite to replace it, or choose another folder")
    for p in ours:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return None
