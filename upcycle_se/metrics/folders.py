"""Scoring a folder of enhanced files against a folder of clean references (and, optionally, the noisy inputs).

Design decisions (also in ``upcycle-se evaluate --help``):

- **matching**: by file name without extension (``p232_001.wav`` matches ``p232_001.flac``); only names
  present in every given folder are scored, and the others are reported (a warning with counts and
  examples), so a half-finished enhancement run cannot pass unnoticed. No common name is an error.
- **sample rates**: every file is resampled to 16 kHz (band-limited sinc, torchaudio) with one warning per
  rate found. Wide-band PESQ is defined only at 16 kHz, and VoiceBank-DEMAND is distributed at 48 kHz and
  always evaluated after resampling to 16 kHz, so refusing would only push users to resample by hand.
  ``resample=False`` refuses instead (for checking that a pipeline already writes 16 kHz).
- **lengths**: a pair whose lengths differ by at most ``max_len_diff_s`` (0.1 s) is truncated to the
  shorter, with a warning; a larger difference is an error naming the file (likely mismatched files).
- **bad files** (unreadable, stereo, NaN/inf, empty) stop the evaluation with an error naming the file:
  skipping them would change the test set behind the mean.
- **undefined measures** (silence, shorter than 0.25 s) are NaN in the CSV, left out of the means, and
  counted in the summary table.
- **noisy input**: with ``noisy_dir`` the noisy file is scored against the same clean file, so each report
  shows noisy vs enhanced on the same set; the CSV gets ``noisy_<metric>`` columns beside the enhanced ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
from joblib import Parallel, delayed
from tqdm import tqdm

from upcycle_se.audio import list_audio_files, read_audio, resample_audio
from upcycle_se.errors import AudioError, UserError
from upcycle_se.metrics.signals import MAX_LEN_DIFF_S, SAMPLE_RATE
from upcycle_se.metrics.stats import (
    DEFAULT_METRICS,
    format_score,
    score_pair_with_warnings,
    check_metrics,
    describe_rows,
    format_table,
    write_csv_atomic,
)

PathLike = Union[str, os.PathLike]


@dataclass
class FolderEvaluation:
    """What :func:`evaluate_folders` found.

    ``enhanced[i]`` / ``noisy[i]`` are ``{metric: value}`` for ``files[i]`` (the clean file's name);
    ``notes`` are the warnings, each starting with the file name; ``unmatched`` lists the names left out.
    """

    files: List[str]
    metrics: Tuple[str, ...]
    enhanced: List[Dict[str, float]]
    noisy: Optional[List[Dict[str, float]]] = None
    notes: List[str] = field(default_factory=list)
    unmatched: Dict[str, List[str]] = field(default_factory=dict)

    def describe(self) -> Dict[str, Dict[str, Dict[str, float]]]:
        """``{"enhanced": {metric: {"mean","std","n","n_nan"}}, "noisy": ...}`` (noisy only when scored)."""
        out = {"enhanced": describe_rows(self.enhanced, self.metrics)}
        if self.noisy is not None:
            out["noisy"] = describe_rows(self.noisy, self.metrics)
        return out

    def table(self) -> str:
        """The mean ± std summary table (one row per metric; an enhanced and, if scored, a noisy column)."""
        return format_table(self.describe())

    def write_csv(self, path: PathLike) -> None:
        """One row per file: ``file,<metric>...`` then, when the noisy input was scored, ``noisy_<metric>...``."""
        header = ["file", *self.metrics]
        if self.noisy is not None:
            header += [f"noisy_{m}" for m in self.metrics]
        rows = []
        for i, name in enumerate(self.files):
            row = [name] + [format_score(self.enhanced[i][m]) for m in self.metrics]
            if self.noisy is not None:
                row += [format_score(self.noisy[i][m]) for m in self.metrics]
            rows.append(row)
        write_csv_atomic(path, header, rows)


def match_files(clean_dir: PathLike, enhanced_dir: PathLike, noisy_dir: Optional[PathLike] = None
                ) -> Tuple[List[Tuple[Path, Path, Optional[Path]]], Dict[str, List[str]]]:
    """Pairs files of the folders by name without extension.

    Returns
    -------
    (triples, unmatched): ``[(clean, enhanced, noisy or None)]`` sorted by name, and
    ``{"clean_only": [...], "enhanced_only": [...], "noisy_missing": [...]}`` (file names).

    Raises
    ------
    UserError: a missing folder, a folder without audio, two files with the same name in one folder,
    or no name common to all folders.
    """
    folders = {"clean": clean_dir, "enhanced": enhanced_dir}
    if noisy_dir is not None:
        folders["noisy"] = noisy_dir
    by_stem = {role: _index(role, folder) for role, folder in folders.items()}
    common = set(by_stem["clean"]) & set(by_stem["enhanced"])
    if noisy_dir is not None:
        common &= set(by_stem["noisy"])
    if not common:
        examples = ", ".join(f"{role}: {sorted(v.values())[0].name}" for role, v in by_stem.items())
        raise UserError(f"no file name is common to the {' and '.join(folders)} folders ({examples}); "
                        "files are matched by name without extension")
    unmatched = {
        "clean_only": sorted(by_stem["clean"][s].name for s in set(by_stem["clean"]) - set(by_stem["enhanced"])),
        "enhanced_only": sorted(by_stem["enhanced"][s].name
                                for s in set(by_stem["enhanced"]) - set(by_stem["clean"])),
        "noisy_missing": sorted(by_stem["clean"][s].name for s in
                                (set(by_stem["clean"]) & set(by_stem["enhanced"])) - common),
    }
    triples = [(by_stem["clean"][s], by_stem["enhanced"][s], by_stem["noisy"][s] if noisy_dir is not None else None)
               for s in sorted(common)]
    return triples, unmatched


def evaluate_folders(clean_dir: PathLike, enhanced_dir: PathLike, noisy_dir: Optional[PathLike] = None,
                     metrics: Iterable[str] = DEFAULT_METRICS, n_jobs: int = 1, resample: bool = True,
                     max_len_diff_s: float = MAX_LEN_DIFF_S, progress: bool = False) -> FolderEvaluation:
    """Scores every enhanced file (and noisy file, if given) against the clean file of the same name.

    Arguments
    ---------
    clean_dir, enhanced_dir, noisy_dir : folders of audio files (see the module docstring for matching).
    metrics : names among :data:`upcycle_se.metrics.ALL_METRICS`.
    n_jobs : worker processes (joblib); each reads and scores whole files.
    resample : resample files not at 16 kHz (default) instead of refusing them.
    max_len_diff_s : tolerated length difference per pair (truncated to the shorter).
    progress : show a tqdm progress bar (on stderr).

    Raises
    ------
    UserError / AudioError: one line naming the folder or file at fault.
    """
    metrics = check_metrics(metrics)
    if int(n_jobs) < 1:
        raise UserError(f"--jobs must be at least 1, got {n_jobs}")
    triples, unmatched = match_files(clean_dir, enhanced_dir, noisy_dir)
    notes = _unmatched_notes(unmatched)
    notes += _check_rates([p for t in triples for p in t if p is not None], resample)
    jobs = [(c, e, n, metrics, max_len_diff_s) for c, e, n in triples]
    if n_jobs == 1:
        results = (_score_files(*job) for job in jobs)
    else:  # a generator keeps the input order and lets the progress bar advance as files finish
        results = Parallel(n_jobs=int(n_jobs), return_as="generator")(delayed(_score_files)(*job) for job in jobs)
    enhanced, noisy = [], []
    for enh_row, noisy_row, messages in tqdm(results, total=len(jobs), disable=not progress,
                                             desc="evaluate", unit="file"):
        enhanced.append(enh_row)
        noisy.append(noisy_row)
        notes += messages
    return FolderEvaluation(files=[c.name for c, _, _ in triples], metrics=metrics, enhanced=enhanced,
                            noisy=noisy if noisy_dir is not None else None, notes=notes, unmatched=unmatched)


def _index(role: str, folder: PathLike) -> Dict[str, Path]:
    """``{stem: path}`` of the audio files in ``folder``; errors for a missing/empty folder or a repeated stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--{role} {folder}: no such folder")
    files = list_audio_files(folder)
    if not files:
        raise UserError(f"--{role} {folder}: no audio files (.wav, .flac, ...) in it")
    index: Dict[str, Path] = {}
    for path in files:
        if path.stem in index:
            raise UserError(f"--{role} {folder}: both {index[path.stem].name} and {path.name}; "
                            "cannot tell which one to score")
        index[path.stem] = path
    return index


def _unmatched_notes(unmatched: Dict[str, List[str]]) -> List[str]:
    what = {"clean_only": "clean file(s) have no enhanced file", "enhanced_only":
            "enhanced file(s) have no clean file", "noisy_missing": "matched file(s) have no noisy file"}
    notes = []
    for key, names in unmatched.items():
        if names:
            more = f", ... ({len(names) - 3} more)" if len(names) > 3 else ""
            notes.append(f"{len(names)} {what[key]}, not scored: {', '.join(names[:3])}{more}")
    return notes


def _check_rates(paths: Sequence[Path], resample: bool) -> List[str]:
    """Reads the headers; refuses (``resample`` False) or notes the files that are not at 16 kHz."""
    off_rate: Dict[int, List[Path]] = {}
    for path in paths:
        try:
            info = sf.info(str(path))
        except Exception as err:  # soundfile raises several types for corrupt headers
            raise AudioError(f"{path}: cannot be read as audio ({str(err).strip().splitlines()[0]})") from None
        if info.samplerate != SAMPLE_RATE:
            off_rate.setdefault(int(info.samplerate), []).append(path)
    notes = []
    for rate, files in sorted(off_rate.items()):
        if not resample:
            raise AudioError(f"{files[0]}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz "
                             f"({len(files)} such files; allow resampling to score them)")
        notes.append(f"{len(files)} file(s) at {rate} Hz resampled to {SAMPLE_RATE} Hz (e.g. {files[0].name})")
    return notes


def _load(path: Path) -> np.ndarray:
    sig, sr = read_audio(path)
    return resample_audio(sig, sr, SAMPLE_RATE).numpy() if sr != SAMPLE_RATE else sig.numpy()


def _score_files(clean: Path, enhanced: Path, noisy: Optional[Path], metrics: Tuple[str, ...],
                 max_len_diff_s: float) -> Tuple[Dict[str, float], Optional[Dict[str, float]], List[str]]:
    """Worker: reads one clean/enhanced(/noisy) set, returns (enhanced scores, noisy scores, notes)."""
    ref = _load(clean)
    rows, notes = [], []
    for role, path in (("enhanced", enhanced), ("noisy", noisy)):
        if path is None:
            rows.append(None)
            continue
        try:
            row, messages = score_pair_with_warnings(ref, _load(path), metrics, max_len_diff_s)
        except UserError as err:
            if str(err).startswith(str(path)):
                raise
            raise AudioError(f"{path} (vs {clean.name}): {err}") from None
        rows.append(row)
        notes += [f"{path.name} ({role}): {m}" for m in messages]
    return rows[0], rows[1], notes
