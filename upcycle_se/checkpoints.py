"""Finding checkpoint folders that a kill, a crash or a full disk left incomplete, and setting them aside.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` writes a checkpoint's ``CKPT.yaml``
*first* and its parameter files after it, each in place. A process killed during a save therefore leaves
a ``CKPT+*`` folder that looks like the newest checkpoint but holds a truncated or missing file, and every
later ``recover_if_possible()`` picks it and fails with a traceback. :func:`set_aside_incomplete_checkpoints`
runs before recovery (see :class:`upcycle_se.brain.UpCycleBrain`): it renames each incomplete folder to a
hidden ``.incomplete-CKPT+*`` name, which SpeechBrain and ``upcycle-se export`` ignore, so training resumes
from the last complete checkpoint and nothing is deleted.
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, PARAMFILE_EXT, Checkpoint

logger = logging.getLogger(__name__)

#: Prefix of the name an incomplete checkpoint folder is renamed to (hidden; SpeechBrain ignores it).
INCOMPLETE_PREFIX = ".incomplete-"
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
