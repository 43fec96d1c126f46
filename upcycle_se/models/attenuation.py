"""The attenuation limit: a floor on the magnitude gain of a generator's enhancement mask.

As DeepFilterNet's attenuation limit, it bounds how far any time-frequency bin may be pulled down:
with a limit of ``L`` dB the mask's magnitude gain (``tanh(|M|)``) is clamped from below at
``10 ** (-L / 20)``, so ``|Y| >= 10 ** (-L / 20) * |X|`` in every bin. Residual noise is then kept at
``-L`` dB or above instead of being removed, and speech the mask would have taken for noise is kept too.

It is a runtime setting, not a constructor argument: a generator's saved config and weights do not change,
and it acts in ``mask`` mode only (a ``map`` generator has no mask). ``None``, the default, is no limit;
``0`` dB passes the input's magnitudes through unchanged (the mask's phase still applies).

- :class:`AttenuationLimit`: the ``max_attenuation_db`` attribute of both generator classes;
- :func:`check_max_attenuation_db`: the one validation (a one-line :class:`ConfigError`);
- :func:`set_max_attenuation_db` and :func:`max_attenuation`: set it on every masking generator inside a
  module (a wrapper, an averaged copy, an :class:`upcycle_se.inference.EnhanceModel`), for good or for a
  ``with`` block.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional

import torch.nn as nn

from upcycle_se.errors import ConfigError

__all__ = ["AttenuationLimit", "check_max_attenuation_db", "mask_generators", "set_max_attenuation_db",
           "max_attenuation"]


def check_max_attenuation_db(value) -> Optional[float]:
    """``value`` as a limit in dB: None (no limit), or a finite number >= 0.

    Raises
    ------
    ConfigError: anything else (negative, NaN, infinite, not a number), in one line.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        db = float(value)
    except (TypeError, ValueError):
        db = math.nan
    if not math.isfinite(db) or db < 0:
        raise ConfigError(f"max_attenuation_db must be a finite number of dB >= 0 (or None: no limit), got {value!r}")
    return db


class AttenuationLimit:
    """Mixin of the generator classes: the runtime attribute ``max_attenuation_db`` and the gain floor it sets.

    ``max_attenuation_db`` (None or dB >= 0, checked by :func:`check_max_attenuation_db` when set) is kept
    out of the constructor arguments, the config and the state_dict. :attr:`gain_floor` is what the
    generator's ``apply_output`` clamps the mask's magnitude gain at (mask mode only).
    """

    _max_attenuation_db: Optional[float] = None

    @property
    def max_attenuation_db(self) -> Optional[float]:
        """The attenuation limit in dB (None: no limit)."""
        return self._max_attenuation_db

    @max_attenuation_db.setter
    def max_attenuation_db(self, value: Optional[float]) -> None:
        object.__setattr__(self, "_max_attenuation_db", check_max_attenuation_db(value))

    @property
    def gain_floor(self) -> Optional[float]:
        """``10 ** (-max_attenuation_db / 20)``, the smallest magnitude gain the mask may apply; None: no floor."""
        db = self._max_attenuation_db
        return None if db is None else 10.0 ** (-db / 20.0)


def mask_generators(module: nn.Module) -> List[nn.Module]:
    """The generators inside ``module`` (itself included) that apply a mask, so that a limit acts on them."""
    return [m for m in module.modules() if isinstance(m, AttenuationLimit) and getattr(m, "mode", None) == "mask"]


def set_max_attenuation_db(module: nn.Module, db: Optional[float]) -> List[nn.Module]:
    """Sets the limit ``db`` (None: none) on every masking generator inside ``module``; returns them.

    Raises
    ------
    ConfigError: a bad ``db`` (see :func:`check_max_attenuation_db`), or a limit for a module with no
    masking generator inside (a ``map`` generator, or another network).
    """
    db = check_max_attenuation_db(db)
    gens = mask_generators(module)
    if db is not None and not gens:
        raise ConfigError("max_attenuation_db needs a masking Up-Cycle-SENet generator (mode 'mask'); "
                          f"{type(module).__name__} has none")
    for gen in gens:
        gen.max_attenuation_db = db
    return gens


@contextlib.contextmanager
def max_attenuation(module: nn.Module, db: Optional[float]) -> Iterator[nn.Module]:
    """``with max_attenuation(model, 12):`` runs the block with the limit set on ``model``'s masking
    generators, then gives each its own setting back. ``db`` None leaves them as they are."""
    if db is None:
        yield module
        return
    before = [(gen, gen.max_attenuation_db) for gen in mask_generators(module)]
    set_max_attenuation_db(module, db)
    try:
        yield module
    finally:
        for gen, value in before:
            gen.max_attenuation_db = value
