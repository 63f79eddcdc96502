"""The ``aiorl`` command end to end, in subprocesses: train, logs, plot, eval, resume, Ctrl-C, bad input.

Commands that train, or that a test signals, run as ``python -m aiorl`` (a new interpreter each);
the others (plot, eval, bad input) run in processes forked from one that imported the CLI once
(``cli_forker.py``): a process each all the same, without ~3 s of interpreter and torch start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from cli_envs import (
    BUILDING_FLAG_VARIABLE,
    SIMULATOR_PID_VARIABLE,
    STEP_DELAY_VARIABLE,
    cartpole_with_a_simulator,
    short_cartpole,
)
from conftest import alive, descendants, documented_metrics_keys, wait_until

from aiorl import Trainer
from aiorl.checkpoint import read_checkpoint, write_checkpoint
from aiorl.config_file import build_experiment, load_experiment
from aiorl.metrics_log import read_metrics

TESTS = Path(__file__).resolve().parent
SMALL_FLAGS = ["--workers", "2", "--envs-per-worker", "4", "--progress", "plain"]


def command_env(**variables: str) -> dict[str, str]:
    """The environment of a CLI process: ``cli_envs`` importable (by the CLI and its workers), plus ``variables``."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **variables}


def reap(child: subprocess.Popen[str]) -> None:
    """Kill ``child`` if it still runs, wait for it and close its pipes (also when the test failed early)."""
    if child.poll() is None:
        child.kill()
    child.wait()
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def signalled(
    args: list[str], cwd: Path, ready: Callable[[], bool], number: signal.Signals, **variables: str
) -> tuple[int, str]:
    """Run ``aiorl ARGS``, send it signal ``number`` once ``ready()``; return its exit code and stderr."""
    child = subprocess.Popen(
        [sys.executable, "-m", "aiorl", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(**variables),
    )
    try:
        assert wait_until(ready, timeout_s=120), child.stderr.read() if child.poll() is not None else "not ready"
        child.send_signal(number)
        _, stderr = child.communicate(timeout=120)
    finally:
        reap(child)
    return child.returncode, stderr


def two_updates(cwd: Path) -> Callable[[], bool]:
    """Whether the run in ``cwd/run`` has logged two updates (it is training)."""
    metrics = cwd / "run" / "metrics.jsonl"
    return lambda: metrics.exists() and metrics.read_text().count("\n") >= 2


def aiorl(
    *args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiorl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=command_env(**(env or {})),
    )


class ForkedCli:
    """``aiorl ARGS`` in a process of its own, forked from ``cli_forker.py`` (see the module docstring)."""

    def __init__(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, str(TESTS / "cli_forker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=command_env(),
        )

    def __call__(self, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        assert self.server.stdin is not None and self.server.stdout is not None
        request = {"args": list(args), "cwd": str(cwd), "timeout": timeout}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()
        assert line, f"cli_forker.py exited with {self.server.wait(timeout=30)}"
        reply = json.loads(line)
        command = ["aiorl", *args]
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, reply["stdout"], reply["stderr"])
        return subprocess.CompletedProcess(command, reply["returncode"], reply["stdout"], reply["stderr"])

    def close(self) -> None:
        assert self.server.stdin is not None and self.server.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # it already exited (and a test failed saying so)
            self.server.stdin.close()  # it exits at the end of its input
        try:
            self.server.wait(timeout=30)
        finally:
            if self.server.poll() is None:
                self.server.kill()
                self.server.wait()
            self.server.stdout.close()


@pytest.fixture(scope="module")
def forked_aiorl() -> Iterator[ForkedCli]:
    """Runs a command that neither trains nor is signalled (see the module docstring)."""
    cli = ForkedCli()
    try:
        yield cli
    finally:
        cli.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One short training run: 2048 steps of PPO on CartPole-v1 (8 updates of 256 steps)."""
    root = tmp_path_factory.mktemp("cli")
    done = aiorl("train", "CartPole-v1", "--steps", "2048", "--seed", "3", *SMALL_FLAGS, "--logdir", "run", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "run", done


def test_train_writes_config_metrics_checkpoint_and_tensorboard(trained):
    logdir, done = trained
    assert "finished: mean return" in done.stdout and "2,048 steps" in done.stdout
    assert "steps 2,048 (100% of 2,048)" in done.stderr  # the last plain progress line
    expected = build_experiment(
        {"run": {"env": "CartPole-v1", "total_steps": 2048}, "trainer": {"num_workers": 2, "envs_per_worker": 4}},
        overrides={"trainer": {"seed": 3}},
    )
    assert load_experiment(logdir / "config.toml") == expected

    records = read_metrics(logdir)
    assert [r["update"] for r in records] == list(range(1, 9))
    assert [r["env_steps"] for r in records] == [256 * u for u in range(1, 9)]
    assert set(records[-1]) == documented_metrics_keys()
    assert records[-1]["mean_return"] > 0 and {"policy_loss", "entropy"} <= set(records[-1]["learner"])

    state = read_checkpoint(logdir / "checkpoint.pt")
    assert state["policy_version"] == 8 and state["stats"]["steps_trained"] == 2048 and state["run"] is None

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    assert [e.step for e in events.Scalars("return/mean")] == [r["env_steps"] for r in records]


def test_plot_writes_a_png(forked_aiorl, trained, tmp_path):
    logdir, _ = trained
    done = forked_aiorl("plot", str(logdir), str(logdir), "-o", "curve.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    png = (tmp_path / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("curve.jpg2", "Error: -o='curve.jpg2': the file type must be one of "),
        ("missing/curve.png", "Error: -o='missing/curve.png': the directory 'missing' does not exist"),
        ("/proc/curve.png", "Error: -o='/proc/curve.png' cannot be written"),  # was a traceback after the plot
    ],
)
def test_plot_refuses_an_output_it_cannot_write_before_reading_any_run(forked_aiorl, tmp_path, output, error):
    (tmp_path / "run").mkdir()  # no metrics.jsonl: the output is checked first
    done = forked_aiorl("plot", "run", "-o", output, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith(error), done.stderr


def test_plot_says_the_name_it_writes_where_the_output_has_no_suffix(forked_aiorl, trained, tmp_path):
    done = forked_aiorl("plot", str(trained[0]), "-o", "curve", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote curve.png"  # was "wrote curve", the file being curve.png
    assert (tmp_path / "curve.png").is_file()


@pytest.mark.parametrize(
    ("line", "error"),
    [("notjson", "line 2: not a JSON record"), ("[1, 2]", "line 2: not the record of an update: [1, 2]")],
)
def test_plot_names_a_metrics_line_that_is_no_record(forked_aiorl, trained, tmp_path, line, error):
    records = (trained[0] / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(f"{records[0]}\n{line}\n")
    done = forked_aiorl("plot", "run", cwd=tmp_path)
    assert done.returncode == 2  # was a JSONDecodeError or AttributeError traceback, exit 1
    assert done.stderr.startswith(f"Error: 'run/metrics.jsonl', {error}"), done.stderr


def test_eval_refuses_a_video_that_is_not_a_gif_before_playing(forked_aiorl, trained, tmp_path):
    logdir, _ = trained
    done = forked_aiorl("eval", str(logdir), "--episodes", "1", "--video", "ep.mp4", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["Error: --video='ep.mp4' must name a .gif file (aiorl records GIFs)"]
    assert done.stdout == ""  # no episode was played


def test_eval_prints_the_return_of_each_episode(forked_aiorl, trained, tmp_path):
    logdir, _ = trained
    done = forked_aiorl("eval", str(logdir / "checkpoint.pt"), "--episodes", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("episode 1: return ") and lines[1].startswith("episode 2: return ")
    assert lines[2].startswith("mean return ") and lines[2].endswith("over 2 episodes (policy version 8)")


def test_eval_records_the_first_episode_to_a_gif(forked_aiorl, tmp_path):
    from cli_envs import DrawnCartPole
    from PIL import Image

    write_checkpoint(Trainer(DrawnCartPole, num_workers=1, envs_per_worker=2).state_dict(), tmp_path / "c.pt")
    # --video implies --render
    done = forked_aiorl("eval", "c.pt", "--episodes", "1", "--video", "ep.gif", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    steps = int(done.stdout.split("(")[1].split()[0])  # "episode 1: return 12.00 (12 steps)"
    assert done.stdout.splitlines()[-1] == "video: ep.gif"
    with Image.open(tmp_path / "ep.gif") as gif:
        assert gif.size == (96, 40)
        total_ms = 0
        for index in range(gif.n_frames):  # Pillow merges repeated frames into longer ones
            gif.seek(index)
            total_ms += gif.info["duration"]
    assert total_ms == (steps + 1) * 20  # the reset frame and one per step, at the env's 50 fps


def test_eval_of_several_run_directories_evaluates_each_and_records_beside_each(forked_aiorl, tmp_path):
    from cli_envs import DrawnCartPole

    for name in ("run-a", "run-b"):
        (tmp_path / name).mkdir()
        write_checkpoint(Trainer(DrawnCartPole, num_workers=1).state_dict(), tmp_path / name / "checkpoint.pt")
    done = forked_aiorl("eval", "run-a", "run-b/", "--episodes", "1", "--render", "rgb_array", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [lines[0], lines[4]] == ["run-a:", "run-b:"]
    assert [lines[3], lines[7]] == ["video: run-a/eval.gif", "video: run-b/eval.gif"]
    assert (tmp_path / "run-a" / "eval.gif").stat().st_size > 0 and (tmp_path / "run-b" / "eval.gif").stat().st_size > 0


def test_eval_with_a_renderer_that_is_not_installed_says_what_to_install_in_one_line(forked_aiorl, tmp_path):
    from cli_envs import UndrawableCartPole

    write_checkpoint(Trainer(UndrawableCartPole, num_workers=1).state_dict(), tmp_path / "c.pt")
    done = forked_aiorl("eval", "c.pt", "--render", "rgb_array", cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        'Error: --render rgb_array: pygame is not installed, run `pip install "gymnasium[classic-control]"`'
    ]
    assert not (tmp_path / "eval.gif").exists()


def test_resume_trains_more_steps_and_the_counters_and_curve_continue(forked_aiorl, trained, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(trained[0], logdir)
    done = aiorl("resume", str(logdir), "--steps", "1024", "--progress", "plain", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    records = read_metrics(logdir)
    assert [r["update"] for r in records] == list(range(1, 13))
    assert [r["env_steps"] for r in records] == [256 * u for u in range(1, 13)]
    assert all(a["wall_time_s"] < b["wall_time_s"] for a, b in itertools.pairwise(records))
    assert all(a["episodes"] <= b["episodes"] for a, b in itertools.pairwise(records))
    assert read_checkpoint(logdir)["stats"]["steps_trained"] == 3072

    again = forked_aiorl("resume", str(logdir), cwd=tmp_path)
    assert again.returncode == 0 and "finished (3,072 steps); pass --steps N to train N more" in again.stdout


def test_resume_refuses_a_config_toml_that_names_another_env(forked_aiorl, trained, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(trained[0], logdir)
    config = logdir / "config.toml"
    config.write_text(config.read_text().replace('env = "CartPole-v1"', 'env = "Acrobot-v1"'))
    done = forked_aiorl("resume", "run", "--steps", "256", cwd=tmp_path, timeout=120)

    assert done.returncode == 2, done.stderr
    assert "run/config.toml does not describe the run in run/checkpoint.pt:" in done.stderr
    assert "run.env = 'Acrobot-v1' in config.toml, 'CartPole-v1' in the checkpoint" in done.stderr
    assert read_metrics(logdir) == read_metrics(trained[0])  # nothing trained


@pytest.mark.parametrize("env", ["cli_envs:short_cartpole", "cli_envs:CartPoleEnv"])  # a partial, a re-export
def test_resume_goes_on_with_a_factory_its_module_holds_but_did_not_define(tmp_path, env):
    flags = ["--steps", "512", "--workers", "1", "--envs-per-worker", "4", "--progress", "plain", "--logdir", "run"]
    assert aiorl("train", env, *flags, cwd=tmp_path).returncode == 0
    done = aiorl("resume", "run", "--steps", "256", "--progress", "plain", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # was: "run.env = 'cli_envs:CartPoleEnv' in config.toml,
    # 'gymnasium.envs.classic_control.cartpole:CartPoleEnv' in the checkpoint"
    assert read_checkpoint(tmp_path / "run")["stats"]["steps_trained"] == 512 + 256


def test_resume_refuses_a_config_toml_that_names_another_factory(forked_aiorl, tmp_path):
    (tmp_path / "run").mkdir()
    asyncio.run(Trainer(short_cartpole, num_workers=1, envs_per_worker=4, seed=0).save(tmp_path / "run"))
    experiment = build_experiment({"run": {"env": "cli_envs:plain_cartpole"}, "trainer": {"seed": 0}})
    (tmp_path / "run" / "config.toml").write_text(experiment.to_toml())
    done = forked_aiorl("resume", "run", "--steps", "256", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "run.env = 'cli_envs:plain_cartpole' in config.toml, \"functools.partial(" in done.stderr


def test_resume_steps_after_the_target_was_reached_trains_them_without_the_target(trained, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(trained[0], logdir)
    config = logdir / "config.toml"
    config.write_text(config.read_text().replace('# target_return = "none"', "target_return = 10.0"))  # reached
    done = aiorl("resume", "run", "--steps", "256", "--progress", "plain", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "the run already reached run.target_return = 10 (mean return " in done.stderr
    assert read_checkpoint(logdir)["stats"]["steps_trained"] == 2048 + 256  # was: "reached the target", 0 updates
    assert load_experiment(config).run.target_return is None  # a later resume is not stopped by it either


def test_resume_takes_how_the_run_executes_from_config_toml_and_its_flags(trained, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(trained[0], logdir)
    config = logdir / "config.toml"
    config.write_text(config.read_text().replace("worker_timeout_s = 30.0", "worker_timeout_s = 90.0"))
    done = aiorl("resume", str(logdir), "--steps", "256", "--workers", "1", "--progress", "plain", cwd=tmp_path)

    assert done.returncode == 0, done.stderr  # was: refused, naming both settings as differences
    assert "trainer.num_workers = 1 (the checkpoint's run had 2)" in done.stderr
    assert "trainer.worker_timeout_s = 90.0 (the checkpoint's run had 30.0)" in done.stderr
    saved = read_checkpoint(logdir)
    assert (saved["config"]["num_workers"], saved["config"]["worker_timeout_s"]) == (1, 90.0)
    assert saved["stats"]["steps_trained"] == 2048 + 256
    assert load_experiment(config).trainer.num_workers == 1  # --workers is kept for the next resume


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_trained_on_a_gpu_resumes_on_a_cpu_with_device_cpu(forked_aiorl, trained, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(trained[0], logdir)
    state = read_checkpoint(logdir)
    cuda_generator_state = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0] + [0] * 8, dtype=torch.uint8)  # seed 7, offset 0
    state["config"]["device"] = "cuda"
    state["rng"] = {"learner": cuda_generator_state, "learner_device": "cuda"}
    write_checkpoint(state, logdir / "checkpoint.pt")
    config = logdir / "config.toml"
    config.write_text(config.read_text().replace('device = "cpu"', 'device = "cuda"', 1))

    refused = forked_aiorl("resume", "run", "--steps", "256", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert (
        "trainer.device='cuda' in run/config.toml is not usable here (device='cuda' but CUDA is not available)"
        in refused.stderr
    )
    assert "go on here with `aiorl resume run --device cpu`" in refused.stderr

    done = aiorl("resume", "run", "--steps", "256", "--device", "cpu", "--progress", "plain", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # the CUDA generator state did not fit the CPU learner's
    assert "trainer.device = 'cpu' (the checkpoint's run had 'cuda')" in done.stderr
    assert read_checkpoint(logdir)["stats"]["steps_trained"] == 2048 + 256
    assert load_experiment(config).trainer.device == "cpu"


def test_a_factory_of_vector_envs_sets_envs_per_worker_when_no_flag_does(tmp_path):
    done = aiorl(
        "train", "cli_envs:four_cartpoles", "--steps", "256", "--workers", "1", "--logdir", "run", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr  # was: "envs_per_worker=16, but ... num_envs=4" with no flag given
    assert load_experiment(tmp_path / "run" / "config.toml").trainer.envs_per_worker == 4
    again = aiorl("resume", "run", "--steps", "128", cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # config.toml agrees with the checkpoint


def interrupted_copy(trained: tuple[Path, object], tmp_path: Path, plan: dict[str, object]) -> Path:
    """A copy of the trained run whose checkpoint says it was interrupted with ``plan`` unfinished."""
    logdir = tmp_path / "run"
    shutil.copytree(trained[0], logdir)
    state = read_checkpoint(logdir)
    write_checkpoint({**state, "run": plan}, logdir / "checkpoint.pt")
    return logdir


def test_resume_of_a_run_interrupted_after_its_last_update_says_it_finished(forked_aiorl, trained, tmp_path):
    interrupted_copy(trained, tmp_path, {"total_steps": 2048, "target_return": None, "trained_at_start": 0})
    done = forked_aiorl("resume", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # was a RuntimeError traceback, exit 1
    assert "the run in run finished (2,048 steps); pass --steps N to train N more" in done.stdout


def test_a_plain_resume_refuses_a_config_toml_with_another_step_budget(forked_aiorl, trained, tmp_path):
    logdir = interrupted_copy(trained, tmp_path, {"total_steps": 4096, "target_return": None, "trained_at_start": 0})
    config = logdir / "config.toml"
    config.write_text(config.read_text().replace("total_steps = 2048", "total_steps = 3000"))
    done = forked_aiorl("resume", "run", cwd=tmp_path)
    assert done.returncode == 2, done.stderr  # was: trained on to 4,096 steps without a word
    assert "run.total_steps: config.toml has 3000, the interrupted run 4096" in done.stderr
    assert "aiorl resume run --steps N" in done.stderr
    assert read_metrics(logdir) == read_metrics(trained[0])  # nothing trained


@pytest.mark.parametrize(
    ("signal_number", "code", "said"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGHUP, 129, "hung up (SIGHUP)")],
)
def test_sigterm_and_sighup_save_a_checkpoint_and_exit_with_128_plus_the_signal(tmp_path, signal_number, code, said):
    total = 32 * 256
    flags = ["--steps", str(total), "--checkpoint-interval", "60", *SMALL_FLAGS, "--logdir", "run"]
    # about 8 s for the whole budget, so the signal lands mid-run (SIGTERM: `kill PID`, `docker stop`;
    # SIGHUP: the terminal closed)
    returncode, stderr = signalled(
        ["train", "cli_envs:slow_cartpole", *flags], tmp_path, two_updates(tmp_path), signal_number
    )
    assert returncode == code, stderr
    assert f"{said}; checkpoint: run/checkpoint.pt; continue with: aiorl resume run" in stderr
    interrupted = Trainer.load(tmp_path / "run")  # the one the signal wrote (after the first update's)
    assert interrupted.unfinished_run is not None and interrupted.policy_version >= 2
    assert interrupted.stats.steps_trained < total


def test_sigterm_during_eval_closes_the_env_and_exits_143(tmp_path):
    asyncio.run(Trainer(cartpole_with_a_simulator, seed=0).save(tmp_path / "checkpoint.pt"))
    pid_file = tmp_path / "simulator"  # written once the eval env is built: playing
    arguments = ["eval", "checkpoint.pt", "--episodes", "100000000"]
    variables = {SIMULATOR_PID_VARIABLE: str(pid_file)}
    returncode, stderr = signalled(arguments, tmp_path, pid_file.exists, signal.SIGTERM, **variables)
    assert returncode == 143, stderr  # was -15, no message
    assert stderr.strip() == "aiorl: terminated (SIGTERM)"
    simulator = int(pid_file.read_text())
    assert wait_until(lambda: not alive(simulator), timeout_s=10), "the eval env's simulator outlived aiorl eval"


def test_ctrl_c_while_the_trainer_is_built_exits_130_with_one_line(tmp_path):
    flag = tmp_path / "building"  # the trainer builds one env to read its spaces: that one takes 60 s
    arguments = ["train", "cli_envs:cartpole_slow_to_build", "--logdir", "run"]
    returncode, stderr = signalled(
        arguments, tmp_path, flag.exists, signal.SIGINT, **{BUILDING_FLAG_VARIABLE: str(flag)}
    )
    assert returncode == 130, stderr  # was click's "Aborted!", exit 1 ("training failed")
    assert stderr.strip() == "aiorl: interrupted before training started; nothing was trained or saved"


def forkserver_below(pid: int) -> int | None:
    """The multiprocessing forkserver among ``pid``'s children, if it has started."""
    for child in descendants(pid):
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as cmdline:
            if b"multiprocessing.forkserver" in cmdline.read():
                return child
    return None


def test_ctrl_c_while_the_forkserver_imports_torch_exits_130_without_its_traceback(tmp_path):
    # A terminal's Ctrl-C goes to its whole foreground process group: the forkserver that
    # starts the workers is in it, and spends seconds importing torch first.
    child = subprocess.Popen(
        [sys.executable, "-m", "aiorl", "train", "CartPole-v1", "--logdir", "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
        start_new_session=True,  # a group of its own, as a terminal gives a command
    )
    try:
        assert wait_until(lambda: forkserver_below(child.pid) is not None, timeout_s=120), "no forkserver started"
        # Past its first import, aiorl's (~0.1 s in, under load), inside torch's (done 1-3 s in).
        time.sleep(0.3)
        os.killpg(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        reap(child)
    assert child.returncode == 130, stderr
    assert "KeyboardInterrupt" not in stderr and "Traceback" not in stderr, stderr  # was the forkserver's
    assert stderr.strip().endswith(
        "aiorl: interrupted; no checkpoint was written (no update finished): nothing to resume"
    )


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    total = 32 * 256  # whole updates of 256 steps
    flags = ["--steps", str(total), "--checkpoint-interval", "0.2", *SMALL_FLAGS, "--logdir", "run"]
    # 2 ms steps: about 8 s for the whole budget, so Ctrl-C lands mid-run
    returncode, stderr = signalled(
        ["train", "cli_envs:slow_cartpole", *flags], tmp_path, two_updates(tmp_path), signal.SIGINT
    )
    assert returncode == 130, stderr
    assert "continue with: aiorl resume run" in stderr

    interrupted = Trainer.load(tmp_path / "run")
    assert interrupted.unfinished_run is not None and interrupted.unfinished_run.total_steps == total
    assert 0 < interrupted.stats.steps_trained < total

    # The resume only has to finish the run: its steps need not be slow (the same env, without the 2 ms sleep).
    done = aiorl("resume", "run", "--progress", "plain", cwd=tmp_path, env={STEP_DELAY_VARIABLE: "0"})
    assert done.returncode == 0, done.stderr
    records = read_metrics(tmp_path / "run")
    assert [r["update"] for r in records] == list(range(1, len(records) + 1))  # no update twice, none missing
    assert records[-1]["env_steps"] == total == read_checkpoint(tmp_path / "run")["stats"]["steps_trained"]


def test_an_unknown_config_key_exits_with_2_naming_it(forked_aiorl, tmp_path):
    (tmp_path / "bad.toml").write_text('[run]\nenv = "CartPole-v1"\n[trainer]\nnum_wrokers = 2\n')
    done = forked_aiorl("train", "--config", "bad.toml", "--logdir", "run", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "trainer.num_wrokers: unknown key; did you mean 'num_workers'?" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_several_problems_lists_each_on_a_line(forked_aiorl, tmp_path):
    (tmp_path / "bad.toml").write_text('[run]\nenv = "CartPole-v1"\ntotal_step = 5\n[trainer]\nnum_workers = 0\n')
    done = forked_aiorl("train", "--config", "bad.toml", "--logdir", "run", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "Error: 2 problems:",
        "  run.total_step: unknown key; did you mean 'total_steps'?",
        "  trainer.num_workers=0 must be an integer >= 1",
    ]


def test_a_logdir_where_nothing_can_be_written_exits_with_2_before_training(forked_aiorl, tmp_path):
    (tmp_path / "file").write_text("a regular file: no directory can be made under it, even by root")
    done = forked_aiorl("train", "CartPole-v1", "--logdir", "file/run", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "Error: checkpoints cannot be written to 'file/run/checkpoint.pt': " in done.stderr
    assert "training" not in done.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["train", "CartPole-v1", "--steps", "256", "--logdir", ""], "Error: --logdir='' is an empty path: name a dir"),
        (["train", "CartPole-v1", "--config", ""], "Error: --config='' is an empty path: name a file"),
        (["plot", ".", "-o", ""], "Error: -o='' is an empty path: name a file"),
    ],
)
def test_an_empty_path_exits_with_2_naming_its_option(forked_aiorl, tmp_path, args, error):
    done = forked_aiorl(*args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith(error), done.stderr
    assert list(tmp_path.iterdir()) == []  # was: --logdir "" trained into the current directory


def test_periodic_evaluations_are_printed_and_written_to_evaluations_jsonl(tmp_path):
    (tmp_path / "ev.toml").write_text("[trainer]\neval_interval_steps = 512\neval_episodes = 2\n")
    flags = ["--config", "ev.toml", "--steps", "2048", *SMALL_FLAGS, "--logdir", "run"]
    done = aiorl("train", "CartPole-v1", *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = re.findall(r"evaluation of version (\d+): mean return [\d.]+ \+- [\d.]+ over 2 episodes", done.stderr)
    assert printed, done.stderr  # were only logged at info level: nowhere without -v
    lines = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert [str(line["update"]) for line in lines] == printed
    steps_of = {record["update"]: record["env_steps"] for record in read_metrics(tmp_path / "run")}
    for line in lines:
        assert line["episodes"] == len(line["returns"]) == len(line["lengths"]) == 2
        assert line["env_steps"] == steps_of[line["update"]] and line["mean_return"] == sum(line["returns"]) / 2


def test_train_refuses_a_logdir_holding_the_metrics_of_a_run_that_never_checkpointed(forked_aiorl, tmp_path):
    # Killed before its first checkpoint: nothing to resume, and a new run appending to the old
    # metrics.jsonl would make its update numbers run 1..70, 1, 2, ... (and the plot fold back).
    (tmp_path / "run").mkdir()
    old = '{"schema": 1, "update": 1, "env_steps": 1024}\n'
    (tmp_path / "run" / "metrics.jsonl").write_text(old)
    done = forked_aiorl("train", "CartPole-v1", "--logdir", "run", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "run holds the metrics.jsonl of a run that stopped before its first checkpoint" in done.stderr
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == old
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.jsonl"]


def test_a_bad_value_or_a_missing_checkpoint_exits_with_2(forked_aiorl, tmp_path):
    done = forked_aiorl("train", "CartPole-v1", "--workers", "0", "--logdir", "run", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "num_workers=0 must be an integer >= 1" in done.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.toml").write_text('[run]\nenv = "CartPole-v1"\n')
    done = forked_aiorl("resume", "empty", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "checkpoint.pt' does not exist" in done.stderr


def test_the_console_script_and_the_config_template(tmp_path):
    script = Path(sys.executable).with_name("aiorl")
    done = subprocess.run([str(script), "config", "Acrobot-v1", "--algo", "appo"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (tmp_path / "template.toml").write_text(done.stdout)
    expected = build_experiment({"run": {"env": "Acrobot-v1", "algo": "appo"}})
    assert load_experiment(tmp_path / "template.toml") == expected
    assert done.stdout == expected.to_toml()  # the file and nothing else on stdout (no log lines)


def test_the_config_template_of_a_preset_names_the_preset_s_env(forked_aiorl, tmp_path):
    done = forked_aiorl("config", "--preset", "Pendulum-v1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "p.toml").write_text(done.stdout)  # was env = "CartPole-v1" with Pendulum's target
    assert load_experiment(tmp_path / "p.toml") == build_experiment({"run": {"preset": "Pendulum-v1"}})


def test_the_config_template_of_a_mistyped_env_id_exits_with_2_naming_the_closest(forked_aiorl, tmp_path):
    done = forked_aiorl("config", "CartPol-v1", cwd=tmp_path)
    assert done.returncode == 2, done.stdout  # was: a config of 'CartPol-v1', exit 0
    assert "env='CartPol-v1' is not a registered gymnasium id; did you mean 'CartPole-v1'" in done.stderr
    assert done.stdout == ""


def test_gymnasium_s_module_colon_id_form_names_an_id_the_module_registers(forked_aiorl, tmp_path):
    done = forked_aiorl("config", "registered_envs:RegisteredCartPole-v0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # was: "module 'registered_envs' has no callable 'RegisteredCartPole-v0'"
    assert 'env = "registered_envs:RegisteredCartPole-v0"' in done.stdout
    done = forked_aiorl("config", "registered_envs:NoSuchEnv-v0", cwd=tmp_path)
    assert done.returncode == 2 and "nor did importing it register a gymnasium id of that name" in done.stderr


def test_a_failed_run_exits_with_1_and_keeps_its_checkpoint(tmp_path):
    (tmp_path / "fragile.toml").write_text("[trainer]\nmax_restarts = 0\n")
    flags = ["--config", "fragile.toml", "--steps", "100000", *SMALL_FLAGS, "--logdir", "run"]
    done = aiorl("train", "cli_envs:cartpole_killed_at_step_300", *flags, cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert "training failed: WorkerRestartError: worker 0 lost once more after 0 restarts" in done.stderr
    assert "checkpoint: run/checkpoint.pt" in done.stderr
    # the last logged update, or the one the learner finished while the run was being cancelled
    last_logged = read_metrics(tmp_path / "run")[-1]["update"]
    assert read_checkpoint(tmp_path / "run")["policy_version"] in (last_logged, last_logged + 1)
