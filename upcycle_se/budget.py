"""Training for a wall-clock budget instead of a number of epochs (``upcycle-se adapt --minutes N``).

A user adapting a model on a laptop knows how long they can wait, not how many epochs their data makes.
:class:`WallClockEpochCounter` is SpeechBrain's :class:`~speechbrain.utils.epoch_loop.EpochCounter` with a
time limit: it yields epochs until the time spent in training epochs (training, validation and the
checkpoint of each) reaches the budget. It is a checkpoint recoverable like the stock counter, and it
saves the time spent as well as the epoch, so a killed run that is started again continues with the
budget that was left, not with a new one. Time since the last checkpoint of a killed run is not counted
(that work is redone).

The counter starts another epoch only while more than a quarter of the mean epoch is left of the budget.
The Brain ends an epoch early when the budget runs out (``upcycle_se.adapt`` does it through SpeechBrain's
step-limit check), so a run ends on time, plus the validation and checkpoint of its last epoch.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Optional

from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.epoch_loop import EpochCounter

from upcycle_se.errors import ConfigError

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class WallClockEpochCounter(EpochCounter):
    """Epochs until ``minutes`` of wall-clock time are spent (or ``limit`` epochs, whichever comes first).

    Arguments
    ---------
    minutes : the budget, in minutes of wall-clock time (> 0).
    limit : the most epochs (a safety bound; the budget normally ends training first).

    Example
    -------
    >>> counter = WallClockEpochCounter(minutes=1e-9, limit=5)
    >>> [epoch for epoch in counter]  # the first epoch always runs; then the budget is spent
    [1]
    """

    def __init__(self, minutes: float, limit: int = 100000):
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
            raise ConfigError(f"minutes={minutes!r}: the training budget must be a positive number of minutes")
        super().__init__(limit)
        self.budget_s = 60.0 * float(minutes)
        self.spent_s = 0.0  # in completed epochs (saved with each checkpoint)
        self._epoch_start: Optional[float] = None
        self._completed = 0  # epochs timed in this process or restored

    def __next__(self) -> int:
        now = time.monotonic()
        if self._epoch_start is not None:  # the epoch just finished (its checkpoint included)
            self.spent_s += now - self._epoch_start
            self._completed += 1
            self._epoch_start = None
        if self.current > 0 and self._completed > 0:
            mean_epoch = self.spent_s / self._completed
            if self.budget_s - self.spent_s <= 0.25 * mean_epoch:
                logger.info("Training budget spent: %.1f of %.1f min after epoch %d", self.spent_s / 60,
                            self.budget_s / 60, self.current)
                raise StopIteration
        epoch = super().__next__()  # StopIteration at ``limit``
        self._epoch_start = time.monotonic()
        return epoch

    def elapsed_s(self) -> float:
        """Seconds of the budget spent so far, the running epoch included."""
        running = 0.0 if self._epoch_start is None else time.monotonic() - self._epoch_start
        return self.spent_s + running

    def remaining_s(self) -> float:
        """Seconds of the budget left (0 when spent)."""
        return max(0.0, self.budget_s - self.elapsed_s())

    @mark_as_saver
    def _save(self, path) -> None:
        # A checkpoint is written at the end of an epoch, before __next__ closes its timing: count it here.
        spent = self.elapsed_s()
        with open(path, "w", encoding="utf-8") as fo:
            json.dump({"current": self.current, "spent_s": spent}, fo)

    @mark_as_loader
    def _recover(self, path, end_of_epoch: bool = True) -> None:
        with open(path, encoding="utf-8") as fi:
            text = fi.read()
        try:
            saved = json.loads(text)
        except json.JSONDecodeError:
            saved = None
        if not isinstance(saved, dict):  # a stock EpochCounter's file: the epoch only
            saved = {"current": int(text), "spent_s": 0.0}
        self.current = int(saved["current"]) if end_of_epoch else int(saved["current"]) - 1
        self.spent_s = float(saved.get("spent_s", 0.0))
        self._completed = self.current
        self._epoch_start = None
