"""The local backend: workers as child processes of the trainer's process (the default).

- :mod:`~aiorl.backends.local.process`: how a worker process starts (aiorl's own
  forkserver with torch preloaded, never ``fork``) and its socket pair;
- :mod:`~aiorl.backends.local.lifetime`: seeing a worker process end (a pidfd: a
  killed forkserver is not taken for dead workers) and ending it with its process
  group (what its envs started goes with it);
- :mod:`~aiorl.backends.local.host`: the shared memory (slots, weight store,
  progress board) of one started trainer, and each process's link: socket frames,
  its exit watch, signals, stack dumps.
"""

from aiorl.backends.local.host import LocalBackend, LocalHost, ProcessLink

__all__ = ["LocalBackend", "LocalHost", "ProcessLink"]
