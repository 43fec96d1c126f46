"""Runs a recipe's ``train.py`` (in the current folder) and SIGKILLs it at the instant ``$KILL_AT`` names.

Used by the resume tests: the kill lands at a chosen point of the run, whatever the machine's speed, and
leaves exactly what a ``kill -9`` at that instant leaves. ``KILL_AT`` is one of:

- ``save:<file>:<nth>:<fraction>``: during the nth ``torch.save`` of ``<file>`` (e.g. ``gen_n2c.ckpt``),
  after writing that fraction of its bytes (0: before the file is created);
- ``fsync:<nth>``: right before the nth fsync of a checkpoint's file or folder;
- ``publish:<nth>``: right after the nth checkpoint folder was renamed to its ``CKPT+*`` name.

Usage: ``KILL_AT=publish:1 python kill_train.py hparams/upcycle_small.yaml --data_folder=...``
"""
import io
import os
import runpy
import signal
import sys

import torch

from upcycle_se import checkpoints

KIND, *ARGS = os.environ["KILL_AT"].split(":")
_seen = [0]


def _due() -> bool:
    """True at the nth event of the kind named by KILL_AT."""
    _seen[0] += 1
    return _seen[0] == int(ARGS[1] if KIND == "save" else ARGS[0])


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if KIND == "save":
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and os.path.basename(os.fspath(f)) == ARGS[0] and _due():
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            if float(ARGS[2]) > 0:
                with open(f, "wb") as out:
                    out.write(buf.getvalue()[: int(len(buf.getvalue()) * float(ARGS[2]))])
            _die()
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
elif KIND == "fsync":
    real_fsync = checkpoints._fsync_path

    def fsync(path):
        if _due():
            _die()
        real_fsync(path)

    checkpoints._fsync_path = fsync
elif KIND == "publish":
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if os.path.basename(os.fspath(dst)).startswith("CKPT+") and _due():
            _die()

    os.replace = replace  # publish_folder looks it up at call time
else:
    sys.exit(f"kill_train.py: unknown KILL_AT={os.environ['KILL_AT']!r}")

sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
