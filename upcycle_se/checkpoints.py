"""Checkpoints that are whole or absent, and setting aside incomplete ones that older runs left.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` writes a checkpoint's ``CKPT.yaml``
*first* and its parameter files after it, each in place. A process killed during a save therefore leaves
a ``CKPT+*`` folder that looks like the newest checkpoint but holds a truncated or missing file.

:class:`AtomicCheckpointer` (the recipes' checkpointer) makes a save all-or-nothing: every file is written
into a hidden ``.saving-CKPT+*`` folder beside the others, flushed to disk, and the folder is then renamed
to its ``CKPT+*`` name in one ``rename``. A kill at any instant leaves a complete ``CKPT+*`` folder or none
(plus a hidden staging folder, which SpeechBrain never lists and the next save removes).

:func:`set_aside_incomplete_checkpoints` still runs before recovery (see :class:`upcycle_se.brain.UpCycleBrain`)
for folders written by older versions or other tools: it renames each incomplete folder to a hidden
``.incomplete-CKPT+*`` name, which SpeechBrain and ``upcycle-se export`` ignore, so training resumes from the
last complete checkpoint and nothing is deleted.
"""
from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, PARAMFILE_EXT, Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

logger = logging.getLogger(__name__)

#: Prefix of the name an incomplete checkpoint folder is renamed to (hidden; SpeechBrain ignores it).
INCOMPLETE_PREFIX = ".incomplete-"
#: Prefix of the hidden folder an :class:`AtomicCheckpointer` writes a checkpoint into before publishing it.
STAGING_PREFIX = ".saving-"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive


def file_problem(path: Path) -> Optional[str]:
    """Why a checkpoint file cannot be loaded (missing, empty, truncated), or None if it looks complete.

    A ``torch.save`` zip archive is complete when its central directory (written last) can be read;
    a text file (SpeechBrain's epoch counter and Brain state) when it is non-empty YAML.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as err:
        return f"{path.name} is unreadable ({err.strerror})"
    if not head:
        return f"{path.name} is empty"
    if head == _ZIP_MAGIC[:len(head)]:
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return f"{path.name} is truncated"
        return None
    if head[:1] == b"\x80":  # torch's legacy (pickle) format: nothing cheap to check
        return None
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return f"{path.name} is truncated"
    return None


def checkpoint_problem(folder: Path, required: Iterable[str] = ()) -> Optional[str]:
    """Why the checkpoint ``folder`` is incomplete, or None.

    Incomplete: no readable ``CKPT.yaml`` mapping with ``unixtime``, a parameter file that is empty or
    truncated, or no ``<name>.ckpt`` for one of the ``required`` recoverables.
    """
    meta_path = folder / METAFNAME
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {METAFNAME}"
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return f"{METAFNAME} is unreadable"
    if not isinstance(meta, dict) or "unixtime" not in meta:
        return f"{METAFNAME} is truncated"
    for path in sorted(folder.glob(f"*{PARAMFILE_EXT}")):
        problem = file_problem(path)
        if problem:
            return problem
    missing = [name for name in required if not (folder / f"{name}{PARAMFILE_EXT}").is_file()]
    if missing:
        return f"{', '.join(f'{m}{PARAMFILE_EXT}' for m in missing)} missing"
    return None


def read_checkpoints(save_dir: Path, required: Iterable[str] = ()) -> Tuple[List[Checkpoint], Dict[Path, str]]:
    """The complete ``CKPT+*`` checkpoints of ``save_dir`` as SpeechBrain ``Checkpoint`` tuples (path, meta,
    paramfiles), sorted by path, and ``{folder: problem}`` for the incomplete ones (never an exception:
    SpeechBrain's own listing fails on an empty or half-written ``CKPT.yaml``)."""
    complete, problems = [], {}
    folders = sorted(p for p in Path(save_dir).iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)) \
        if Path(save_dir).is_dir() else []
    for folder in folders:
        problem = checkpoint_problem(folder, required)
        if problem is not None:
            problems[folder] = problem
            continue
        meta = yaml.safe_load((folder / METAFNAME).read_text(encoding="utf-8"))
        paramfiles = {f.stem: f for f in folder.iterdir() if f.suffix == PARAMFILE_EXT}
        complete.append(Checkpoint(folder, meta, paramfiles))
    return complete, problems


def required_recoverables(checkpointer) -> List[str]:
    """The recoverables a checkpoint of ``checkpointer`` must hold for ``recover_if_possible`` to load it
    (SpeechBrain tolerates missing dataloader and optional ones, and everything with ``allow_partial_load``)."""
    if getattr(checkpointer, "allow_partial_load", False):
        return []
    optional = getattr(checkpointer, "optional_recoverables", {})
    return [name for name in checkpointer.recoverables if "dataloader" not in name and not optional.get(name)]


def set_aside_incomplete_checkpoints(checkpointer) -> List[Path]:
    """Renames every incomplete ``CKPT+*`` folder of ``checkpointer`` to ``.incomplete-CKPT+*``.

    Call it on the main process right before ``recover_if_possible`` / ``find_checkpoint``, once every
    recoverable is registered. Returns the new paths (each is also logged as a warning).
    """
    save = Path(checkpointer.checkpoints_dir)
    if not save.is_dir():
        return []
    required = required_recoverables(checkpointer)
    moved = []
    for folder in sorted(p for p in save.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)):
        problem = checkpoint_problem(folder, required)
        if problem is None:
            continue
        target = save / f"{INCOMPLETE_PREFIX}{folder.name}"
        n = 1
        while target.exists():
            n += 1
            target = save / f"{INCOMPLETE_PREFIX}{folder.name}.{n}"
        os.replace(folder, target)
        logger.warning(f"checkpoint {folder} is incomplete ({problem}; a run interrupted while saving?): "
                       f"moved to {target.name} and not used")
        moved.append(target)
    return moved


# ------------------------------------------------------------------------------- atomic saves
def _fsync_path(path: Path) -> None:
    """Flushes a file's or a folder's data and metadata to disk (a folder: its entries, i.e. renames)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_folder(staging: Path, final: Path) -> Path:
    """Makes the fully written folder ``staging`` appear as ``final`` in one step and returns ``final``.

    Every file is fsynced before the rename and the parent folder after it, so that a power cut cannot
    leave a ``final`` folder whose files are still only in the page cache. A folder already at ``final``
    (a save under a custom name made twice) is replaced by the new one.
    """
    for path in staging.iterdir():
        _fsync_path(path)
    _fsync_path(staging)
    replaced = None
    if final.exists():
        replaced = final.with_name(f"{STAGING_PREFIX}replaced-{final.name}")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(staging, final)
    _fsync_path(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return final


def remove_staging_folders(save_dir: Path) -> List[Path]:
    """Deletes the hidden staging folders that saves killed before their rename left in ``save_dir``."""
    save_dir = Path(save_dir)
    stale = sorted(p for p in save_dir.glob(f"{STAGING_PREFIX}*") if p.is_dir()) if save_dir.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        logger.info(f"removed {folder.name}, left by a save that was interrupted before it completed")
    return stale


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` whose saves are all-or-nothing.

    :meth:`save_checkpoint` lets SpeechBrain write every recoverable (on every process whose save hook runs)
    into a hidden ``.saving-CKPT+*`` folder, waits for all processes, flushes each file to disk and renames
    the folder to its final ``CKPT+*`` name on the main process. Loading, listing and deleting are
    SpeechBrain's own: they only ever see published folders. Same constructor as ``Checkpointer``.
    """

    def _new_checkpoint_dirpath(self) -> Path:
        return self._staged(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name) -> Path:
        return self._staged(super()._custom_checkpoint_dirpath(name))

    def _staged(self, final: Path) -> Path:
        """Remembers ``final`` and returns the hidden folder that the save writes into instead."""
        self._final_dir = Path(final)
        return self._final_dir.with_name(f"{STAGING_PREFIX}{self._final_dir.name}")

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006
        """Saves a checkpoint as SpeechBrain does, but publishes its folder only once every file is on disk.

        Returns the :class:`~speechbrain.utils.checkpoints.Checkpoint` (its final path) on the main
        process, None elsewhere, like ``Checkpointer.save_checkpoint``.
        """
        if if_main_process():
            remove_staging_folders(self.checkpoints_dir)
        staged = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=logging.DEBUG)
        ddp_barrier()  # every process's save hooks have written their files into the staging folder
        ckpt = None
        if if_main_process():
            final = publish_folder(staged.path, self._final_dir)
            paramfiles = {key: final / path.name for key, path in staged.paramfiles.items()}
            ckpt = Checkpoint(final, staged.meta, paramfiles)
            kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
            logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        ddp_barrier()  # no process lists the checkpoints before the new one is published
        return ckpt


def make_atomic(checkpointer: Optional[Checkpointer]) -> Optional[Checkpointer]:
    """Turns a plain SpeechBrain ``Checkpointer`` (e.g. from an older hparams file) into an
    :class:`AtomicCheckpointer` in place; the subclass adds behaviour only, no state. Others are returned as is."""
    if checkpointer is not None and type(checkpointer) is Checkpointer:
        checkpointer.__class__ = AtomicCheckpointer
    return checkpointer
