"""The control plane: small framed messages over one socketpair per worker.

Each frame is a 4-byte big-endian length followed by a pickled message. Bulk
data never travels here: rollouts sit in shared-memory slots and frames carry
only slot ids. Both ends read with asyncio streams.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import traceback
from dataclasses import dataclass, field

_HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 16 * 1024 * 1024


# ---- worker -> trainer -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    """The worker is up: envs built, shared memory attached, ready for slots.

    ``aiorl_file`` is where the worker imported aiorl from (it must match the trainer's).
    """

    worker_id: int
    pid: int
    aiorl_file: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent every ``heartbeat_interval_s``; ``env_steps`` is the worker's progress counter."""

    env_steps: int


@dataclass(frozen=True, slots=True)
class SlotReady:
    """A rollout is complete in ``slot``.

    ``env_steps`` steps are trainable; ``discarded_steps`` were masked out because an
    env raised mid-episode. ``episode_returns``/``episode_lengths`` list the episodes
    that ended during the rollout. ``policy_version`` is the newest version that acted
    in it (with async envs its columns may span several; the slot's ``versions`` array
    has each step's).
    """

    slot: int
    policy_version: int
    env_steps: int
    discarded_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EnvRecovered:
    """An env raised; the worker re-created it and goes on.

    ``discarded_steps`` of its broken episode were masked out of the current rollout.
    ``env_index`` is ``None`` for a worker's vector env (re-created as a whole, with every
    sub-env's unfinished episode).
    """

    env_index: int | None
    step: int
    policy_version: int
    error_type: str
    message: str
    traceback: str
    discarded_steps: int


@dataclass(frozen=True, slots=True)
class EnvFailed:
    """An env failed for good (constructor, or too many failures in a row); the worker exits.

    ``earlier`` holds the failures of the rollout this one cut short (its last entry is this
    failure's own report): they had not been reported, and are counted like
    :class:`EnvRecovered` reports.
    """

    env_index: int | None
    step: int | None
    policy_version: int | None
    error_type: str
    message: str
    traceback: str
    earlier: tuple[EnvRecovered, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """The worker's own code raised outside its envs (the policy's forward pass, action sampling); it exits.

    Such an error comes back on every restart (the same policy, the same weights), so the
    trainer ends the run with it instead of replacing the worker.
    """

    policy_version: int | None
    error_type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, error: BaseException, policy_version: int | None) -> WorkerFailed:
        """The report of ``error``, raised while the worker held weights ``policy_version``."""
        return cls(policy_version, type(error).__name__, str(error), "".join(traceback.format_exception(error)))


# ---- trainer -> worker -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Grant:
    """``slot`` is free for the worker to fill."""

    slot: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish the current step, close the envs and exit cleanly."""


Message = Hello | Heartbeat | SlotReady | EnvRecovered | EnvFailed | WorkerFailed | Grant | Stop


def encode(message: Message) -> bytes:
    """One frame for ``message``."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def send(writer: asyncio.StreamWriter, message: Message) -> None:
    """Queue ``message`` on ``writer`` (frames are tiny; the transport buffers them)."""
    writer.write(encode(message))


async def receive(reader: asyncio.StreamReader) -> Message:
    """Read the next message.

    Raises:
        EOFError: the other end closed the connection (or died).
    """
    try:
        header = await reader.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME_BYTES:
            raise EOFError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
        payload = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise EOFError("connection closed") from exc
    return pickle.loads(payload)
