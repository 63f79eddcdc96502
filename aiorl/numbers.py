"""Numbers in configs and call arguments: what counts as one, and numpy's taken as Python's own.

Seeds and sizes often come from numpy (``for seed in np.arange(5)``): kept as numpy scalars
they would be refused (an ``np.int64`` is no ``int``) and could not be written to a config
file or a JSON log. Configs convert their fields with :func:`plain_numbers`, calls their
arguments with :func:`plain_number`, before checking them.
"""

from __future__ import annotations

import dataclasses
from typing import TypeGuard, TypeVar

import numpy as np

_Value = TypeVar("_Value")


def plain_number(value: _Value) -> _Value:
    """``value`` as Python's own number when it is a numpy scalar (``np.int64(3)`` -> ``3``), else as it is.

    Arguments of calls (``run(total_steps=...)``, ``evaluate(seed=...)``) go through this before
    they are checked, as config fields go through :func:`plain_numbers`.
    """
    return value.item() if isinstance(value, np.generic) else value  # type: ignore[return-value]


def plain_numbers(cfg: object) -> None:
    """Replace numpy scalars in the fields of the frozen config dataclass ``cfg`` with Python's own, in place.

    Called first in each config's ``__post_init__``.
    """
    for field in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, field.name)
        if isinstance(value, np.generic):
            object.__setattr__(cfg, field.name, plain_number(value))


def is_integer(value: object) -> TypeGuard[int]:
    """An int, not a bool (``True`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool (``True`` is no number of seconds)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
