"""The Ray backend: workers as async Ray actors on a cluster.

- :mod:`~aiorl.backends.ray.host`: joining or starting Ray, the published weights
  (one ``ray.put`` per version) and each actor's link (calls turned into the
  pool's messages);
- :mod:`~aiorl.backends.ray.actor`: the actor itself, hosting the same
  :class:`~aiorl.worker.sampler.EnvSampler` as a local worker process.

Importing this package never imports ray; a trainer using :class:`RayBackend` does
when it starts.
"""

from aiorl.backends.ray.host import RayBackend, ray_available

__all__ = ["RayBackend", "ray_available"]
