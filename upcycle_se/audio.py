"""Reading, checking, resampling and atomically writing audio.

Everything here reads with :mod:`soundfile` (``torchaudio.load`` needs torchcodec, which the project does
not install) and reports a bad file as one :class:`~upcycle_se.errors.AudioError` line naming the file
and the problem, instead of a traceback from deep inside a library.

Whole files: :func:`read_audio`, :func:`load_mono`, :func:`write_audio_atomic`. Streamed files, block by
block (for :mod:`upcycle_se.streaming`): :class:`FileSource`, :class:`AtomicWriter`, and
:func:`output_format`, the format and subtype an output is written in.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from upcycle_se.errors import AudioError, first_line

PathLike = Union[str, os.PathLike]

#: Extensions treated as audio when a folder is scanned.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")
# Extensions soundfile does not map to a format by upper-casing them.
_EXTENSION_FORMATS = {"aif": "AIFF", "oga": "OGG", "opus": "OGG"}


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


class FileSource:
    """Reads an audio file sequentially as float32 ``[channels, n]`` blocks, checking every block."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        if path.is_dir():
            raise AudioError(f"{path}: is a folder, not an audio file")
        try:
            self._file = sf.SoundFile(str(path))
        except Exception as err:  # soundfile raises several types for corrupt headers
            raise AudioError(f"{path}: cannot be read as audio ({first_line(err)})") from None
        self.sample_rate, self.channels, self.frames = self._file.samplerate, self._file.channels, self._file.frames
        self.format, self.subtype = self._file.format, self._file.subtype
        if self.frames <= 0:
            self.close()
            raise AudioError(f"{path}: empty audio (0 samples)")

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` samples: ``[channels, n]`` float32 (int formats scaled to [-1, 1])."""
        try:
            data = self._file.read(n, dtype="float32", always_2d=True)
        except Exception as err:
            raise AudioError(f"{self.path}: cannot be read as audio ({first_line(err)})") from None
        if data.shape[0] < n:
            raise AudioError(f"{self.path}: ends early (header says {self.frames} samples, "
                             f"only {self._file.tell()} readable)")
        if not np.isfinite(data).all():
            raise AudioError(f"{self.path}: contains NaN or infinite samples")
        return torch.from_numpy(np.ascontiguousarray(data.T))

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


class AtomicWriter:
    """Streams ``[channels, n]`` blocks to a hidden ``.<stem>.*.part`` file beside ``path``.

    :meth:`commit` renames it over ``path``; :meth:`abort` deletes it: ``path`` is never half-written.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, fmt: str, subtype: str):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        # Float samples beyond [-1, 1] wrap around in integer formats; clip everything not stored as float.
        self._clip = subtype not in ("FLOAT", "DOUBLE")
        try:
            self._file = sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=channels, format=fmt,
                                      subtype=subtype)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def __call__(self, block: torch.Tensor) -> None:
        """Appends ``block``, ``[channels, n]`` float32 on the CPU."""
        arr = block.numpy().T
        self._file.write(np.clip(arr, -1.0, 1.0) if self._clip else arr)

    def commit(self) -> None:
        """Closes the file and renames it over ``path``."""
        self._file.close()
        # mkstemp makes the file 0600; give the output the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Closes and deletes the hidden file; ``path`` is left as it was."""
        try:
            self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def output_format(path: Path, in_format: Optional[str] = None, in_subtype: Optional[str] = None,
                  in_suffix: Optional[str] = None) -> Tuple[str, str]:
    """(format, subtype) soundfile writes ``path`` with: the input's when the extension is the input's and
    the format can store its subtype, else the extension's format with its default subtype."""
    ext = path.suffix.lower().lstrip(".")
    if in_format and in_suffix is not None and ext == in_suffix.lower().lstrip("."):
        fmt = in_format
    else:
        fmt = _EXTENSION_FORMATS.get(ext, ext.upper())
    if fmt not in sf.available_formats():
        raise AudioError(f"{path}: cannot write audio with extension '{path.suffix or '(none)'}'")
    subtype = in_subtype if in_subtype and sf.check_format(fmt, in_subtype) else sf.default_subtype(fmt)
    return fmt, subtype


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "aiff": "AIFF", "aif": "AIFF", "au": "AU"}.get(ext, "WAV")
