"""Episode recordings as animated GIFs (Pillow; ``pip install "aiorl[video]"``).

GIF needs no ffmpeg, plays in every browser and in a GitHub README. Frames are reduced to
a 256-colour palette as they arrive, so a frame costs about ``width * height`` bytes of
memory until the file is written.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np


class GifRecorder:
    """Collects ``rgb_array`` frames and writes them as one looping GIF.

    Args:
        path: the file to write (``.gif``).
        fps: frames per second of the animation (an env's ``metadata["render_fps"]``).

    Raises:
        ImportError: Pillow is not installed (the message says how to install it).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 30.0) -> None:
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImportError('recording needs Pillow: pip install "aiorl[video]"') from exc
        self._image = Image
        self.path = Path(path)
        self.fps = fps
        self.frames: list[Any] = []

    def __call__(self, frame: np.ndarray) -> None:
        """Add one ``[H, W, 3]`` ``uint8`` frame."""
        array = np.asarray(frame)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"a frame must be an [H, W, 3] RGB array, got shape {array.shape}")
        image = self._image.fromarray(np.ascontiguousarray(array[..., :3], dtype=np.uint8))
        self.frames.append(image.quantize(colors=256))

    def save(self) -> Path:
        """Write the GIF (raises ``ValueError`` when no frame was recorded); return its path.

        The file is written beside ``path`` under a temporary name and renamed over it when
        whole, so an interrupted save (Ctrl-C, a full disk) leaves no truncated GIF and an
        earlier recording at ``path`` as it was.
        """
        if not self.frames:
            raise ValueError("no frame was recorded")
        first, *rest = self.frames
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            first.save(
                temporary,
                format="GIF",
                save_all=True,
                append_images=rest,
                duration=max(round(1000 / self.fps), 20),
                loop=0,
            )
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return self.path
