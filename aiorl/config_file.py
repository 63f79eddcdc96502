"""Experiment config files (TOML) that map 1:1 onto aiorl's config dataclasses.

A file has four tables, each optional::

    [run]                  # RunConfig: what to train and for how long
    env = "CartPole-v1"
    algo = "appo"
    total_steps = 200000

    [env_kwargs]           # keyword arguments for gymnasium.make
    [trainer]              # TrainerConfig fields: num_workers = 4, ...
    [algo]                 # fields of the algorithm named by run.algo (PPO or APPO)

Every key is a field of the dataclass of its table; an unknown key or table is an error
naming it (with the closest known name), and one error names every problem of the file:
each unknown table and key and each bad value. A field whose type allows ``None`` takes
the string ``"none"`` for it (TOML has no null). Settings are layered: dataclass defaults,
then the preset (``run.preset``), then the file, then command-line flags.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import tomli_w

from aiorl.algos import APPO, PPO
from aiorl.config import SETTLED_FIELDS, TrainerConfig
from aiorl.envs import AtariEnv, EnvSource
from aiorl.envs.vector import VECTOR_KINDS, VectorEnvs, VectorKind
from aiorl.errors import ConfigError, did_you_mean
from aiorl.numbers import is_integer, is_number
from aiorl.presets import Preset, get_preset, preset_env_factory

ALGORITHMS: dict[str, type[PPO] | type[APPO]] = {"ppo": PPO, "appo": APPO}
"""``run.algo`` name -> algorithm config class."""
NONE = "none"
"""How ``None`` is written in a TOML file."""
TABLES = ("run", "env_kwargs", "trainer", "algo")
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    """What ``aiorl train`` trains, and for how long."""

    env: str | None = None
    """A gymnasium id, or ``"module:attribute"`` naming a zero-argument env factory
    importable by the workers (a function or class, a ``functools.partial`` or a callable
    object, defined in that module or imported into it), or gymnasium's ``"module:EnvId"``
    (importing the module registers the id)."""
    preset: str | None = None
    """A preset of :data:`aiorl.presets.PRESETS`: its algorithm settings and trainer options
    are the base the rest of the file overrides (and its env is the default ``env``). Its
    algorithm settings apply when ``algo`` is the preset's algorithm (or left out); its target
    when ``env`` is its env."""
    algo: str | None = None
    """``"ppo"`` or ``"appo"``; ``None`` means the preset's algorithm, else PPO."""
    total_steps: int = 1_000_000
    """Env steps to train on."""
    target_return: float | None = None
    """Stop once the mean return of the last ``trainer.return_window`` episodes reaches this
    (default: the preset's target when ``env`` is the preset's env)."""
    checkpoint_interval_s: float = 60.0
    """Seconds between periodic checkpoints (one is also written after the first update and when the run ends)."""
    vector: str | None = None
    """``"gymnasium"`` (``gymnasium.make_vec``) or ``"envpool"`` (``envpool.make``): each worker
    steps one vector env of ``trainer.envs_per_worker`` sub-envs of ``env`` (an id), built with
    ``env_kwargs`` (:class:`~aiorl.envs.vector.VectorEnvs`); ``None``: single envs."""

    def __post_init__(self) -> None:
        problems = []
        if self.algo is not None and self.algo not in ALGORITHMS:
            problems.append(f"run.algo={self.algo!r} must be one of {sorted(ALGORITHMS)}")
        if self.vector is not None and self.vector not in VECTOR_KINDS:
            problems.append(f"run.vector={self.vector!r} must be one of {VECTOR_KINDS} or {NONE!r}")
        elif self.vector is not None and self.env is not None and ":" in self.env and self.env not in gym.registry:
            problems.append(
                f"run.vector={self.vector!r} builds vector envs of an env id, but run.env={self.env!r} is a "
                "module:factory (a factory may return a gymnasium.vector.VectorEnv itself)"
            )
        elif self.vector == "gymnasium" and preset_env_factory(self.env) is not None:
            problems.append(
                f"run.vector={self.vector!r}: run.env={self.env!r} is built by its preset's factory (Atari's "
                "preprocessing), which a gymnasium vector env of the bare id would skip; use run.vector = "
                "'envpool' (EnvPool's Atari, the same preprocessing) or leave run.vector out"
            )
        if not (is_integer(self.total_steps) and self.total_steps >= 1):
            problems.append(f"run.total_steps={self.total_steps!r} must be an integer >= 1")
        if not (isinstance(self.checkpoint_interval_s, int | float) and self.checkpoint_interval_s > 0):
            problems.append(f"run.checkpoint_interval_s={self.checkpoint_interval_s!r} must be > 0")
        target = self.target_return
        if target is not None and not (is_number(target) and math.isfinite(target)):
            problems.append(f"run.target_return={target!r} must be a finite number")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True)
class Experiment:
    """A fully resolved experiment: everything ``aiorl train`` needs, and what ``config.toml`` holds."""

    run: RunConfig
    trainer: TrainerConfig
    algo: PPO | APPO
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    preset: str | None = field(default=None, compare=False)
    """The preset applied under the file's settings, if any (for the log; ``config.toml`` holds its values)."""
    trainer_set: frozenset[str] = field(default=frozenset(), compare=False)
    """The trainer fields a layer set (the preset, the file or a flag); the others are defaults."""

    @property
    def algo_name(self) -> str:
        """``"ppo"`` or ``"appo"``."""
        return next(name for name, cls in ALGORITHMS.items() if isinstance(self.algo, cls))

    def env_source(self) -> EnvSource:
        """The env as the trainer takes it: a gymnasium id, an imported factory, or a vector env factory.

        With ``run.vector``: a :class:`~aiorl.envs.vector.VectorEnvs` of ``trainer.envs_per_worker`` sub-envs
        (for an Atari preset's id and ``"envpool"``: EnvPool's Atari with the preset's preprocessing,
        ``env_kwargs`` going to ``envpool.make``).
        """
        assert self.run.env is not None
        preset_factory = preset_env_factory(self.run.env)
        if self.run.vector == "envpool" and isinstance(preset_factory, AtariEnv):  # EnvPool's Atari
            return preset_factory.vector(self.trainer.envs_per_worker, **self.env_kwargs)
        if self.run.vector is not None:
            kind = typing.cast(VectorKind, self.run.vector)
            return VectorEnvs(self.run.env, self.trainer.envs_per_worker, kind, kwargs=dict(self.env_kwargs))
        if isinstance(preset_factory, AtariEnv):  # env_kwargs are its options (repeat_action_probability, ...)
            return preset_factory.with_options(self.env_kwargs)
        return resolve_env(self.run.env)

    def trainer_env_kwargs(self) -> dict[str, Any] | None:
        """``Trainer(env_kwargs=...)``: ``env_kwargs`` for an env id (a vector env's or Atari's factory holds them)."""
        if self.run.vector is not None or isinstance(preset_env_factory(self.run.env), AtariEnv):
            return None
        return dict(self.env_kwargs) or None

    def differences(
        self,
        *,
        env: str,
        env_kwargs: Mapping[str, Any],
        algo: object,
        trainer: TrainerConfig,
        vector: str | None = None,
    ) -> list[str]:
        """Where this experiment and a checkpoint's run disagree, one line each naming both values.

        ``env`` is the checkpoint's env as ``run.env`` writes it (an id or ``module:factory``),
        ``trainer`` its (settled) trainer config. A trainer field the trainer chooses when it
        is left automatic (``None``: :data:`~aiorl.config.SETTLED_FIELDS`) agrees with whatever
        it chose; for every other field ``None`` is a value like any other ("no limit", "never").
        """
        found = []

        def differ(name: str, mine: Any, theirs: Any) -> None:
            if mine != theirs:
                found.append(f"{name} = {mine!r} in config.toml, {theirs!r} in the checkpoint")

        differ("run.env", self.run.env, env)
        differ("run.vector", self.run.vector, vector)
        differ("env_kwargs", dict(self.env_kwargs), dict(env_kwargs))
        if type(algo) is not type(self.algo):
            differ("run.algo", self.algo_name, _algo_name(algo))
        else:
            for f in dataclasses.fields(self.algo):
                differ(f"algo.{f.name}", getattr(self.algo, f.name), getattr(algo, f.name))
        for f in dataclasses.fields(self.trainer):
            if not (getattr(self.trainer, f.name) is None and f.name in SETTLED_FIELDS):
                differ(f"trainer.{f.name}", getattr(self.trainer, f.name), getattr(trainer, f.name))
        return found

    def to_toml(self) -> str:
        """The experiment as a TOML file that :func:`load_experiment` reads back to an equal one.

        Every field is there: those left at a default of ``None`` (unset or automatic) as a
        comment under their table, ready to uncomment and set.
        """
        sections: dict[str, tuple[dict[str, Any], list[str]]] = {
            "run": ({"algo": self.algo_name, **_table(self.run)}, _unset(self.run)),
            "env_kwargs": (dict(self.env_kwargs), []),
            "trainer": (_table(self.trainer), _unset(self.trainer)),
            "algo": (_table(self.algo), _unset(self.algo)),
        }
        parts = []
        for name, (table, unset) in sections.items():
            text = tomli_w.dumps({name: table})
            text += "".join(
                f'# {field} = "{NONE}"  # the default: unset or automatic\n' for field in unset if field not in table
            )
            parts.append(text)
        return "\n".join(parts)


def _algo_name(algo: object) -> str:
    """``run.algo``'s name of an algorithm config, else its class name."""
    return next((name for name, cls in ALGORITHMS.items() if type(algo) is cls), type(algo).__name__)


def resolve_env(env: str) -> EnvSource:
    """A gymnasium id as is; ``"module:attribute"`` imported to the factory it names.

    ``"module:EnvId"`` (gymnasium's form: the module registers the id when imported) stays
    as it is when the module has no attribute of that name but registered the id.

    The id of a preset that builds its env with a factory (``"ALE/Pong-v5"``: Atari's
    preprocessing, :class:`~aiorl.envs.atari.AtariEnv`) is that factory.

    Raises:
        ConfigError: the module cannot be imported (missing, or it raised while importing) or
            has no such attribute.
    """
    preset_factory = preset_env_factory(env)
    if preset_factory is not None:
        return typing.cast(EnvSource, preset_factory)
    if ":" not in env or env in gym.registry:
        return env
    module_name, _, attribute = env.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not found, or the module raised (a SyntaxError, its own error) while importing
        raise ConfigError(
            f"run.env={env!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    factory = getattr(module, attribute, None)
    if factory is None and attribute in gym.registry:  # gymnasium's "module:EnvId": importing it registered the id
        return env
    if not callable(factory):
        raise ConfigError(
            f"run.env={env!r}: module {module_name!r} has no callable {attribute!r} "
            "(nor did importing it register a gymnasium id of that name)"
        )
    return typing.cast(EnvSource, factory)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a config file into its tables, as written (:func:`build_experiment` checks them all).

    Tables, keys and values are checked by :func:`build_experiment`, which names every
    problem at once (an unknown table as well as the bad keys of the others).

    Raises:
        ConfigError: the file cannot be read or is not valid TOML.
    """
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc


def build_experiment(
    layers: Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Experiment:
    """Resolve an experiment from defaults, the preset, file ``layers`` and ``overrides``.

    ``layers`` is what :func:`read_toml` returned; ``overrides`` has the same tables (the
    command line's flags). Tables, keys and their types are checked against the dataclass
    fields, then the values by the dataclasses themselves.

    Raises:
        ConfigError: an unknown table or key, or a bad value, named with its table
            (``trainer.num_workers=0 must be an integer >= 1``). Every problem is listed
            in one error (:attr:`~aiorl.errors.ConfigError.problems`), in the order
            tables, ``run``, ``algo``, ``trainer`` keys, then the values of each.
    """
    problems: list[str] = []
    tables = _checked_tables(layers or {}, problems)
    merged = {name: {**tables.get(name, {}), **(overrides or {}).get(name, {})} for name in TABLES}
    run_values = _checked("run", RunConfig, merged["run"], problems)
    preset = _collect(problems, get_preset, run_values["preset"]) if run_values.get("preset") else None
    algo_cls = _algo_class(run_values.get("algo"), preset)
    algo_values = _checked("algo", algo_cls, merged["algo"], problems, label=algo_cls.__name__)
    trainer_values = _checked("trainer", TrainerConfig, merged["trainer"], problems)
    if preset is not None:
        trainer_values = {**preset.options, **trainer_values}
    run = _collect(problems, RunConfig, **run_values)
    base_algo: PPO | APPO = preset.algo if preset is not None and isinstance(preset.algo, algo_cls) else algo_cls()
    algo = _collect(problems, dataclasses.replace, base_algo, **algo_values, table="algo")
    trainer = _collect(problems, TrainerConfig, **trainer_values, table="trainer")
    if run is not None and preset is not None:
        env = run.env or preset.env
        # The preset's target is its env's: another env run with the preset's settings gets none.
        inherited = preset.target_return if env == preset.env else None
        target = run.target_return if "target_return" in merged["run"] else inherited
        run = dataclasses.replace(run, env=env, target_return=target)
    given = {name for name in ("env", "preset") if merged["run"].get(name) is not None}
    if run is not None and run.env is None and not given:  # one given but bad is named already
        problems.append("run.env is not set: give an env id (aiorl train CartPole-v1), a preset or [run] env")
    if problems or run is None or algo is None or trainer is None:
        raise ConfigError(problems)
    return Experiment(
        run=dataclasses.replace(run, algo=None, preset=None),  # both are applied: the algo is the object
        trainer=trainer,
        algo=algo,
        env_kwargs=dict(merged["env_kwargs"]),
        preset=run.preset,
        trainer_set=frozenset(trainer_values),
    )


def _checked_tables(layers: Mapping[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    """The known tables of ``layers``; unknown names and values that are not tables go to ``problems``."""
    tables = {}
    for name, table in layers.items():
        if name not in TABLES:
            problems.append(f"[{name}] is not a config table{did_you_mean(name, TABLES)}; tables: {', '.join(TABLES)}")
        elif not isinstance(table, Mapping):
            problems.append(f"{name}={table!r} must be a table ([{name}])")
        else:
            tables[name] = dict(table)
    return tables


def _algo_class(name: object, preset: Preset | None) -> type[PPO] | type[APPO]:
    """The algorithm's config class: ``run.algo``'s, else the preset's, else PPO (a bad name is RunConfig's problem)."""
    if isinstance(name, str) and name in ALGORITHMS:
        return ALGORITHMS[name]
    if name is None and preset is not None and isinstance(preset.algo, PPO | APPO):
        return type(preset.algo)
    return PPO


def _collect(
    problems: list[str], build: Callable[..., T], /, *args: Any, table: str | None = None, **kwargs: Any
) -> T | None:
    """``build(*args, **kwargs)``, or ``None`` with its :class:`ConfigError`'s problems added to ``problems``.

    With ``table``, a problem that starts with a field's name (``num_workers=0 ...``, or
    ``PPO.gamma=2.0 ...``) is named as the file names it (``trainer.num_workers=0 ...``).
    """
    try:
        return build(*args, **kwargs)
    except ConfigError as exc:
        if table is None:
            problems.extend(exc.problems)
        else:
            problems.extend(re.sub(r"^(?:[A-Z]\w*\.)?(?=\w+=)", f"{table}.", problem) for problem in exc.problems)
        return None


def load_experiment(path: str | os.PathLike[str], **overrides: Mapping[str, Any]) -> Experiment:
    """:func:`build_experiment` from the file at ``path`` (with ``overrides`` tables on top)."""
    return build_experiment(read_toml(path), overrides=overrides)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# ---- keys and values ---------------------------------------------------------------------


def _checked(
    table: str, cls: type, values: Mapping[str, Any], problems: list[str], label: str | None = None
) -> dict[str, Any]:
    """``values`` converted for ``cls`` (``"none"`` -> ``None``); unknown keys and wrong types go to ``problems``."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in values.items():
        if key not in fields:
            where = f" ({label} has no such field)" if label else ""
            problems.append(f"{table}.{key}: unknown key{where}{did_you_mean(key, fields)}")
            continue
        allowed = _allowed_types(hints[key])
        if value == NONE and type(None) in allowed:
            value = None
        if not _matches(value, allowed):
            names = " or ".join(_type_name(t) for t in allowed)
            problems.append(f"{table}.{key}={value!r} must be {names}")
            continue
        out[key] = value
    return out


def _allowed_types(hint: Any) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(arg for part in typing.get_args(hint) for arg in _allowed_types(part))
    return (hint,)


def _matches(value: Any, allowed: tuple[Any, ...]) -> bool:
    for kind in allowed:
        if typing.get_origin(kind) is typing.Literal:
            if value in typing.get_args(kind):
                return True
        elif kind is type(None):
            if value is None:
                return True
        elif kind is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return True
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif isinstance(kind, type) and isinstance(value, kind):
            return True
    return False


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return " or ".join(repr(v) for v in typing.get_args(kind))
    if kind is type(None):
        return f'"{NONE}"'
    return _TYPE_NAMES.get(kind, f"a {getattr(kind, '__name__', str(kind))}")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _unset(config: Any) -> list[str]:
    """The fields of a dataclass left at a default of ``None`` (which :func:`_table` leaves out)."""
    return [f.name for f in dataclasses.fields(config) if f.default is None and getattr(config, f.name) is None]


def _table(config: Any) -> dict[str, Any]:
    """A dataclass as a TOML table: ``None`` written as ``"none"`` unless it is the default (then left out)."""
    table = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            if f.default is None:
                continue
            value = NONE
        table[f.name] = value
    return table
