"""Action masks: which actions are valid now, read from the env's ``info["action_mask"]``.

Gymnasium's convention (``Taxi-v3``, ``MultiDiscrete.sample(mask=...)``): an env whose
actions are sometimes invalid puts ``info["action_mask"]`` into the info of ``reset`` and
of every ``step``, the mask of the observation returned with it:

- ``Discrete(n)``: an ``int8`` (or bool, or any integer) array of ``n``, nonzero = valid;
- ``MultiDiscrete(nvec)``: one such array per component (a tuple or list), or one array of
  ``sum(nvec)`` with the components' masks side by side.

:class:`ActionMasks` reads such a mask into a flat bool array of :attr:`ActionMasks.width`
(one entry per logit of the action distribution) and rejects one that is missing, of the
wrong shape or dtype, or that leaves no valid action (in some component): workers treat that
as an env error. Masks on other action spaces (``Box``, ``MultiBinary``) are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from aiorl.errors import ConfigError

ACTION_MASK_KEY = "action_mask"
"""The info key an env puts its action mask under."""


class InvalidActionMask(ValueError):
    """An env's action mask is missing, malformed, or leaves no valid action."""


def _is_integer_or_bool(array: np.ndarray) -> bool:
    return array.dtype.kind in "biu"


@dataclass(frozen=True, slots=True)
class ActionMasks:
    """How the action masks of one action space are read.

    Attributes:
        sizes: the number of actions of each component: ``(n,)`` for ``Discrete(n)``,
            ``nvec`` for ``MultiDiscrete(nvec)``.
    """

    sizes: tuple[int, ...]

    @classmethod
    def for_space(cls, space: gym.Space) -> ActionMasks:
        """The masks of ``space``; :class:`~aiorl.errors.ConfigError` naming it if it cannot be masked."""
        if isinstance(space, gym.spaces.Discrete):
            return cls((int(space.n),))
        if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
            return cls(tuple(int(n) for n in space.nvec))
        raise ConfigError(
            f"the env puts info['action_mask'], but its action_space={space!r} cannot be masked; "
            "action masks are supported for Discrete and MultiDiscrete action spaces"
        )

    @property
    def width(self) -> int:
        """Entries of a flat mask (the logits of the action distribution)."""
        return sum(self.sizes)

    def _describe(self) -> str:
        if len(self.sizes) == 1:
            return f"an integer or bool array of shape ({self.sizes[0]},)"
        return f"{len(self.sizes)} integer or bool arrays of sizes {self.sizes}, or one of shape ({self.width},)"

    def read_info(self, info: Mapping[str, Any], out: np.ndarray) -> None:
        """Write ``info["action_mask"]`` into ``out`` (bool, ``[width]``).

        Raises:
            InvalidActionMask: the mask is missing, malformed or leaves no valid action.
        """
        try:
            raw = info[ACTION_MASK_KEY]
        except (KeyError, TypeError):
            raise InvalidActionMask(
                f"the info has no {ACTION_MASK_KEY!r}, but this env's first reset had one "
                "(an env with action masks puts one into the info of every reset and step)"
            ) from None
        self.read(raw, out)

    def read_batch_info(self, info: object, rows: np.ndarray, out: np.ndarray) -> None:
        """Write a vector env's masks of the sub-envs ``rows`` (bool ``[K]``) into ``out`` (bool ``[K, width]``).

        A gymnasium vector env marks which sub-envs put a mask into their info
        (``info["_action_mask"]``) and fills the others with zeros: those are named as missing.

        Raises:
            InvalidActionMask: a mask is missing, malformed or leaves no valid action (naming the sub-env).
        """
        try:
            raw = info[ACTION_MASK_KEY]  # type: ignore[index]
        except (KeyError, TypeError):
            raise InvalidActionMask(
                f"the vector env's info has no {ACTION_MASK_KEY!r}, but its first reset had one "
                "(an env with action masks puts one into the info of every reset and step)"
            ) from None
        present = info.get(f"_{ACTION_MASK_KEY}") if isinstance(info, Mapping) else None
        for i in np.flatnonzero(rows):
            if present is not None and not present[i]:
                raise InvalidActionMask(
                    f"sub-env {i} put no {ACTION_MASK_KEY!r} into its info (the vector env filled zeros in); "
                    "an env with action masks puts one into the info of every reset and step"
                )
            try:
                self.read(raw[i], out[i])
            except InvalidActionMask as exc:
                raise InvalidActionMask(f"sub-env {i}: {exc}") from None

    def read(self, raw: Any, out: np.ndarray) -> None:
        """Write the mask ``raw`` (as an env gives it) into ``out`` (bool, ``[width]``).

        Raises:
            InvalidActionMask: ``raw`` is malformed or leaves no valid action.
        """
        if isinstance(raw, np.ndarray) and raw.shape == out.shape and _is_integer_or_bool(raw):
            np.not_equal(raw, 0, out=out)  # the usual case, kept cheap: it runs after every step
        elif len(self.sizes) > 1 and isinstance(raw, tuple | list) and len(raw) == len(self.sizes):
            start = 0
            for index, (part, size) in enumerate(zip(raw, self.sizes, strict=True)):
                array = np.asarray(part)
                if array.shape != (size,) or not _is_integer_or_bool(array):
                    raise InvalidActionMask(
                        f"info['action_mask'][{index}] is {_summary(array)}; expected {self._describe()}"
                    )
                np.not_equal(array, 0, out=out[start : start + size])
                start += size
        else:
            try:
                array = np.asarray(raw) if isinstance(raw, list | tuple | np.ndarray) else None
            except ValueError:  # a ragged sequence: parts of other sizes, or another number of them
                raise InvalidActionMask(
                    f"info['action_mask'] is a {type(raw).__name__} of {len(raw)} parts; expected {self._describe()}"
                ) from None
            if array is None or array.shape != out.shape or not _is_integer_or_bool(array):
                shown = _summary(array) if array is not None else type(raw).__name__
                raise InvalidActionMask(f"info['action_mask'] is {shown}; expected {self._describe()}")
            np.not_equal(array, 0, out=out)
        self._check_some_valid(out)

    def _check_some_valid(self, mask: np.ndarray) -> None:
        if len(self.sizes) == 1:
            if not mask.any():
                raise InvalidActionMask("info['action_mask'] allows no action (every entry is 0)")
            return
        start = 0
        for index, size in enumerate(self.sizes):
            if not mask[start : start + size].any():
                raise InvalidActionMask(f"info['action_mask'] allows no action in component {index} (of size {size})")
            start += size

    def from_raw(self, raw: Any) -> np.ndarray:
        """A new flat bool mask of ``raw`` (see :meth:`read`)."""
        out = np.empty(self.width, dtype=np.bool_)
        self.read(raw, out)
        return out


def _summary(array: np.ndarray) -> str:
    return f"an array of shape {array.shape} and dtype {array.dtype}"


def detect_action_masks(info: object, space: gym.Space) -> ActionMasks | None:
    """The masks of an env whose reset returned ``info`` (``None``: it gives none).

    Raises:
        ConfigError: the env gives masks but ``space`` cannot be masked.
    """
    if not (isinstance(info, Mapping) and ACTION_MASK_KEY in info):
        return None
    return ActionMasks.for_space(space)


def check_no_action_mask(info: object) -> None:
    """Raise :class:`InvalidActionMask` if ``info`` (a worker env's first reset's) has an action mask.

    The trainer decides whether an env is masked once, on the env it probes; a worker's
    env that gives masks when the probed one did not would have them ignored.
    """
    if isinstance(info, Mapping) and ACTION_MASK_KEY in info:
        raise InvalidActionMask(
            "the env's reset put info['action_mask'], but the env the trainer probed gave none "
            "(an aiorl.AsyncEnv with action masks sets the class attribute action_masks = True)"
        )
