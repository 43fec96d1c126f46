"""Reading, checking, resampling and atomically writing audio.

Everything here reads with :mod:`soundfile` (``torchaudio.load`` needs torchcodec, which the project does
not install) and reports a bad file as one :class:`~upcycle_se.errors.AudioError` line naming the file
and the problem, instead of a traceback from deep inside a library.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from upcycle_se.errors import AudioError, first_line

PathLike = Union[str, os.PathLike]

#: Extensions treated as audio when a folder is scanned.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


def read_audio(path: PathLike, *, allow_multichannel: bool = False) -> Tuple[torch.Tensor, int]:
    """Reads an audio file as float32.

    Arguments
    ---------
    path : the file.
    allow_multichannel : if False, a file with more than one channel is an error.

    Returns
    -------
    (signal, sample_rate): signal is ``[time]`` for mono, ``[channels, time]`` for multichannel files
    when allowed; int formats are scaled to [-1, 1].

    Raises
    ------
    AudioError: missing, unreadable/corrupt, empty, non-finite, or (unless allowed) multichannel.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt headers
        raise AudioError(f"{path}: cannot be read as audio ({first_line(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if data.shape[1] > 1 and not allow_multichannel:
        raise AudioError(f"{path}: has {data.shape[1]} channels, expected mono")
    sig = torch.from_numpy(np.ascontiguousarray(data.T))
    return (sig[0] if sig.shape[0] == 1 and not allow_multichannel else sig), int(sr)


def load_mono(path: PathLike, sample_rate: int, *, resample: bool = True) -> torch.Tensor:
    """Reads a mono file at ``sample_rate`` as ``[time]`` float32.

    With ``resample`` False a file at another rate is an error; otherwise it is resampled.
    """
    sig, sr = read_audio(path)
    if sr != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz")
        sig = resample_audio(sig, sr, sample_rate)
    return sig


def resample_audio(sig: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of ``[..., time]`` (torchaudio's sinc-interpolation)."""
    if orig_sr == new_sr:
        return sig
    return AF.resample(sig, orig_sr, new_sr)


def write_audio_atomic(path: PathLike, sig: Union[torch.Tensor, np.ndarray], sample_rate: int,
                       subtype: str = "PCM_16") -> None:
    """Writes ``[time]`` or ``[channels, time]`` audio so that ``path`` is either complete or absent.

    The file is written to a temporary name in the same folder, then renamed over ``path``: a run killed
    mid-write leaves no truncated file that a later run would trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = sig.detach().cpu().numpy() if isinstance(sig, torch.Tensor) else np.asarray(sig)
    arr = arr.T if arr.ndim == 2 else arr  # soundfile wants [time, channels]
    if subtype.startswith("PCM"):
        arr = np.clip(arr, -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        sf.write(tmp, arr, sample_rate, subtype=subtype, format=_format_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_audio_files(folder: PathLike) -> list:
    """Sorted audio files (by :data:`AUDIO_EXTENSIONS`) directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "aiff": "AIFF", "aif": "AIFF", "au": "AU"}.get(ext, "WAV")
