"""The package's shape: imports point one way, and a worker process loads only the worker side."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL

from aiorl import PPO, Trainer
from aiorl.backends.local.process import PRELOAD
from aiorl.testing import WorkerSideOnly
from aiorl.testing.envs import TRAINER_SIDE_MODULES

PACKAGE = Path(__file__).resolve().parent.parent / "aiorl"

WORKER_MUST_NOT_LOAD = set(TRAINER_SIDE_MODULES)


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_time_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The aiorl modules ``module`` imports when it is imported (``TYPE_CHECKING`` blocks and
    imports inside functions excluded), with the packages each import loads on the way."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)  # submodules by name
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    own_ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    imported = set()
    for target in found & known:
        parts = target.split(".")
        loaded = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # importing a.b.c runs a, a.b first
        imported |= (loaded - own_ancestors - {module}) & known
    return imported


def test_no_module_imports_itself_through_a_cycle():
    known = module_names()
    graph = {name: import_time_imports(name, path, set(known)) for name, path in known.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            name, trail = stack.pop()
            for nxt in graph[name]:
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:10])


LEAVES = ("aiorl.errors", "aiorl.numbers", "aiorl.protocol", "aiorl.records", "aiorl.rollout")
"""Modules every layer may use, which use no other aiorl module but each other."""
MUST_NOT_IMPORT = {
    "aiorl.worker": ("aiorl.engine", "aiorl.algos", "aiorl.backends", "aiorl.trainer", "aiorl.config", "aiorl.cli"),
    "aiorl.algos": ("aiorl.engine", "aiorl.backends", "aiorl.worker", "aiorl.shm", "aiorl.trainer", "aiorl.cli"),
    "aiorl.backends": ("aiorl.engine", "aiorl.trainer", "aiorl.cli"),
    "aiorl.engine": ("aiorl.trainer", "aiorl.cli"),
}
"""The layers, bottom up: leaves <- worker / algos <- backends <- engine <- trainer <- cli."""


def test_imports_point_one_way():
    known = module_names()
    wrong = []
    for name, path in known.items():
        imported = import_time_imports(name, path, set(known))
        if name in LEAVES:
            wrong += [f"{name} imports {other}" for other in imported if other not in LEAVES]
        for layer, forbidden in MUST_NOT_IMPORT.items():
            if name == layer or name.startswith(layer + "."):
                wrong += [
                    f"{name} imports {other}"
                    for other in imported
                    if any(other == f or other.startswith(f + ".") for f in forbidden)
                ]
    assert not wrong, "\n".join(sorted(wrong))


def test_a_worker_process_loads_only_the_worker_side():
    # What the forkserver preloads for every worker, as aiorl.backends.local.process.PRELOAD says.
    code = "import sys, torch, gymnasium, aiorl.worker.main\nprint('\\n'.join(sorted(sys.modules)))"
    env = {**os.environ, "AIORL_WORKER_SIDE": "1"}  # as the local backend starts its workers
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded = set(done.stdout.split())
    assert not (loaded & WORKER_MUST_NOT_LOAD), sorted(loaded & WORKER_MUST_NOT_LOAD)
    assert not {name for name in loaded if name.startswith(("aiorl.engine.", "aiorl.algos."))}


def test_a_worker_side_process_ignores_ctrl_c_from_its_import_of_aiorl_on_the_users_does_not():
    # The forkserver imports aiorl first, then torch for seconds; a terminal's Ctrl-C reaches it
    # too (the trainer's process group) and printed a KeyboardInterrupt traceback of torch's import.
    assert PRELOAD[0] == "aiorl"
    code = "import signal, sys, aiorl\nprint(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, 'torch' in sys.modules)"
    users = {k: v for k, v in os.environ.items() if k != "AIORL_WORKER_SIDE"}
    for env, expected in [({**users, "AIORL_WORKER_SIDE": "1"}, ["True", "False"]), (users, ["False", "True"])]:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert done.stdout.split() == expected, env.get("AIORL_WORKER_SIDE")


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_real_worker_processes_load_only_the_worker_side():
    # WorkerSideOnly raises (an env error, fatal after env_error_limit) in a worker that loaded the trainer.
    result = await Trainer(WorkerSideOnly, PPO(update_epochs=1, num_minibatches=1), **SMALL).run(total_steps=300)
    assert result.env_steps >= 300 and result.env_errors == 0


def test_the_users_process_loads_the_public_api_at_import():
    # So that nothing heavy is imported later, inside the application's event loop.
    code = "import sys, aiorl; print('aiorl.trainer' in sys.modules and 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "AIORL_WORKER_SIDE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "True"


def test_building_the_first_trainer_imports_no_more_of_torch():
    # torch's first optimizer imports torch._dynamo (~800 modules with sympy): it took 3-6 s of
    # the application's event loop when its first Trainer was built there.
    code = (
        "import sys, aiorl\nloaded = set(sys.modules)\naiorl.Trainer('CartPole-v1', num_workers=1)\n"
        "print(sorted(name for name in set(sys.modules) - loaded if name.split('.')[0] in ('torch', 'sympy')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "AIORL_WORKER_SIDE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "[]"
