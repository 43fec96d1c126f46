"""Epoch-wise learning-rate policies of the paper's training (CycleGAN style).

Training runs ``n_epochs`` epochs at the base rate and then ``n_epochs_decay`` more epochs (the paper:
70 + 30). The factor for an epoch is a pure function of the epoch number, which SpeechBrain's epoch
counter checkpoints: a resumed run continues the schedule exactly, with no scheduler state to restore.

- ``linear``: constant, then linear decay to zero over the decay epochs (CycleGAN's ``linear`` policy);
- ``cosine``: cosine annealing from the base rate to zero over all ``n_epochs + n_epochs_decay`` epochs
  (the reference configuration's ``cosine`` policy);
- ``constant``: no decay.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from upcycle_se.errors import ConfigError

POLICIES = ("linear", "cosine", "constant")


class EpochLRPolicy:
    """Multiplicative learning-rate factor per (1-based) epoch.

    Example
    -------
    >>> p = EpochLRPolicy("linear", n_epochs=2, n_epochs_decay=2)
    >>> [p.factor(e) for e in (1, 2, 3, 4)]
    [1.0, 1.0, 0.6666666666666666, 0.3333333333333333]
    """

    def __init__(self, policy: str = "linear", n_epochs: int = 70, n_epochs_decay: int = 30):
        if policy not in POLICIES:
            raise ConfigError(f"lr_policy '{policy}' is not one of {', '.join(POLICIES)}")
        if n_epochs < 0 or n_epochs_decay < 0 or n_epochs + n_epochs_decay < 1:
            raise ConfigError(f"n_epochs={n_epochs}, n_epochs_decay={n_epochs_decay}: need >= 0 and a total >= 1")
        self.policy, self.n_epochs, self.n_epochs_decay = policy, n_epochs, n_epochs_decay

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run."""
        return self.n_epochs + self.n_epochs_decay

    def factor(self, epoch: int) -> float:
        """The factor applied to the base rate during ``epoch`` (1-based)."""
        e = epoch - 1  # epochs completed before this one
        if self.policy == "constant":
            return 1.0
        if self.policy == "linear":
            if e < self.n_epochs:
                return 1.0
            return max(0.0, 1.0 - (e - self.n_epochs + 1) / (self.n_epochs_decay + 1))
        return 0.5 * (1.0 + math.cos(math.pi * min(e, self.total_epochs) / self.total_epochs))

    def apply(self, optimizers: Iterable[torch.optim.Optimizer], base_lr: float, epoch: int) -> float:
        """Sets every param group of ``optimizers`` to ``base_lr * factor(epoch)``; returns that rate."""
        lr = base_lr * self.factor(epoch)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr
