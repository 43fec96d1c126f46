"""Real recorded voices of many speakers, offline: the spoken letters and syllables of KDE's KLettres.

ALSA's eight clips are one real speaker and make the project's reported real-voice sets, so they cannot also
be used to choose models. Debian's ``klettres-data`` (GPL-2+, about 40 MB; ``apt-get install klettres-data``)
ships about 2,000 recordings of letters and syllables read by native speakers of 20 languages, one
recording set per language folder (``/usr/share/klettres/<lang>/{alpha,syllab}/*.ogg``): real voices,
real microphones and rooms. Each language folder is treated as one speaker (a folder could share a
reader with another; the package does not say).

Ten folders are quiet enough to serve as clean targets (a noise floor at least 45 dB below the speech,
measured 2026-12-05; the other ten have audible floors or clipping and serve as babble talkers only). Both
groups are split into a training half and a validation half (:data:`TARGET_SPEAKERS`,
:data:`BABBLE_SPEAKERS`), so that a model chosen on the validation voices never trained on them.

A target "utterance" (:func:`real_utterance`) is 3 or more of one speaker's clips, each trimmed to its
active part, joined with short pauses into 1.5-4 s: real voice and real recording, though read as a list of
words rather than a sentence.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from upcycle_se.corpus import noise as N
from upcycle_se.corpus.realvoice import active_part
from upcycle_se.errors import UserError

KLETTRES_ROOT = Path("/usr/share/klettres")
#: Folders whose recordings are clean enough to be targets: split -> language folders.
TARGET_SPEAKERS: Dict[str, Tuple[str, ...]] = {"train": ("de", "lt", "nds", "pt_BR", "ru"),
                                               "valid": ("da", "en_GB", "fr", "nl", "uk")}
#: Folders with audible noise floors or clipping: babble talkers only.
BABBLE_SPEAKERS: Dict[str, Tuple[str, ...]] = {"train": ("en", "it", "ml", "nb", "tn"),
                                               "valid": ("ar", "cs", "es", "he", "hu")}


def require_klettres(root: Path = KLETTRES_ROOT) -> None:
    """Raises a one-line :class:`UserError` when KLettres' recordings are not installed."""
    if not (root / "en_GB" / "alpha").is_dir():
        raise UserError(f"real recorded voices need Debian's klettres-data in {root} "
                        "(apt-get install klettres-data; scripts/setup.sh installs it)")


@lru_cache(maxsize=32)
def _speaker_cached(name: str, sample_rate: int, root: str) -> Tuple[Tuple[str, np.ndarray], ...]:
    import soundfile as sf
    import torch

    from upcycle_se.audio import resample_audio

    files = sorted((Path(root) / name).glob("*/*.ogg"))
    if not files:
        raise UserError(f"no KLettres recordings for speaker {name!r} in {root}")
    clips = []
    for f in files:
        sig, sr = sf.read(str(f), dtype="float32", always_2d=True)
        sig = resample_audio(torch.from_numpy(sig.mean(axis=1)), sr, sample_rate).numpy().astype(np.float64)
        sig = active_part(sig - sig.mean(), sample_rate)
        power = N.active_speech_power(sig, sample_rate)
        if len(sig) >= int(0.15 * sample_rate) and power > 0:
            sig = sig / np.sqrt(power)
            sig.setflags(write=False)  # shared by every caller through the cache
            clips.append((f"{f.parent.name}/{f.stem}", sig))
    return tuple(clips)


def speaker_clips(name: str, sample_rate: int, root: Path = KLETTRES_ROOT) -> Dict[str, np.ndarray]:
    """``{"alpha/a": [time], ...}``: one KLettres speaker's recordings, mono at ``sample_rate``, each trimmed to
    its active part and scaled to unit active speech power (cached per speaker and rate)."""
    require_klettres(root)
    return dict(_speaker_cached(name, int(sample_rate), str(root)))


def real_utterance(clips: Dict[str, np.ndarray], rng: np.random.Generator, sample_rate: int,
                   min_s: float = 1.5, max_s: float = 4.0) -> Tuple[np.ndarray, List[str]]:
    """One speaker's clips joined into a ``min_s``..``max_s`` s utterance ``[time]`` float64 (unit active power),
    and the clips it used.

    A target length is drawn in ``min_s``..``max_s``; clips are drawn without repetition, at least 3, with
    pauses of 60-250 ms between them, until the next clip would pass that length (or the clips run out); the
    result is cut to ``max_s``.
    """
    if not clips:
        raise UserError("a real utterance needs at least one clip")
    names = sorted(clips)
    order = rng.permutation(len(names))
    target = rng.uniform(min_s, max_s)
    parts: List[np.ndarray] = []
    used: List[str] = []
    total = 0
    for i in order:
        clip = clips[names[i]]
        gap = np.zeros(int(rng.uniform(0.06, 0.25) * sample_rate)) if parts else np.zeros(0)
        if len(used) >= 3 and (total + len(gap) + len(clip)) / sample_rate > target:
            break
        parts += [gap, clip]
        used.append(names[i])
        total += len(gap) + len(clip)
        if total / sample_rate >= max_s:
            break
    sig = np.concatenate(parts)[: int(max_s * sample_rate)]
    return sig / np.sqrt(max(N.active_speech_power(sig, sample_rate), 1e-20)), used
