"""Data preparation: VoiceBank-DEMAND, or any clean/noisy folder pair, to SpeechBrain JSON manifests.

:func:`prepare_voicebank` reads the corpus as distributed (48 kHz, ``clean_trainset_28spk_wav/`` ...) or
already at 16 kHz (``clean_trainset_wav/`` ...), checks every file, resamples what is not at the target
rate once into a cache, and writes ``train.json``, ``valid.json`` and ``test.json`` into ``save_folder``.
Validation is two held-out *training* speakers (VoiceBank's customary p226 and p287 when present): the
test set is never used to pick a checkpoint.

Use the recipe on your own data
-------------------------------
:func:`prepare_folders` is the same code for any corpus given as two folders of clean and noisy speech
(wav/flac/... at any sample rate, searched recursively)::

    from upcycle_se.data.prepare import prepare_folders
    prepare_folders("my/clean", "my/noisy", "results/prep", paired=False,          # unrelated recordings
                    test_clean_dir="my/test/clean", test_noisy_dir="my/test/noisy",  # optional, paired
                    valid_fraction=0.1)

``paired=True`` means both folders hold the same names (``clean/a/x.wav`` <-> ``noisy/a/x.flac``; the
extension may differ) and every pair is checked to exist; ``paired=False`` treats the two lists as
independent, which is Up-Cycle-SENet's setting. An utterance's id is its path below its folder without
the extension (``a/x``); its speaker is ``speaker_fn(id)``, by default the first folder of the id, or
for a flat folder the part of the file name before the first ``_`` (``p226_001`` -> ``p226``).

Manifest formats
----------------
SpeechBrain JSON (``{id: {key: value}}``). Paths use two placeholders that the pipeline fills in:
``{data_root}`` (the corpus folder; files already at the target rate are used there, not copied) and
``{save_folder}`` (the folder holding the manifests, where resampled copies are cached under
``wav16k/<path below data_root>``). Literal braces in file names are escaped as ``{{`` / ``}}``.

- paired entry (train/valid/test of paired data, valid/test of unpaired data)::

      "p226_001": {"noisy_wav": "{data_root}/noisy_trainset_wav/p226_001.wav",
                   "clean_wav": "{data_root}/clean_trainset_wav/p226_001.wav", "length": 2.3, "spk": "p226"}

- unpaired ``train.json``: one entry per file, noisy ones with only ``noisy_wav`` (id ``noisy/<id>``),
  clean ones with only ``clean_wav`` (id ``clean/<id>``); ``length`` is that file's duration.
- unpaired ``valid.json`` without a paired validation folder pair: held-out noisy files only
  (``noisy_wav``, ``length``, ``spk``): no reference, so the Brain validates on it without one
  (blind SNR gain and held-out cycle loss, see :mod:`upcycle_se.validation`).

``length`` is in seconds at the target rate. :mod:`upcycle_se.data.pipeline` reads all of these.

Re-running
----------
``prepare_options.json`` (written last) records the options; a run with the same options whose manifests
exist does nothing. The resampling cache is idempotent on its own: every file is written atomically
(temporary name, then rename), a folder's ``.resampled.json`` marker is written once all of its files
are done, and a later run removes leftover ``*.part`` files, keeps complete cached files and converts only
what is missing. Delete ``prepare_options.json`` to rescan a corpus whose files changed.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import soundfile as sf
from tqdm import tqdm

from upcycle_se.audio import AUDIO_EXTENSIONS, read_audio, resample_audio, write_audio_atomic
from upcycle_se.errors import AudioError, ConfigError, DataError, first_line

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Accepted sub-folder names per role, in order of preference (distributed 48 kHz names first).
VOICEBANK_SUBFOLDERS: Dict[str, Tuple[str, ...]] = {
    "clean_train": ("clean_trainset_28spk_wav", "clean_trainset_wav"),
    "noisy_train": ("noisy_trainset_28spk_wav", "noisy_trainset_wav"),
    "clean_test": ("clean_testset_wav",),
    "noisy_test": ("noisy_testset_wav",),
}
#: VoiceBank-DEMAND's customary validation speakers (used when all are among the training speakers).
VOICEBANK_VALID_SPEAKERS: Tuple[str, ...] = ("p226", "p287")
#: Otherwise this many training speakers (the last ones in sorted order) are held out (fewer when the
#: corpus has so few speakers that none would be left to train on).
N_DEFAULT_VALID_SPEAKERS = 2
#: Paired clean/noisy files whose durations differ by more than this are reported as mismatched.
MAX_PAIR_LENGTH_DIFF_S = 0.1

OPTIONS_FILE = "prepare_options.json"
MARKER_FILE = ".resampled.json"
MANIFESTS = ("train", "valid", "test")
_FORMAT_VERSION = 1
_N_EXAMPLES = 3  # how many offending names an error message lists


def default_speaker(uid: str) -> str:
    """Speaker of an utterance id: ``"p226_001"`` -> ``"p226"``, ``"spk3/ch1/utt7"`` -> ``"spk3"``."""
    return uid.split("/", 1)[0] if "/" in uid else uid.split("_", 1)[0]


def file_as_speaker(uid: str) -> str:
    """Each file its own "speaker": for recordings without speaker labels (validation holds out files)."""
    return uid


def cache_folder_name(sample_rate: int) -> str:
    """Name of the resampling cache folder inside ``save_folder``: ``wav16k`` for 16000 Hz."""
    return f"wav{sample_rate / 1000:g}k"


def prepare_voicebank(data_folder: PathLike, save_folder: PathLike, *,
                      valid_speakers: Optional[Sequence[str]] = None,
                      sample_rate: int = 16000) -> Dict[str, Optional[Path]]:
    """Prepares VoiceBank-DEMAND (either naming, 48 kHz or 16 kHz) for the recipe.

    Arguments
    ---------
    data_folder : the folder holding ``clean_trainset_28spk_wav/`` (or ``clean_trainset_wav/``),
        ``noisy_trainset_28spk_wav/`` (or ``noisy_trainset_wav/``), ``clean_testset_wav/``, ``noisy_testset_wav/``.
    save_folder : where the manifests, ``prepare_options.json`` and the resampling cache go.
    valid_speakers : training speakers held out for validation; default p226 and p287 (or, when absent,
        the last two training speakers in sorted order; one if there are only two).
    sample_rate : the rate the recipe works at; files at another rate are resampled once into the cache.

    Returns
    -------
    ``{"train": Path, "valid": Path, "test": Path}`` of the manifests.

    Raises
    ------
    DataError / AudioError: a missing folder or sub-folder, mismatched names, an unusable file.
    """
    data_folder = Path(data_folder).expanduser().absolute()
    accepted = "; ".join(" or ".join(names) for names in VOICEBANK_SUBFOLDERS.values())
    if not data_folder.is_dir():
        raise DataError(f"{data_folder}: data folder not found (expected VoiceBank-DEMAND with sub-folders {accepted})")
    found: Dict[str, Path] = {}
    missing: List[str] = []
    for role, names in VOICEBANK_SUBFOLDERS.items():
        hit = next((data_folder / n for n in names if (data_folder / n).is_dir()), None)
        if hit is None:
            missing.append(" or ".join(names))
        else:
            found[role] = hit
    if missing:
        raise DataError(f"{data_folder}: not a VoiceBank-DEMAND folder: missing sub-folder(s) {'; '.join(missing)} "
                        f"(accepted names: {accepted})")
    return prepare_folders(found["clean_train"], found["noisy_train"], save_folder, paired=True,
                           test_clean_dir=found["clean_test"], test_noisy_dir=found["noisy_test"],
                           valid_speakers=valid_speakers, sample_rate=sample_rate, data_root=data_folder)


def prepare_folders(clean_dir: PathLike, noisy_dir: PathLike, save_folder: PathLike, *, paired: bool,
                    test_clean_dir: Optional[PathLike] = None, test_noisy_dir: Optional[PathLike] = None,
                    valid_clean_dir: Optional[PathLike] = None, valid_noisy_dir: Optional[PathLike] = None,
                    valid_speakers: Optional[Sequence[str]] = None, valid_fraction: Optional[float] = None,
                    sample_rate: int = 16000, speaker_fn: Optional[Callable[[str], str]] = None,
                    data_root: Optional[PathLike] = None) -> Dict[str, Optional[Path]]:
    """Prepares any corpus given as a clean and a noisy folder (see the module docstring).

    Arguments
    ---------
    clean_dir, noisy_dir : training folders, searched recursively for audio files.
    save_folder : where ``train.json``, ``valid.json``, ``test.json`` (when test folders are given),
        ``prepare_options.json`` and the resampling cache go.
    paired : True if both folders hold the same names (checked); False for independent lists.
    test_clean_dir, test_noisy_dir : optional paired test folders (both or neither).
    valid_clean_dir, valid_noisy_dir : optional paired validation folders (both or neither); when given,
        no training speaker is held out.
    valid_speakers : training speakers held out for validation (from both folders).
    valid_fraction : alternatively, the fraction of training speakers held out (the last ones in sorted
        order; at least one). Default when neither is given: p226 and p287 if both are training speakers,
        else the last two speakers (one if the corpus has only two). With ``paired=False`` the held-out
        speakers are chosen among the noisy folder's (validation is noisy files only).
    sample_rate : target rate; other files are resampled once into ``<save_folder>/wav16k/``.
    speaker_fn : utterance id -> speaker; default :func:`default_speaker`; :func:`file_as_speaker` for
        recordings without speaker labels.
    data_root : the folder ``{data_root}`` stands for; default the common parent of the given folders.

    Returns
    -------
    ``{"train": Path, "valid": Path, "test": Path or None}``.
    """
    speaker_fn = speaker_fn or default_speaker
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    if (test_clean_dir is None) != (test_noisy_dir is None):
        raise ConfigError("give both test_clean_dir and test_noisy_dir, or neither")
    if (valid_clean_dir is None) != (valid_noisy_dir is None):
        raise ConfigError("give both valid_clean_dir and valid_noisy_dir, or neither")
    n_valid_options = sum(x is not None for x in (valid_speakers, valid_fraction, valid_clean_dir))
    if n_valid_options > 1:
        raise ConfigError("choose one of valid_speakers, valid_fraction, valid_clean_dir/valid_noisy_dir")
    if valid_fraction is not None and not 0.0 < float(valid_fraction) < 1.0:
        raise ConfigError(f"valid_fraction must be between 0 and 1 (exclusive), got {valid_fraction!r}")
    if valid_speakers is not None:
        if isinstance(valid_speakers, str):
            valid_speakers = [valid_speakers]
        valid_speakers = sorted({str(s) for s in valid_speakers})
        if not valid_speakers:
            raise ConfigError("valid_speakers is empty: name at least one training speaker to hold out")

    folders: Dict[str, Path] = {"clean_train": _abs(clean_dir), "noisy_train": _abs(noisy_dir)}
    if test_clean_dir is not None:
        folders.update(clean_test=_abs(test_clean_dir), noisy_test=_abs(test_noisy_dir))
    if valid_clean_dir is not None:
        folders.update(clean_valid=_abs(valid_clean_dir), noisy_valid=_abs(valid_noisy_dir))
    for role, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"{folder}: {_role_words(role)} folder not found")
    root = _abs(data_root) if data_root is not None else Path(os.path.commonpath([str(f) for f in folders.values()]))
    for role, folder in folders.items():
        if not _is_within(folder, root):
            raise DataError(f"{folder}: {_role_words(role)} folder is not inside data_root {root}")

    save = _abs(save_folder)
    options = {
        "version": _FORMAT_VERSION,
        "data_root": str(root),
        "folders": {role: _rel(folder, root) for role, folder in folders.items()},
        "paired": bool(paired),
        "valid_speakers": valid_speakers,
        "valid_fraction": None if valid_fraction is None else float(valid_fraction),
        "sample_rate": sample_rate,
        "speaker_fn": f"{getattr(speaker_fn, '__module__', '')}."
                      f"{getattr(speaker_fn, '__qualname__', repr(speaker_fn))}",
    }
    outputs = {name: save / f"{name}.json" for name in MANIFESTS}
    if "clean_test" not in folders:
        outputs["test"] = None
    if _already_prepared(save, options, outputs):
        logger.info("Manifests in %s are up to date; skipping data preparation", save)
        return outputs
    save.mkdir(parents=True, exist_ok=True)

    # 1. List and check every file before any slow work, so a bad file fails the run in seconds.
    files = {role: _scan_folder(folder, role, exclude=save) for role, folder in folders.items()}
    if paired:
        _check_names(files["clean_train"], files["noisy_train"], folders["clean_train"], folders["noisy_train"],
                     hint="; pass paired=False for unpaired data")
    for split in ("test", "valid"):
        if f"clean_{split}" in folders:
            _check_names(files[f"clean_{split}"], files[f"noisy_{split}"], folders[f"clean_{split}"],
                         folders[f"noisy_{split}"],
                         hint=f" ({split} data must be paired: it is the metrics' reference)")
    speakers = {role: {uid: _speaker(speaker_fn, uid) for uid in files[role]} for role in folders}
    train_spks = sorted(set(speakers["clean_train"].values()) | set(speakers["noisy_train"].values()))
    # Unpaired validation is noisy files only: hold out speakers that have noisy files.
    candidates = train_spks if paired else sorted(set(speakers["noisy_train"].values()))
    held_out = [] if "clean_valid" in folders else _choose_valid_speakers(candidates, valid_speakers, valid_fraction)
    for role in ("clean_train", "noisy_train"):
        if all(s in held_out for s in speakers[role].values()):
            raise DataError(f"{folders[role]}: every {_role_words(role)} file belongs to a validation speaker "
                            f"({', '.join(held_out)}); hold out fewer speakers")
    plans = [_plan_folder(folders[role], files[role], root, save, sample_rate) for role in folders]
    errors = [err for plan in plans for err in plan.errors]
    if errors:
        raise AudioError(_summarise(errors))
    frames = {role: plan.frames for role, plan in zip(folders, plans)}
    for split in ("train", "valid", "test"):
        if f"clean_{split}" in folders and (paired or split != "train"):
            _check_pair_lengths(frames[f"clean_{split}"], frames[f"noisy_{split}"], folders[f"clean_{split}"],
                                folders[f"noisy_{split}"], sample_rate)

    # 2. Resample what is not at the target rate (once; a re-run converts only what is missing).
    paths: Dict[str, Dict[str, Tuple[str, int]]] = {}
    for role, plan in zip(folders, plans):
        paths[role] = _execute(plan, sample_rate)

    # 3. Manifests.
    def paired_entries(clean_role: str, noisy_role: str, keep: Callable[[str], bool]) -> Dict[str, dict]:
        return {uid: {"noisy_wav": noisy_path, "clean_wav": paths[clean_role][uid][0],
                      "length": n / sample_rate, "spk": _esc(speakers[noisy_role][uid])}
                for uid, (noisy_path, n) in paths[noisy_role].items() if keep(speakers[noisy_role][uid])}

    def one_sided(role: str, key: str, keep: Callable[[str], bool], prefix: str) -> Dict[str, dict]:
        return {f"{prefix}{uid}": {key: path, "length": n / sample_rate, "spk": _esc(speakers[role][uid])}
                for uid, (path, n) in paths[role].items() if keep(speakers[role][uid])}

    def in_train(spk: str) -> bool:
        return spk not in held_out

    def in_valid(spk: str) -> bool:
        return spk in held_out

    def everyone(spk: str) -> bool:
        return True

    manifests: Dict[str, Dict[str, dict]] = {}
    if paired:
        manifests["train"] = paired_entries("clean_train", "noisy_train", in_train)
        if held_out:
            manifests["valid"] = paired_entries("clean_train", "noisy_train", in_valid)
    else:
        manifests["train"] = {**one_sided("noisy_train", "noisy_wav", in_train, "noisy/"),
                              **one_sided("clean_train", "clean_wav", in_train, "clean/")}
        if held_out:
            # Unrelated clean files are no reference for these noisy ones: validation has no clean side.
            manifests["valid"] = one_sided("noisy_train", "noisy_wav", in_valid, "")
            if not manifests["valid"]:
                raise DataError(f"{folders['noisy_train']}: no noisy file belongs to the validation speakers "
                                f"{', '.join(held_out)}; choose valid_speakers with noisy files")
    if "clean_valid" in folders:
        manifests["valid"] = paired_entries("clean_valid", "noisy_valid", everyone)
    if "clean_test" in folders:
        manifests["test"] = paired_entries("clean_test", "noisy_test", everyone)

    for name, entries in manifests.items():
        _write_json_atomic(save / f"{name}.json", entries)
    if outputs["test"] is None:
        (save / "test.json").unlink(missing_ok=True)  # a stale one from an earlier run would be picked up
    counts = {name: len(entries) for name, entries in manifests.items()}
    _write_json_atomic(save / OPTIONS_FILE, {"options": options, "valid_speakers_used": held_out, "counts": counts})
    logger.info("Wrote manifests to %s: %s (validation speakers: %s)", save,
                ", ".join(f"{k} {v}" for k, v in counts.items()), ", ".join(held_out) or "separate folders")
    return outputs


# ---------------------------------------------------------------------------------------------- internals

@dataclass
class _Plan:
    """What to do with one source folder: files used in place, files to resample, problems found."""
    folder: Path
    cache_dir: Path
    save_folder: Path
    ready: Dict[str, Tuple[str, int]] = field(default_factory=dict)  # uid -> (manifest path, frames)
    todo: List[Tuple[str, Path, str, int, str]] = field(default_factory=list)  # uid, src, rel, size, subtype
    cached: Dict[str, dict] = field(default_factory=dict)  # rel -> {"size", "frames"} for the marker
    frames: Dict[str, int] = field(default_factory=dict)  # uid -> length at the target rate
    errors: List[str] = field(default_factory=list)


def _plan_folder(folder: Path, files: Dict[str, Path], root: Path, save: Path, sample_rate: int) -> _Plan:
    """Probes the headers of a folder's files (channels, length, rate) and decides in place vs resample."""
    cache_dir = save / cache_folder_name(sample_rate) / _rel(folder, root)
    plan = _Plan(folder=folder, cache_dir=cache_dir, save_folder=save)
    marker = _read_json(cache_dir / MARKER_FILE)
    trusted = marker.get("files", {}) if (marker.get("source") == str(folder)
                                           and marker.get("sample_rate") == sample_rate) else {}
    for uid, src in files.items():
        rel = src.relative_to(folder).as_posix()
        cache_path = cache_dir / Path(rel).with_suffix(".wav")
        size = src.stat().st_size
        rec = trusted.get(rel)
        if rec and rec.get("size") == size and cache_path.is_file():
            plan.ready[uid] = (_placeholder("save_folder", cache_path, save), int(rec["frames"]))
            plan.cached[rel] = rec
            continue
        try:
            info = _probe(src)
        except AudioError as err:
            plan.errors.append(str(err))
            continue
        if info.samplerate == sample_rate:
            if info.subtype in ("FLOAT", "DOUBLE"):  # only float samples can be NaN/inf (resampled files
                try:                                 # are read in full anyway)
                    read_audio(src)
                except AudioError as err:
                    plan.errors.append(str(err))
                    continue
            plan.ready[uid] = (_placeholder("data_root", src, root), int(info.frames))
        else:
            plan.todo.append((uid, src, rel, size, info.subtype))
            # torchaudio's resample returns ceil(frames * new / orig) samples; a cached file of that length
            # was completed by an earlier, interrupted run (atomic rename) and is kept.
            plan.cached[rel] = {"size": size, "frames": -(-info.frames * sample_rate // info.samplerate)}
    plan.frames = {uid: n for uid, (_, n) in plan.ready.items()}
    plan.frames.update({uid: plan.cached[rel]["frames"] for uid, _, rel, _, _ in plan.todo})
    return plan


def _execute(plan: _Plan, sample_rate: int) -> Dict[str, Tuple[str, int]]:
    """Resamples a folder's pending files into the cache; returns uid -> (manifest path, frames)."""
    out = dict(plan.ready)
    if plan.cache_dir.is_dir():
        for leftover in plan.cache_dir.rglob("*.part"):  # from a run killed mid-write
            leftover.unlink(missing_ok=True)
    if not plan.todo:
        return dict(sorted(out.items()))
    pending = []
    for uid, src, rel, size, subtype in plan.todo:
        cache_path = plan.cache_dir / Path(rel).with_suffix(".wav")
        if _complete_cached(cache_path, sample_rate, plan.cached[rel]["frames"]):
            out[uid] = (_placeholder("save_folder", cache_path, plan.save_folder), plan.cached[rel]["frames"])
        else:
            pending.append((uid, src, rel, cache_path, subtype))
    desc = f"Resampling {plan.folder.name} to {sample_rate / 1000:g} kHz"
    for uid, src, rel, cache_path, subtype in tqdm(pending, desc=desc, unit="file", disable=not pending):
        sig, sr = read_audio(src)  # full read: also catches non-finite samples
        sig = resample_audio(sig, sr, sample_rate)
        write_audio_atomic(cache_path, sig, sample_rate,
                           subtype="FLOAT" if subtype in ("FLOAT", "DOUBLE") else "PCM_16")
        plan.cached[rel]["frames"] = int(sig.shape[-1])
        out[uid] = (_placeholder("save_folder", cache_path, plan.save_folder), int(sig.shape[-1]))
    _write_json_atomic(plan.cache_dir / MARKER_FILE,
                       {"source": str(plan.folder), "sample_rate": sample_rate, "files": plan.cached})
    return dict(sorted(out.items()))


def _check_pair_lengths(clean: Dict[str, int], noisy: Dict[str, int], clean_dir: Path, noisy_dir: Path,
                        sample_rate: int) -> None:
    """Paired files must be the same recording: their durations may differ by rounding only."""
    bad = [f"{uid} ({clean[uid] / sample_rate:.2f} s clean vs {n / sample_rate:.2f} s noisy)"
           for uid, n in noisy.items() if abs(n - clean[uid]) > MAX_PAIR_LENGTH_DIFF_S * sample_rate]
    if bad:
        raise DataError(f"{clean_dir} vs {noisy_dir}: {len(bad)} clean/noisy pair(s) differ in duration by more "
                        f"than {MAX_PAIR_LENGTH_DIFF_S} s, e.g. {', '.join(bad[:_N_EXAMPLES])}; paired files must "
                        "be the same recording")


def _complete_cached(path: Path, sample_rate: int, frames: int) -> bool:
    if not path.is_file():
        return False
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - unreadable means "convert again"
        return False
    return info.samplerate == sample_rate and info.channels == 1 and info.frames == frames


def _probe(path: Path):
    """Header check of one file: readable, mono, not empty. Returns soundfile's info."""
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as err:  # noqa: BLE001 - soundfile raises several types for corrupt headers
        raise AudioError(f"{path}: cannot be read as audio ({first_line(err)})") from None
    if info.channels != 1:
        raise AudioError(f"{path}: has {info.channels} channels, expected mono")
    if info.frames <= 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    return info


def _scan_folder(folder: Path, role: str, exclude: Path) -> Dict[str, Path]:
    """Audio files below ``folder`` (recursively, hidden entries and ``exclude`` skipped), by id."""
    found: Dict[str, Path] = {}
    exclude_real = os.path.realpath(exclude)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) != exclude_real)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.startswith(".") or path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            uid = path.relative_to(folder).with_suffix("").as_posix()
            if uid in found:
                raise DataError(f"{path}: same name as {found[uid].name} in {found[uid].parent}; "
                                "keep one file per name (ids are file names without the extension)")
            found[uid] = path
    if not found:
        raise DataError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the "
                        f"{_role_words(role)} folder")
    return dict(sorted(found.items()))


def _check_names(clean: Dict[str, Path], noisy: Dict[str, Path], clean_dir: Path, noisy_dir: Path,
                 hint: str) -> None:
    only_clean = sorted(set(clean) - set(noisy))
    only_noisy = sorted(set(noisy) - set(clean))
    if not only_clean and not only_noisy:
        return
    parts = []
    if only_clean:
        parts.append(f"{len(only_clean)} clean file(s) without a noisy one "
                     f"(e.g. {', '.join(only_clean[:_N_EXAMPLES])})")
    if only_noisy:
        parts.append(f"{len(only_noisy)} noisy file(s) without a clean one "
                     f"(e.g. {', '.join(only_noisy[:_N_EXAMPLES])})")
    raise DataError(f"{clean_dir} and {noisy_dir} do not hold the same file names: {'; '.join(parts)}{hint}")


def _choose_valid_speakers(train_spks: List[str], requested: Optional[List[str]],
                           fraction: Optional[float]) -> List[str]:
    if requested is not None:
        unknown = [s for s in requested if s not in train_spks]
        if unknown:
            raise DataError(f"validation speaker(s) {', '.join(unknown)} not among the training speakers "
                            f"({', '.join(train_spks[:8])}{', ...' if len(train_spks) > 8 else ''})")
        chosen = requested
    elif fraction is not None:
        chosen = train_spks[-max(1, round(fraction * len(train_spks))):]
    elif all(s in train_spks for s in VOICEBANK_VALID_SPEAKERS) and len(train_spks) > len(VOICEBANK_VALID_SPEAKERS):
        chosen = list(VOICEBANK_VALID_SPEAKERS)
    else:  # a tiny corpus keeps at least one speaker for training
        chosen = train_spks[-min(N_DEFAULT_VALID_SPEAKERS, max(1, len(train_spks) - 1)):]
    if len(chosen) >= len(train_spks):
        raise DataError(f"only {len(train_spks)} training speaker(s) ({', '.join(train_spks)}): holding out "
                        f"{', '.join(chosen)} for validation leaves none to train on; give valid_speakers "
                        "or valid_clean_dir/valid_noisy_dir")
    return sorted(chosen)


def _speaker(speaker_fn: Callable[[str], str], uid: str) -> str:
    try:
        spk = speaker_fn(uid)
    except Exception as err:  # noqa: BLE001 - a user callable; report which id broke it
        raise ConfigError(f"speaker_fn failed on id {uid!r}: {first_line(err)}") from None
    if not isinstance(spk, str) or not spk:
        raise ConfigError(f"speaker_fn returned {spk!r} for id {uid!r}; it must return a non-empty string")
    return spk


def _already_prepared(save: Path, options: dict, outputs: Dict[str, Optional[Path]]) -> bool:
    stored = _read_json(save / OPTIONS_FILE)
    return stored.get("options") == options and all(p.is_file() for p in outputs.values() if p is not None)


def _placeholder(name: str, path: Path, base: Path) -> str:
    return "{" + name + "}/" + _esc(path.relative_to(base).as_posix())


def _esc(text: str) -> str:
    """Escapes braces, which SpeechBrain's manifest loader would read as placeholders."""
    return text.replace("{", "{{").replace("}", "}}")


def _abs(path: PathLike) -> Path:
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _role_words(role: str) -> str:
    kind, split = role.split("_")
    return f"{kind} {'training' if split == 'train' else 'validation' if split == 'valid' else split}"


def _summarise(errors: List[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return f"{errors[0]} (and {len(errors) - 1} more unusable file(s): {'; '.join(errors[1:1 + _N_EXAMPLES])}" \
           f"{'; ...' if len(errors) > 1 + _N_EXAMPLES else ''})"


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, obj: dict) -> None:
    """Writes JSON so that ``path`` is either the complete new file or untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

