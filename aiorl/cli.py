"""The ``aiorl`` command: train, resume, eval, plot, and print a config file to start from.

    aiorl train CartPole-v1 --algo appo --steps 200000 --target-return 475
    aiorl resume runs/CartPole-v1-appo-20250101-120000
    aiorl eval runs/CartPole-v1-appo-20250101-120000 --episodes 10 --render rgb_array
    aiorl plot runs/* -o curve.png

Exit codes: 0 done; 1 training failed (an env, worker or learner error; the last good
checkpoint is kept); 2 bad input (an unknown config key, a bad value, a missing
checkpoint, a log directory where nothing can be written, a ``config.toml`` that does not
match the checkpoint beside it, a missing optional dependency); 130 interrupted by Ctrl-C
(SIGINT), 143 terminated by SIGTERM (``kill``, ``docker stop``) and 129 by SIGHUP (the terminal
or SSH connection closed): in training each saves a checkpoint first, so ``aiorl resume`` goes
on (eval and plot close their env or file first). A second SIGTERM (or SIGHUP) while that
checkpoint is being written ends the process at once (the previous checkpoint stays readable).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import gc
import logging
import math
import os
import pickle
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from aiorl.checkpoint import CHECKPOINT_NAME, RunPlan, prepare_checkpoint_path, read_checkpoint, write_checkpoint
from aiorl.config import RUNTIME_FIELDS, device_problem
from aiorl.config_file import ALGORITHMS, Experiment, build_experiment, read_toml, write_text_atomic
from aiorl.envs.factory import EnvFactory
from aiorl.envs.vector import VectorEnvs
from aiorl.errors import AiorlError, CheckpointError, ConfigError
from aiorl.events import EvaluationFinished, EventStream
from aiorl.metrics_log import METRICS_NAME, MetricsLog, read_metrics
from aiorl.presets import preset_env_factory
from aiorl.progress import ProgressDisplay
from aiorl.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    import gymnasium as gym

    from aiorl.policy import Policy

CONFIG_NAME = "config.toml"
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
ENDING_SIGNALS = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}
"""Signals that end a run as Ctrl-C does (checkpoint first); exit code 128 + the signal's number."""

log = logging.getLogger("aiorl")


class BadInput(click.ClickException):
    """A configuration or input problem: printed as ``Error: ...``, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class _NonEmptyPath(click.Path):
    """A ``click.Path`` of :class:`~pathlib.Path` that refuses an empty value.

    click turns ``''`` into ``Path('.')``: ``--logdir ""`` (an unset shell variable, say)
    would log into the current directory, and ``-o ""`` name it as the file to write.
    """

    def __init__(self, *, exists: bool = False, file_okay: bool = True, dir_okay: bool = True) -> None:
        super().__init__(exists=exists, file_okay=file_okay, dir_okay=dir_okay, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value as a :class:`~pathlib.Path`, checked as ``click.Path`` checks it.

        Raises:
            BadInput: the value is empty; the message names the option (``--logdir=''``).
        """
        if isinstance(value, str | bytes) and not value:
            what = "a directory" if not self.file_okay else "a file" if not self.dir_okay else "a file or directory"
            current = " (. for the current directory)" if self.dir_okay else ""
            raise BadInput(f"{_param_name(param)}='' is an empty path: name {what}{current}")
        return super().convert(value, param, ctx)


def _param_name(param: click.Parameter | None) -> str:
    """How an error names a parameter: its first flag (``--logdir``, ``-o``), or an argument's ``LOGDIR``."""
    if isinstance(param, click.Option):
        return param.opts[0]
    return param.human_readable_name if param is not None else "path"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (the live display redirects it above its panel)."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aiorl")
@click.option("-v", "--verbose", count=True, help="More log output (-v: info, -vv: debug).")
def main(verbose: int) -> None:
    """Asyncio-native reinforcement learning: train, resume, evaluate and plot."""
    # Everything is closed explicitly before a command returns; the interpreter's last garbage
    # collection of torch's many objects would only add ~1.3 s before the process exits.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("aiorl %(levelname)s: %(message)s"))
    logger = logging.getLogger("aiorl")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


_progress_option = click.option(
    "--progress",
    type=click.Choice(["auto", "live", "plain"]),
    default="auto",
    show_default=True,
    help="Live panel on a terminal, plain periodic lines otherwise.",
)


class _Ended(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP in a command that ends on them as on Ctrl-C."""

    def __init__(self, number: signal.Signals) -> None:
        super().__init__(number)
        self.number = number


def _ctrl_c_exits_130(
    message: str, *, also_sigterm: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator: Ctrl-C in the command exits 130 with ``message`` (click would say "Aborted!", exit 1).

    ``also_sigterm``: SIGTERM and SIGHUP unwind the command the same way (its ``finally``
    blocks close what it opened, such as an env and the simulator it started) and exit
    with 128 + the signal's number; a second one ends the process at once. (Training
    handles them in :func:`_session`, which saves a checkpoint first.)
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            def end(number: int, _frame: object) -> None:
                for ending in ENDING_SIGNALS:
                    signal.signal(ending, signal.SIG_DFL)
                raise _Ended(signal.Signals(number))

            previous = {number: signal.signal(number, end) for number in ENDING_SIGNALS} if also_sigterm else {}
            try:
                command(*args, **kwargs)
            except KeyboardInterrupt:
                _exit(EXIT_INTERRUPTED, message)
            except _Ended as ended:
                _exit(128 + ended.number, f"{ENDING_SIGNALS[ended.number]} ({ended.number.name})")
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)

        return wrapper

    return decorate


_ctrl_c_before_training = _ctrl_c_exits_130("interrupted before training started; nothing was trained or saved")
"""For train and resume while they build their trainer; Ctrl-C during training is :func:`_session`'s to
handle (it saves a checkpoint first)."""


@main.command()
@click.argument("env_id", required=False)
@click.option("--algo", type=click.Choice(sorted(ALGORITHMS)), help="Algorithm (default: the preset's, else ppo).")
@click.option("--workers", type=int, help="Worker processes (trainer.num_workers).")
@click.option("--envs-per-worker", type=int, help="Envs stepped by each worker.")
@click.option("--steps", type=int, help="Env steps to train on (run.total_steps).")
@click.option("--target-return", type=float, help="Stop once the mean return reaches this.")
@click.option("--preset", help="Start from a preset's tuned settings (e.g. CartPole-v1).")
@click.option("--config", "config_file", type=_NonEmptyPath(dir_okay=False), help="A TOML config file.")
@click.option("--logdir", type=_NonEmptyPath(file_okay=False), help="Default: runs/ENV-ALGO-DATE-TIME.")
@click.option("--seed", type=int, help="Seed of the policy, the envs and the sampling.")
@click.option("--checkpoint-interval", type=float, help="Seconds between checkpoints (default 60).")
@click.option(
    "--vector",
    type=click.Choice(["gymnasium", "envpool"]),
    help="Each worker steps one vector env of --envs-per-worker sub-envs of ENV_ID (gymnasium.make_vec or EnvPool).",
)
@_progress_option
@_ctrl_c_before_training
def train(
    env_id: str | None,
    algo: str | None,
    workers: int | None,
    envs_per_worker: int | None,
    steps: int | None,
    target_return: float | None,
    preset: str | None,
    config_file: Path | None,
    logdir: Path | None,
    seed: int | None,
    checkpoint_interval: float | None,
    vector: str | None,
    progress: str,
) -> None:
    """Train on ENV_ID (a gymnasium id, or module:factory) and log to LOGDIR.

    LOGDIR gets config.toml (the full configuration), metrics.jsonl (one line per update),
    checkpoint.pt (after the first update, every --checkpoint-interval seconds and at the end) and TensorBoard
    events when tensorboard is installed.
    """
    run = _given(env=env_id, algo=algo, total_steps=steps, target_return=target_return, preset=preset)
    run |= _given(checkpoint_interval_s=checkpoint_interval, vector=vector)
    trainer_options = _given(num_workers=workers, envs_per_worker=envs_per_worker, seed=seed)
    with _bad_input():
        layers = read_toml(config_file) if config_file is not None else None
        experiment = build_experiment(layers, overrides={"run": run, "trainer": trainer_options})
    directory = logdir or _default_logdir(experiment)
    if (directory / CHECKPOINT_NAME).exists():
        raise BadInput(
            f"{directory} already holds a run: continue it with `aiorl resume {directory}`, or pick --logdir"
        )
    metrics = directory / METRICS_NAME
    if metrics.exists() and metrics.stat().st_size > 0:
        raise BadInput(
            f"{directory} holds the {METRICS_NAME} of a run that stopped before its first checkpoint (nothing to "
            "resume); remove the directory or pick --logdir, so the two runs' metrics do not mix"
        )
    options = {name: getattr(experiment.trainer, name) for name in experiment.trainer.__dataclass_fields__}
    if "envs_per_worker" not in experiment.trainer_set:  # left out: a factory's vector envs set it
        del options["envs_per_worker"]
    with _bad_input():
        trainer = Trainer(
            experiment.env_source(), experiment.algo, env_kwargs=experiment.trainer_env_kwargs(), **options
        )
        trainer.preset = experiment.preset
        prepare_checkpoint_path(directory / CHECKPOINT_NAME)  # creates the directory; fails here, not at a save
    settled = dataclasses.replace(experiment.trainer, envs_per_worker=trainer.config.envs_per_worker)
    experiment = dataclasses.replace(experiment, trainer=settled)  # what config.toml and resume see
    write_text_atomic(directory / CONFIG_NAME, experiment.to_toml())
    click.echo(f"aiorl: training {experiment.run.env} with {experiment.algo_name}, logging to {directory}", err=True)
    result = _session(
        trainer,
        directory,
        experiment,
        total_steps=experiment.run.total_steps,
        steps_at_start=0,
        target_return=experiment.run.target_return,
        progress=progress,
        resume=False,
    )
    _print_result(result, directory)


@main.command()
@click.argument("logdir", type=_NonEmptyPath(exists=True, file_okay=False))
@click.option(
    "--steps",
    type=int,
    help="Train this many more steps as a new run (default: finish the stopped run); "
    "without a target when the run already reached it.",
)
@click.option("--workers", type=int, help="Worker processes from now on (written to config.toml).")
@click.option("--device", help="Torch device of the learner from now on, e.g. cpu or cuda (written to config.toml).")
@_progress_option
@_ctrl_c_before_training
def resume(logdir: Path, steps: int | None, workers: int | None, device: str | None, progress: str) -> None:
    """Continue the run in LOGDIR from its checkpoint, with the same step counters.

    Without --steps, the interrupted run goes on to its step budget and target with the
    same learning-rate schedule; with --steps it trains that many more steps, toward
    config.toml's run.target_return unless the run already reached it (then the new run
    has no target, and config.toml says so from now on). The run
    continues as the checkpoint holds it: LOGDIR/config.toml must agree with it on what the
    run learns from (env, env_kwargs, algorithm, and trainer settings such as the seed,
    envs per worker or rollout length), else nothing starts and each difference is named.
    How it runs (workers, devices, timeouts, logging, evaluation: aiorl.config.RUNTIME_FIELDS)
    comes from config.toml, so a run can go on on another machine (--workers and --device
    set the two that change most, and config.toml keeps them).
    """
    if steps is not None and steps < 1:
        raise BadInput(f"--steps={steps} must be >= 1")
    with _bad_input():
        layers = read_toml(logdir / CONFIG_NAME)
        table = layers.get("trainer")
        saved_device = table.get("device") if isinstance(table, dict) else None
        problem = device_problem("device", saved_device) if device is None and isinstance(saved_device, str) else ""
        if problem:  # a run trained on a GPU, resumed where there is none
            raise BadInput(
                f"trainer.device={saved_device!r} in {logdir / CONFIG_NAME} is not usable here ({problem}): "
                f"go on here with `aiorl resume {logdir} --device cpu`"
            )
        given = _given(num_workers=workers, device=device)
        experiment = build_experiment(layers, overrides={"trainer": given})
        prepare_checkpoint_path(logdir / CHECKPOINT_NAME)
        state = read_checkpoint(logdir / CHECKPOINT_NAME)
        runtime = {name: getattr(experiment.trainer, name) for name in RUNTIME_FIELDS}
        trainer = Trainer.load(state, **runtime)
        _check_same_run(experiment, trainer, logdir)
        if (logdir / METRICS_NAME).is_file():  # its records are kept up to the checkpoint's update
            read_metrics(logdir)
    plan = trainer.unfinished_run
    done = trainer.stats.steps_trained
    if steps is None and (plan is None or plan.remaining(done) == 0):  # interrupted after its last update
        click.echo(f"the run in {logdir} finished ({done:,} steps); pass --steps N to train N more")
        return
    if steps is None:
        assert plan is not None
        _check_same_plan(experiment, plan, logdir)
    else:  # a new run of `steps` from here: config.toml describes it from now on
        new_plan = dataclasses.replace(experiment.run, total_steps=steps)
        target, stats = new_plan.target_return, trainer.stats
        if target is not None and stats.window_full and stats.mean_return >= target:  # it would stop at once
            click.echo(
                f"aiorl: the run already reached run.target_return = {target:g} (mean return "
                f"{stats.mean_return:.2f} over the last {len(stats.recent_returns)} episodes): training "
                f"{steps:,} more steps without a target (config.toml's run.target_return is unset)",
                err=True,
            )
            new_plan = dataclasses.replace(new_plan, target_return=None)
        experiment = dataclasses.replace(experiment, run=new_plan)
    if steps is not None:  # the checkpoint describes the new run too: a Ctrl-C before its first update keeps
        # config.toml and the checkpoint in agreement, so the `aiorl resume LOGDIR` it suggests works
        new_run = RunPlan(steps, experiment.run.target_return, done)
        write_checkpoint({**state, "run": dataclasses.asdict(new_run)}, logdir / CHECKPOINT_NAME)
    if steps is not None or given:
        write_text_atomic(logdir / CONFIG_NAME, experiment.to_toml())
    click.echo(f"aiorl: resuming {logdir} at update {trainer.policy_version}, {done:,} steps", err=True)
    for name, value in runtime.items():
        if name in state["config"] and state["config"][name] != value:
            click.echo(
                f"aiorl: trainer.{name} = {value!r} (the checkpoint's run had {state['config'][name]!r})", err=True
            )
    if steps is not None:
        total, start, target = steps, done, experiment.run.target_return
    else:
        assert plan is not None
        total, start, target = plan.total_steps, plan.trained_at_start, plan.target_return
    result = _session(
        trainer,
        logdir,
        experiment,
        total_steps=total,
        steps_at_start=start,
        target_return=target,
        progress=progress,
        resume=steps is None,
    )
    _print_result(result, logdir)


@main.command("eval")
@click.argument("checkpoints", nargs=-1, required=True, type=_NonEmptyPath(exists=True))
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True, help="Episodes to play.")
@click.option("--render", type=click.Choice(["rgb_array"]), help="Record the first episode to a GIF.")
@click.option(
    "--video",
    type=_NonEmptyPath(dir_okay=False),
    help="GIF path (implies --render rgb_array; default: eval.gif beside CHECKPOINT).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Reset seed of the first episode.")
@click.option("--stochastic", is_flag=True, help="Sample actions instead of taking the most likely one.")
@_ctrl_c_exits_130("interrupted", also_sigterm=True)
def eval_(
    checkpoints: tuple[Path, ...], episodes: int, render: str | None, video: Path | None, seed: int, stochastic: bool
) -> None:
    """Play episodes with the policy in each CHECKPOINT (a file or a log directory) and print the returns.

    Several checkpoints (``aiorl eval runs/CartPole-v1-ppo-*/``) are evaluated one after the
    other, each under a line naming it. --video (one checkpoint only) implies --render
    rgb_array; with --render and several checkpoints each GIF goes beside its checkpoint.
    """
    from aiorl.policy import Policy

    if video is not None:
        if len(checkpoints) > 1:
            raise BadInput(f"--video names one file, but {len(checkpoints)} checkpoints were given; leave it out")
        if video.suffix.lower() != ".gif":
            raise BadInput(f"--video={str(video)!r} must name a .gif file (aiorl records GIFs)")
        _check_output_dir("--video", video)
        render = render or "rgb_array"
    if render is not None:  # no window: keep SDL (pygame) from looking for a display or a sound server
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    with _bad_input():
        policies = [Policy.load(checkpoint) for checkpoint in checkpoints]
    for checkpoint, policy in zip(checkpoints, policies, strict=True):
        header = f"{checkpoint}:" if len(checkpoints) > 1 else None
        _evaluate(policy, checkpoint, header, episodes, render, video, seed, stochastic)


def _evaluate(
    policy: Policy,
    checkpoint: Path,
    header: str | None,
    episodes: int,
    render: str | None,
    video: Path | None,
    seed: int,
    stochastic: bool,
) -> None:
    """Play and print one checkpoint's episodes (and record the first to a GIF when rendering)."""
    with _bad_input():
        env = policy.make_env(render)
    recorder = None
    if render is not None:
        from aiorl.video import GifRecorder

        try:
            _check_renders(env, render, seed)
            base = checkpoint if checkpoint.is_dir() else checkpoint.parent
            recorder = GifRecorder(video or base / "eval.gif", fps=float(env.metadata.get("render_fps") or 30))
        except ImportError as exc:  # Pillow
            env.close()
            raise BadInput(str(exc)) from exc
    if header is not None:
        click.echo(header)
    with _bad_input():
        result = policy.play(episodes, seed=seed, deterministic=not stochastic, on_frame=recorder, env=env)
    for index, (ret, length) in enumerate(zip(result.returns, result.lengths, strict=True), start=1):
        click.echo(f"episode {index}: return {ret:.2f} ({length} steps)")
    click.echo(
        f"mean return {result.mean_return:.2f} ± {result.std_return:.2f} over {result.episodes} episodes "
        f"(policy version {result.policy_version})"
    )
    if recorder is not None:
        try:
            click.echo(f"video: {recorder.save()}")
        except OSError as exc:  # the default beside the checkpoint, say, in a read-only directory
            raise BadInput(f"the video could not be written ({exc})") from exc


@main.command()
@click.argument("logdirs", nargs=-1, required=True, type=_NonEmptyPath(exists=True, file_okay=False))
@click.option(
    "-o",
    "--output",
    type=_NonEmptyPath(dir_okay=False),
    default=Path("curve.png"),
    show_default=True,
    help="Image file to write (.png unless another suffix matplotlib writes is given).",
)
@click.option("--title", help="Figure title.")
@_ctrl_c_exits_130("interrupted", also_sigterm=True)
def plot(logdirs: tuple[Path, ...], output: Path, title: str | None) -> None:
    """Draw the learning curves of LOGDIRS (return vs env steps and vs wall time) into a PNG."""
    from aiorl.plot import plot_learning_curves, png_name, supported_formats

    try:
        formats = supported_formats()
    except ImportError as exc:
        raise BadInput(str(exc)) from exc
    suffix = output.suffix.lower().lstrip(".")
    if suffix and suffix not in formats:  # no suffix: matplotlib writes a PNG
        raise BadInput(f"-o={str(output)!r}: the file type must be one of {', '.join(sorted(formats))} (e.g. .png)")
    output = png_name(output)  # what matplotlib writes where no suffix is given
    _check_output_dir("-o", output)
    with _bad_input():
        try:
            click.echo(f"wrote {plot_learning_curves(logdirs, output, title=title)}")
        except OSError as exc:
            raise BadInput(f"-o={str(output)!r} could not be written ({exc})") from exc


@main.command("config")
@click.argument("env_id", required=False)
@click.option("--algo", type=click.Choice(sorted(ALGORITHMS)), help="Algorithm (default: the preset's, else ppo).")
@click.option("--preset", help="Start from a preset's tuned settings (e.g. CartPole-v1); it brings its env.")
def config_(env_id: str | None, algo: str | None, preset: str | None) -> None:
    """Print a complete config file (every field with its value) to edit and pass to --config.

    ENV_ID is checked as train checks it (an unknown id is named with the closest ones, a
    module:factory must import), without making an env.
    """
    with _bad_input():
        env = env_id or (None if preset else "CartPole-v1")  # a preset brings its own env
        experiment = build_experiment(overrides={"run": _given(env=env, algo=algo, preset=preset)})
        EnvFactory.from_user(experiment.env_source(), experiment.trainer_env_kwargs())
    click.echo(experiment.to_toml(), nl=False)


def _check_output_dir(option: str, path: Path) -> None:
    """Refuse an output file that cannot be written (no such directory, no permission), before any work.

    Raises:
        BadInput: naming the option, the path and why.
    """
    if not path.resolve().parent.is_dir():
        raise BadInput(f"{option}={str(path)!r}: the directory {str(path.parent)!r} does not exist")
    existed = path.exists()
    try:
        with open(path, "ab"):  # appends nothing: an existing file is left as it is
            pass
    except OSError as exc:
        raise BadInput(f"{option}={str(path)!r} cannot be written ({exc.strerror or exc})") from None
    if not existed:
        path.unlink(missing_ok=True)


def _check_renders(env: gym.Env, render: str, seed: int) -> None:
    """Render one frame now, so that a missing renderer (pygame) is one clear error before any output.

    Raises:
        BadInput: the env's renderer is not installed (gymnasium's message says what to install).
    """
    import gymnasium as gym

    try:
        env.reset(seed=seed)
        env.render()
    except gym.error.DependencyNotInstalled as exc:
        env.close()
        raise BadInput(f"--render {render}: {exc}") from exc


# ---- the training session ------------------------------------------------------------------


def _session(
    trainer: Trainer,
    logdir: Path,
    experiment: Experiment,
    *,
    total_steps: int,
    steps_at_start: int,
    target_return: float | None,
    progress: str,
    resume: bool,
) -> TrainResult:
    """Run training with the metrics log, the progress display and checkpoints; map failures to exit codes."""
    import aiorl

    checkpoint = logdir / CHECKPOINT_NAME
    resume_after = (trainer.policy_version, trainer.stats.steps_trained) if checkpoint.exists() else None
    display = ProgressDisplay(
        title=f"{experiment.run.env} · {experiment.algo_name} · {logdir}",
        total_steps=total_steps,
        steps_at_start=steps_at_start,
        target_return=target_return,
        live={"auto": None, "live": True, "plain": False}[progress],
        interval_s=max(experiment.trainer.log_interval_s, 1.0),
    )

    terminated: signal.Signals | None = None  # SIGTERM or SIGHUP, once one arrived

    def on_signal(number: signal.Signals, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        nonlocal terminated
        terminated = terminated or number
        loop.remove_signal_handler(number)  # a second one ends the process at once
        task.cancel()  # as Ctrl-C does: the run tears down and writes its checkpoint

    async def train() -> TrainResult:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        for number in ENDING_SIGNALS:
            loop.add_signal_handler(number, on_signal, number, loop, task)
        try:
            return await train_logged()
        finally:
            for number in ENDING_SIGNALS:
                loop.remove_signal_handler(number)

    async def train_logged() -> TrainResult:
        with MetricsLog(logdir, resume_after=resume_after) as metrics, display:

            def on_update(report: aiorl.UpdateReport) -> None:
                metrics.write(report)
                display.update(report)

            options: dict[str, Any] = {
                "on_update": on_update,
                "checkpoint_path": checkpoint,
                "checkpoint_interval_s": experiment.run.checkpoint_interval_s,
            }
            stream = trainer.events()
            evaluations = asyncio.create_task(_log_evaluations(stream, metrics, display))
            try:
                if resume:
                    return await trainer.resume(**options)
                return await trainer.run(total_steps, target_return, **options)
            finally:
                stream.close()  # its iteration ends after the events already published: none is lost
                await evaluations

    try:
        return aiorl.run(train())  # type: ignore[return-value]
    except KeyboardInterrupt:
        _exit(EXIT_INTERRUPTED, f"interrupted; {_checkpoint_note(checkpoint, logdir)}")
    except asyncio.CancelledError:
        if terminated is None:
            raise
        _exit(
            128 + terminated,
            f"{ENDING_SIGNALS[terminated]} ({terminated.name}); {_checkpoint_note(checkpoint, logdir)}",
        )
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    except (AiorlError, OSError) as exc:  # OSError: a full disk under metrics.jsonl, say
        _exit(EXIT_FAILED, f"training failed: {type(exc).__name__}: {exc}\n{_checkpoint_note(checkpoint)}")


async def _log_evaluations(stream: EventStream, metrics: MetricsLog, display: ProgressDisplay) -> None:
    """Show each periodic evaluation's result and write it to ``evaluations.jsonl``, until ``stream`` ends."""
    async for event in stream:
        if isinstance(event, EvaluationFinished):
            metrics.write_evaluation(event.result)
            display.evaluated(event.result)


def _checkpoint_note(checkpoint: Path, resume_from: Path | None = None) -> str:
    """The run's checkpoint (and, with ``resume_from``, the command that goes on from it), or that there is none."""
    if checkpoint.exists():
        hint = "" if resume_from is None else f"; continue with: aiorl resume {resume_from}"
        return f"checkpoint: {checkpoint}{hint}"
    return "no checkpoint was written (no update finished)" + ("" if resume_from is None else ": nothing to resume")


def _return_text(mean_return: float) -> str:
    """A mean return for a person: ``n/a (no episode finished)`` where it is NaN."""
    return "n/a (no episode finished)" if math.isnan(mean_return) else f"{mean_return:.2f}"


def _print_result(result: TrainResult, logdir: Path) -> None:
    outcome = "reached the target" if result.reached_target else "finished"
    click.echo(
        f"{outcome}: mean return {_return_text(result.mean_return)} after {result.total_env_steps:,} steps "
        f"({result.updates} updates, {result.wall_time:.1f} s, {result.steps_per_second:,.0f} steps/s, "
        f"learner busy {result.learner_busy:.0%}); "
        f"logs and checkpoint in {logdir}"
    )


def _exit(code: int, message: str) -> NoReturn:
    click.echo(f"aiorl: {message}", err=True)
    sys.exit(code)


class _bad_input:
    """Turn configuration and checkpoint errors into :class:`BadInput` (exit code 2)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, ConfigError) and len(exc.problems) > 1:
            raise BadInput("\n".join([f"{len(exc.problems)} problems:", *(f"  {p}" for p in exc.problems)])) from exc
        if isinstance(exc, ConfigError | CheckpointError):
            raise BadInput(str(exc)) from exc


def _check_same_run(experiment: Experiment, trainer: Trainer, logdir: Path) -> None:
    """Refuse to resume when ``config.toml`` describes another run than the checkpoint beside it.

    Raises:
        BadInput: naming each setting that differs, with both values.
    """
    factory = trainer.env_factory
    env = factory.env_id or _factory_name(factory.make_fn)
    env_kwargs, vector = dict(factory.kwargs), None
    preset_factory = preset_env_factory(experiment.run.env)
    atari = factory.make_fn is not None and preset_factory is not None and experiment.run.vector is None
    if atari and factory.make_fn == experiment.env_source():  # a preset's factory with env_kwargs as its options
        env, env_kwargs = experiment.run.env, dict(experiment.env_kwargs)
    elif (
        factory.make_fn is not None
        and experiment.run.vector is None
        and ":" in (experiment.run.env or "")
        and _same_factory(experiment.env_source(), factory.make_fn)
    ):  # run.env names the factory where the user's module holds it (a re-export, a partial, an
        # instance), not where it was defined: config.toml agrees when that name resolves to it
        env = experiment.run.env
    if isinstance(factory.make_fn, VectorEnvs):  # run.vector: the factory holds the id and its kwargs
        env, env_kwargs, vector = factory.make_fn.env_id, dict(factory.make_fn.kwargs), factory.make_fn.kind
        if experiment.run.vector is not None and factory.make_fn == experiment.env_source():
            env, env_kwargs = experiment.run.env, dict(experiment.env_kwargs)  # a preset's id (EnvPool's Atari)
    differences = experiment.differences(
        env=env, env_kwargs=env_kwargs, algo=trainer.algo, trainer=trainer.config, vector=vector
    )
    if differences:
        listed = "".join(f"\n  {difference}" for difference in differences)
        raise BadInput(
            f"{logdir / CONFIG_NAME} does not describe the run in {logdir / CHECKPOINT_NAME}:{listed}\n"
            "resume continues the checkpoint's run: put config.toml back as it was, "
            "or start a new run with `aiorl train`"
        )


def _factory_name(make_fn: object) -> str:
    """A checkpoint's env factory as ``module:name`` where it has one (a function, a class), else its repr."""
    module, name = getattr(make_fn, "__module__", None), getattr(make_fn, "__qualname__", None)
    return f"{module}:{name}" if isinstance(module, str) and isinstance(name, str) else repr(make_fn)


def _same_factory(mine: object, theirs: object) -> bool:
    """Whether two env factories are the same recipe: one object, equal, or pickled alike (as workers get them).

    A checkpoint's factory is an unpickled copy: a function or a class is the module's own
    object again, a ``functools.partial`` or a callable instance an equal copy, which pickles
    to the same bytes as the object ``run.env`` names.
    """
    if mine is theirs:
        return True
    try:
        return bool(mine == theirs) or pickle.dumps(mine) == pickle.dumps(theirs)
    except Exception:  # an object that cannot be compared or pickled is another recipe
        return False


def _check_same_plan(experiment: Experiment, plan: RunPlan, logdir: Path) -> None:
    """Refuse a plain resume when ``config.toml``'s step budget or target is not the interrupted run's.

    Raises:
        BadInput: naming each that differs (``aiorl resume --steps`` starts a new run instead).
    """
    differences = [
        f"run.{name}: config.toml has {ours!r}, the interrupted run {theirs!r}"
        for name, ours, theirs in (
            ("total_steps", experiment.run.total_steps, plan.total_steps),
            ("target_return", experiment.run.target_return, plan.target_return),
        )
        if ours != theirs
    ]
    if differences:
        listed = "".join(f"\n  {difference}" for difference in differences)
        raise BadInput(
            f"{logdir / CONFIG_NAME} does not describe the interrupted run in {logdir / CHECKPOINT_NAME}:{listed}\n"
            "resume finishes that run as it was planned: put config.toml back, or train N more steps as a new "
            f"run with `aiorl resume {logdir} --steps N` (with config.toml's run.target_return)"
        )


def _given(**values: Any) -> dict[str, Any]:
    """The options that were given on the command line (not ``None``)."""
    return {name: value for name, value in values.items() if value is not None}


def _default_logdir(experiment: Experiment) -> Path:
    env = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment.run.env or "env")
    base = Path("runs") / f"{env}-{experiment.algo_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")
    return candidate


if __name__ == "__main__":  # pragma: no cover
    main()
