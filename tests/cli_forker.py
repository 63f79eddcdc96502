"""Runs ``aiorl`` commands for test_cli.py, each in a process forked from this one once it imported the CLI.

Each command still gets a process of its own: its exit status, stdout and stderr are that
process's, and it imports whatever the command imports on first use, as ``python -m aiorl``
would. What it skips is starting an interpreter and importing ``aiorl.cli`` (torch with it):
about 3 s a command on 2 cores, most of what a test of an error message or of ``eval`` paid.
Commands that start workers or handle signals run as real ``python -m aiorl`` processes.

Protocol, one JSON object a line: requests on stdin (``{"args": [...], "cwd": "...",
"timeout": seconds}``), replies on stdout (``{"returncode": n, "stdout": "...", "stderr":
"...", "timed_out": bool}``; a negative ``returncode`` is the signal that ended the command,
as ``subprocess`` reports it). Exits when stdin closes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

import aiorl.cli  # what `python -m aiorl` imports before it runs a command


def exit_status(code: object) -> int:
    """The exit status of an interpreter that ``SystemExit(code)`` ends (printing a message, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_command(args: list[str], cwd: str, out_path: str, err_path: str) -> None:
    """In the forked child: run ``aiorl ARGS`` in ``cwd`` with stdout and stderr to those files; never returns."""
    status = 70  # EX_SOFTWARE: this runner failed, not the command
    try:
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, out_path), (2, err_path)):
            file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(file, fd)
            os.close(file)
        sys.argv = [os.path.join(os.path.dirname(aiorl.cli.__file__), "__main__.py"), *args]  # as `-m aiorl` sets it
        try:
            aiorl.cli.main(args=args, prog_name="python -m aiorl")
            status = 0
        except SystemExit as exc:
            status = exit_status(exc.code)
        except BaseException:  # uncaught: the interpreter prints it and exits with 1
            traceback.print_exc()
            status = 1
        atexit._run_exitfuncs()  # what interpreter shutdown would run
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    """The child's return code (``-signal`` if a signal ended it) and whether it was killed for its timeout."""
    deadline = time.monotonic() + timeout_s
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), timed_out
        if not timed_out and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            timed_out = True
        time.sleep(0.005)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        # Not tempfile.TemporaryDirectory: its finalizer is an atexit function, which the child would run.
        directory = tempfile.mkdtemp(prefix="aiorl-cli-")
        try:
            out_path, err_path = os.path.join(directory, "stdout"), os.path.join(directory, "stderr")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_command(request["args"], request["cwd"], out_path, err_path)
            returncode, timed_out = wait(pid, request["timeout"])
            with open(out_path, errors="replace") as out, open(err_path, errors="replace") as err:
                reply = {"returncode": returncode, "stdout": out.read(), "stderr": err.read(), "timed_out": timed_out}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve()
