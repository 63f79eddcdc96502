"""The checkpoint format: what a trainer's state is, as a dict, and how it is put back.

:func:`trainer_state` builds the dict :meth:`aiorl.Trainer.state_dict` returns (the layout
:mod:`aiorl.checkpoint` describes; :mod:`aiorl.checkpoint` writes and reads the files);
:func:`load_trainer_state` restores one into a trainer that is not started;
:func:`run_checkpointer` saves a run's state with a :class:`~aiorl.checkpoint.Checkpointer`.

Random-number generator state: the trainer's own generator (the learner's, which orders
the minibatches; see :func:`learner_generator`) is saved and restored. The process's
global generators (torch, numpy, ``random``) belong to the application and are left alone.
Files of format version 1 saved the global torch state instead: it seeds the learner's
generator on load.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import aiorl
from aiorl.algos.learner import Learner
from aiorl.checkpoint import FORMAT, FORMAT_VERSION, Checkpointer, RunPlan, copy_tensors
from aiorl.engine.ledger import discarded_at_close
from aiorl.errors import CheckpointError
from aiorl.events import CheckpointSaved
from aiorl.models import ObservationNormalizer

if TYPE_CHECKING:
    from aiorl.trainer import Trainer

COUNTER_NAMES = ("steps_collected", "steps_trained", "episodes", "updates", "worker_restarts", "env_errors")


def learner_generator(learner: Learner) -> torch.Generator | None:
    """The learner's own random-number generator (its ``generator`` attribute), if it has one."""
    generator = getattr(learner, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def counters(trainer: Trainer) -> dict[str, Any]:
    """The cheap part of the state: counters, versions and recent returns (no weights copied).

    Steps collected but not trained yet are counted as discarded (``shutdown``), as they
    would be if the trainer closed now.
    """
    stats = trainer.stats
    discarded = discarded_at_close(stats)
    return {
        "policy_version": trainer.policy_version,
        "stats": {
            **{name: getattr(stats, name) for name in COUNTER_NAMES},
            "discarded": discarded,
            "recent_returns": list(stats.recent_returns),
        },
        "launches": trainer._launches + (1 if trainer._session is not None else 0),
        "train_time_s": trainer.train_time_s,
        "reward_normalizer": None if trainer.reward_normalizer is None else trainer.reward_normalizer.state_dict(),
    }


def trainer_state(
    trainer: Trainer, taken: dict[str, Any] | None = None, *, copy_learner: bool = True
) -> dict[str, Any]:
    """Everything a checkpoint holds: ``taken`` counters (from :func:`counters`) or the current ones.

    Call it while the learner is idle. With ``copy_learner`` the learner's state is copied now;
    without, its tensors are the live ones (references), to be copied with
    :func:`~aiorl.checkpoint.copy_tensors` before the learner's next update.
    """
    learner = trainer._learner
    learner_state = getattr(learner, "state_dict", None)
    weights = learner_state() if learner_state is not None else {"policy": learner.policy.state_dict()}
    template = trainer._policy_template
    generator = learner_generator(learner)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "aiorl_version": aiorl.__version__,
        "env": trainer.env_factory,
        "observation_space": trainer.spaces.observation_space,
        "action_space": trainer.spaces.action_space,
        "algo": trainer.algo,
        "config": asdict(trainer.config),
        "policy_module": template.policy if isinstance(template, ObservationNormalizer) else template,
        "learner": copy_tensors(weights) if copy_learner else weights,
        **copy.deepcopy(counters(trainer) if taken is None else taken),
        "rng": {
            "learner": None if generator is None else generator.get_state(),
            "learner_device": None if generator is None else generator.device.type,
        },
        "run": None if trainer.unfinished_run is None else asdict(trainer.unfinished_run),  # a loaded one's
    }


BEFORE_THE_OPTION: dict[str, Any] = {"normalize_rewards": False}
"""Trainer options a checkpoint of an older aiorl may lack, at the value it trained with (the
option did not exist: rewards were not normalised). Any other missing option takes its default."""


def current_algo(algo: Any) -> Any:
    """A checkpoint's algorithm config rebuilt with this aiorl's fields (those it lacks: their defaults).

    An algorithm config unpickled from an older aiorl has no attribute for a field added since
    (``PPO.target_kl``, say), and the learner failed at its first update. Rebuilding also
    validates the saved values again.
    """
    if not dataclasses.is_dataclass(algo) or isinstance(algo, type):
        return algo
    present = {}
    for f in dataclasses.fields(algo):
        if f.init:
            with contextlib.suppress(AttributeError):  # a slot the old pickle did not fill
                present[f.name] = getattr(algo, f.name)
    return type(algo)(**present)


def load_trainer_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Restore what :func:`trainer_state` returned into ``trainer`` (not started).

    Raises:
        CheckpointError: the saved policy does not fit this trainer's (another env or
            network): checked before anything is changed.
    """
    learner = trainer._learner
    check_policy_fits(learner.policy, state["learner"]["policy"])
    load = getattr(learner, "load_state_dict", None)
    if load is not None and "optimizer" in state["learner"]:
        load(state["learner"])
    else:
        learner.policy.load_state_dict(state["learner"]["policy"])
    trainer._version = state["policy_version"]
    saved, stats = state["stats"], trainer.stats
    for name in COUNTER_NAMES:
        setattr(stats, name, saved[name])
    stats.discarded.clear()
    stats.discarded.update(saved["discarded"])
    stats.recent_returns.clear()
    stats.recent_returns.extend(saved["recent_returns"])
    _load_generator(learner, state["rng"])
    trainer._launches = state["launches"]
    trainer._train_time_s = state["train_time_s"]
    run = state.get("run")
    trainer.unfinished_run = RunPlan(**run) if run else None
    if trainer.reward_normalizer is not None and state.get("reward_normalizer") is not None:
        trainer.reward_normalizer.load_state_dict(state["reward_normalizer"])


def check_policy_fits(policy: torch.nn.Module, saved: dict[str, Any]) -> None:
    """Raise :class:`~aiorl.errors.CheckpointError` unless ``saved`` has exactly ``policy``'s tensors and shapes.

    ``load_state_dict`` copies tensor by tensor and raises on the first that does not fit,
    after the earlier ones were overwritten: this check comes first, so a failed load
    leaves the trainer as it was.
    """
    live = policy.state_dict()
    problems = [f"{name} missing" for name in live if name not in saved]
    problems += [f"{name} unexpected" for name in saved if name not in live]
    problems += [
        f"{name} {tuple(saved[name].shape)} instead of {tuple(tensor.shape)}"
        for name, tensor in live.items()
        if name in saved and tuple(saved[name].shape) != tuple(tensor.shape)
    ]
    if problems:
        shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
        raise CheckpointError(f"the checkpoint's policy does not fit this trainer's (another env or network?): {shown}")


def _load_generator(learner: Learner, rng: dict[str, Any]) -> None:
    generator = learner_generator(learner)
    if generator is None:
        return
    saved = rng.get("learner")
    if saved is None and "torch" in rng and generator.device.type == "cpu":
        saved = rng["torch"]  # format version 1: the process's torch state, the learner's stream then
    if saved is None:
        return
    same_kind = rng.get("learner_device", generator.device.type) == generator.device.type
    if same_kind and saved.numel() == generator.get_state().numel():  # sizes: files from before learner_device
        generator.set_state(saved)
    else:  # trained on another kind of device (resumed on the CPU after a GPU): states differ in kind
        generator.manual_seed(int.from_bytes(hashlib.sha256(saved.numpy().tobytes()).digest()[:8], "little"))


def run_checkpointer(trainer: Trainer, path: str | os.PathLike[str], interval_s: float, plan: RunPlan) -> Checkpointer:
    """A checkpointer saving ``trainer``'s state during the run described by ``plan``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Checkpointer(
        path,
        functools.partial(_snapshot, trainer, plan),
        mark=functools.partial(counters, trainer),
        interval_s=interval_s,
        on_saved=functools.partial(_saved, trainer),
        copy_in=None if trainer._session is None else trainer._session.consumer.executor,
    )


def _snapshot(trainer: Trainer, plan: RunPlan, taken: dict[str, Any] | None) -> dict[str, Any]:
    """The state to save; ``taken`` counters of the last update, used while no update has happened since."""
    if trainer._session is not None and trainer._session.consumer.in_flight:
        raise RuntimeError("the learner is in the middle of an update")
    if taken is not None and taken["policy_version"] != trainer.policy_version:
        taken = None  # an update finished without its after-update call (the run was cancelled)
    state = trainer_state(trainer, taken, copy_learner=False)  # the checkpointer copies
    state["run"] = asdict(plan)
    return state


def _saved(trainer: Trainer, path: Path, state: dict[str, Any]) -> None:
    trainer._events.publish(CheckpointSaved(str(path), state["stats"]["steps_trained"], state["policy_version"]))
