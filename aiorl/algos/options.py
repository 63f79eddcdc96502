"""Unknown keyword options of an algorithm config: one :class:`~aiorl.errors.ConfigError` naming the closest fields."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

from aiorl.errors import ConfigError, did_you_mean

Config = TypeVar("Config", bound=type)


def suggest_unknown_options(cls: Config) -> Config:
    """Make ``cls(...)`` (a keyword-only dataclass) reject unknown options with a :class:`ConfigError`.

    ``PPO(learnig_rate=1e-3)`` then says ``learnig_rate=0.001 is not a PPO option; did you
    mean 'learning_rate'?``, as ``Trainer`` does for its options, instead of Python's plain
    ``TypeError``. Apply it on top of ``@dataclass``.
    """
    init = cls.__init__
    known = tuple(f.name for f in dataclasses.fields(cls))

    @functools.wraps(init)
    def __init__(self: Any, **options: Any) -> None:
        unknown = sorted(name for name in options if name not in known)
        if unknown:
            raise ConfigError(
                [
                    f"{name}={options[name]!r} is not a {cls.__name__} option{did_you_mean(name, known)}"
                    for name in unknown
                ]
            )
        init(self, **options)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls
