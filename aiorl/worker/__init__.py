"""The child-process side: a worker's event loop, its envs and its policy copy.

Nothing here imports the trainer or the engine.
"""

from aiorl.worker.spec import AsyncActing, LocalPlumbing, WorkerSpec, WorkerTemplate

__all__ = ["AsyncActing", "LocalPlumbing", "WorkerSpec", "WorkerTemplate"]
