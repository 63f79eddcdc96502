"""Backends: what runs the workers. Local processes (the default) or Ray actors.

Importing this package never imports ray; :class:`RayBackend` does when a trainer
using it starts.
"""

from __future__ import annotations

from aiorl.backends.base import Backend, WeightPublisher, WorkerHost, WorkerLink, WorkerTemplate
from aiorl.backends.local import LocalBackend
from aiorl.backends.ray import RayBackend

BACKEND_NAMES = ("local", "ray")


def resolve_backend(backend: str | Backend) -> Backend:
    """The backend named by ``backend`` (``"local"``, ``"ray"``), or ``backend`` itself."""
    if backend == "local":
        return LocalBackend()
    if backend == "ray":
        return RayBackend()
    if isinstance(backend, Backend):
        return backend
    raise ValueError(f"backend={backend!r} must be one of {BACKEND_NAMES} or a Backend")


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "LocalBackend",
    "RayBackend",
    "WeightPublisher",
    "WorkerHost",
    "WorkerLink",
    "WorkerTemplate",
    "resolve_backend",
]
