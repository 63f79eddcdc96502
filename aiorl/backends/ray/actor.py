"""A worker hosted by an async Ray actor: the same :class:`EnvSampler`, other plumbing.

The Ray backend wraps :class:`RolloutActor` with ``ray.remote`` on the trainer's
side; this module itself never imports ray (the weights come in as an
``ObjectRef`` in a list, so the actor awaits it only when the version changed).

One call, one rollout: :meth:`RolloutActor.rollout` fills fresh arrays, which
travel back through Ray's object store. Calls are serialised by a lock, so the
trainer may queue the next rollout while one runs (the actor never idles for a
round trip). The sampler yields to the actor's event loop every few
milliseconds, so :meth:`RolloutActor.heartbeat` answers while a rollout runs:
a missing answer means the actor is hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aiorl import protocol
from aiorl.models import tie_to_flat
from aiorl.rollout import SlotArrays
from aiorl.worker.episodes import EnvStepError, RolloutSummary
from aiorl.worker.main import INCARNATION_VARIABLE, WORKER_ID_VARIABLE
from aiorl.worker.sampler import EnvSampler
from aiorl.worker.spec import WorkerSpec
from aiorl.worker.vector_sampler import VectorEnvSampler

Failed = protocol.EnvFailed | protocol.WorkerFailed
"""What an actor reports instead of a rollout when it cannot go on: an env failed for good, or its own code raised."""


@dataclass(frozen=True, slots=True)
class ActorRollout:
    """One rollout as an actor returns it.

    Attributes:
        summary: steps, episodes and recovered env errors of the rollout.
        policy_version: the version that acted.
        arrays: the rollout, laid out as a slot of :class:`~aiorl.shm.RolloutLayout`.
        total_steps: env steps the actor has taken so far (its progress counter).
    """

    summary: RolloutSummary
    policy_version: int
    arrays: SlotArrays
    total_steps: int


class RolloutActor:
    """Steps ``spec.layout.num_envs`` envs with a local policy copy, one rollout per call.

    Args:
        spec: the worker's spec (``spec.local`` is ``None``: rollouts go back as values).
    """

    def __init__(self, spec: WorkerSpec) -> None:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ[WORKER_ID_VARIABLE] = str(spec.worker_id)
        os.environ[INCARNATION_VARIABLE] = str(spec.incarnation)
        torch.set_num_threads(1)
        torch.manual_seed(spec.torch_seed())
        self.spec = spec
        self.policy = spec.policy
        self.flat_np = tie_to_flat(self.policy).numpy()
        self.version = -1
        self.sampler: EnvSampler | VectorEnvSampler | None = None
        self.lock = asyncio.Lock()
        self.closing = False
        self.collecting: asyncio.Task[Any] | None = None

    async def start(self, weights: list[Any], version: int) -> tuple[protocol.Hello | Failed, str]:
        """Build the envs and install the weights; return hello (or the failure) and the node id."""
        import ray  # only ever runs inside a Ray worker

        node = ray.get_runtime_context().get_node_id()
        try:
            self.sampler = (
                VectorEnvSampler(self.spec, self.policy) if self.spec.vector else EnvSampler(self.spec, self.policy)
            )
        except EnvStepError as error:
            return error.to_message(None), node
        except Exception as error:  # the policy or aiorl, not an env
            return protocol.WorkerFailed.of(error, None), node
        await self._pull(weights, version)
        return protocol.Hello(self.spec.worker_id, os.getpid()), node

    async def rollout(self, weights: list[Any], version: int) -> ActorRollout | Failed | None:
        """Collect one rollout acted by ``version`` (or newer); ``None`` once the actor is closing.

        ``weights`` is ``[ObjectRef]`` of the flat weights of ``version``, fetched only
        if the actor's copy is older. An env that fails for good returns its
        :class:`~aiorl.protocol.EnvFailed`; an error of the policy or sampling, a
        :class:`~aiorl.protocol.WorkerFailed`.
        """
        async with self.lock:
            if self.closing or self.sampler is None:
                return None
            await self._pull(weights, version)
            arrays = {name: np.empty(shape, dtype) for name, (shape, dtype) in self.spec.layout.fields().items()}
            collecting = self.collecting = asyncio.ensure_future(self.sampler.collect(arrays, self.version))
            try:
                summary = await collecting
            except EnvStepError as error:
                return error.to_message(self.version)
            except Exception as error:  # the policy's forward pass, action sampling: not an env's fault
                return protocol.WorkerFailed.of(error, self.version)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if collecting.cancelled() and not (task and task.cancelling()):
                    return None  # close() stopped the rollout
                raise
            finally:
                self.collecting = None
            return ActorRollout(summary, self.version, arrays, self.sampler.total_steps)

    async def _pull(self, weights: list[Any], version: int) -> None:
        if version > self.version:
            np.copyto(self.flat_np, await weights[0])
            self.version = version

    async def heartbeat(self) -> int:
        """Answered between env steps; returns the env steps taken so far."""
        return self.sampler.total_steps if self.sampler else 0

    async def close(self) -> int:
        """Stop after the current env step, close the envs; return the env steps taken."""
        self.closing = True
        if self.collecting is not None:
            self.collecting.cancel()
        async with self.lock:
            steps = self.sampler.total_steps if self.sampler else 0
            if self.sampler is not None:
                with contextlib.suppress(Exception):
                    self.sampler.close()
            return steps
