"""Runs a recipe's ``train.py`` (in the current folder) with NaN input on one DDP process only.

``POISON_RANK`` (the ``RANK`` torchrun gives) turns the first noisy sample of each training batch into NaN
for the batches of an epoch numbered in ``POISON_STEPS`` (``1,2``: the first two; ``all``: every one),
as a corrupt file or an exploding step on one GPU would. Used by the DDP test: the other processes
must skip the same steps instead of waiting forever in the gradient all-reduce.

Usage: ``POISON_RANK=1 POISON_STEPS=all torchrun --nproc_per_node=2 poison_train.py hparams/... ``
"""
import math
import os
import runpy
import sys

from upcycle_se.brain import UpCycleBrain

RANK, STEPS = int(os.environ["POISON_RANK"]), os.environ["POISON_STEPS"]
real_fit_batch = UpCycleBrain.fit_batch


def fit_batch(self, batch):
    """``self.step`` is SpeechBrain's 1-based batch count within the epoch."""
    if int(os.environ.get("RANK", "0")) == RANK and (STEPS == "all" or str(self.step) in STEPS.split(",")):
        batch.noisy_sig.data[0, 0] = math.nan
    return real_fit_batch(self, batch)


UpCycleBrain.fit_batch = fit_batch
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
