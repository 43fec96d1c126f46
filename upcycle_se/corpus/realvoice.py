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
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from upcycle_se.audio import read_audio, resample_audio, write_audio_atomic
from upcycle_se.corpus import noise as N
from upcycle_se.corpus.build import TEST_NOISES, TEST_SNRS, babble_utterance, babble_voices, seeded_rng
from upcycle_se.corpus.speech import base_voices, require_tools
from upcycle_se.errors import UserError

PathLike = Union[str, os.PathLike]

#: ``upcycle-se build-corpus --preset realvoice`` builds this set.
REALVOICE_PRESET = "realvoice"
#: ALSA's recorded voice clips (alsa-utils), 48 kHz mono, 1.3-1.5 s each.
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
VOICE_CLIPS = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right",
               "Side_Left", "Side_Right")
#: Stationary or not, per noise family (the classical enhancers' noise trackers assume the first).
NOISE_CLASS = {"pink": "stationary", "white": "stationary", "brown": "stationary", "hum": "stationary",
               "alsa": "stationary", "stationary": "stationary", "clicks": "non-stationary",
               "cafe": "non-stationary", "babble": "non-stationary", "engine": "non-stationary",
               "bursts": "non-stationary", "babble_many": "non-stationary", "modulated": "non-stationary"}
INFO_FILE = "realvoice_info.json"
CLEAN_DIR, NOISY_DIR, LOG_FILE = "clean_testset_wav", "noisy_testset_wav", "logfiles/log_testset.txt"
FORMAT_VERSION = 1
_PAD_S = 0.3
_LEVEL_DBFS = -26.0
_BABBLE_PER_TALKER = 2


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
    missing = [c for c in VOICE_CLIPS if not (clip_dir / f"{c}.wav").is_file()]
    if missing:
        raise UserError(f"the real-voice set needs ALSA's recorded voice clips ({clip_dir}/{missing[0]}.wav "
                        f"is missing); install alsa-utils, e.g. `apt-get install alsa-utils`")
    if int(sample_rate) < 8000:
        raise UserError(f"sample_rate must be at least 8000 Hz, not {sample_rate}")
    if not noises or not snrs:
        raise UserError("the real-voice set needs at least one noise family and one SNR")
    N.check_noise_types(list(noises), Path(alsa_noise))
    unknown = [nz for nz in noises if nz not in NOISE_CLASS]
    if unknown:
        raise UserError(f"noise {unknown[0]!r} has no stationary/non-stationary class for the real-voice set; "
                        f"choose from {', '.join(sorted(NOISE_CLASS))}")
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
    lines, seconds = [], 0.0
    for c_idx, clip in enumerate(VOICE_CLIPS):
        clean_full = load_clip(clip_dir / f"{clip}.wav", sr, seeded_rng(seed, 3, c_idx, 2))
        for n_idx, nz in enumerate(noises):
            for s_idx, snr in enumerate(config["snrs"]):
                noise = N.make_noise(nz, len(clean_full), sr, seeded_rng(seed, 3, c_idx, n_idx, s_idx, 4), ctx)
                clean, noisy = N.mix_at_snr(clean_full, noise, snr, sr)
                name = realvoice_name(clip, nz, snr)
                write_audio_atomic(out / CLEAN_DIR / f"{name}.wav", clean, sr)
                write_audio_atomic(out / NOISY_DIR / f"{name}.wav", noisy, sr)
                lines.append(f"{name} {nz} {snr:g}\n")
                seconds += len(clean) / sr
    (out / LOG_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out / LOG_FILE).write_text("".join(sorted(lines)), encoding="utf-8")
    info = {
        "description": "Real-voice test set: ALSA's 8 recorded voice clips (one real speaker) mixed with the "
                       "synthetic corpus's test noises at its test SNRs (upcycle_se.corpus.realvoice). "
                       "Not VoiceBank-DEMAND.",
        "config": config,
        "noise_class": {nz: NOISE_CLASS[nz] for nz in noises},
        "counts": len(lines),
        "seconds": round(seconds, 3),
    }
    tmp = out / f".{INFO_FILE}.part"
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / INFO_FILE)  # last: its presence marks a complete set
    summary = _summary(out, info)
    summary.update(build_seconds=round(time.perf_counter() - t0, 3), reused=False)
    return summary


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
