"""Running the learner's loss through ``torch.compile``: process-wide limits and the compiler's warnings."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

LEARNERS_PER_PROCESS = 64
"""Compiled learners one process may build before dynamo stops compiling new ones."""


def allow_recompiles(count: int) -> None:
    """Let dynamo compile the loss for ``count`` learners in one process.

    Dynamo keeps one cache per code object, and every learner's ``_eager_loss`` is the
    same code object: past torch's default limit (8 versions) it would silently run
    further learners eager while :attr:`SurrogateLearner.compiled` says True (a
    benchmark or a test suite builds more than 8).
    """
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), count))


@contextlib.contextmanager
def compiler_warnings_ignored() -> Iterator[None]:
    """Ignore the warnings torch's compiler raises while it compiles.

    Such as "TensorFloat32 tensor cores ... available but not enabled" on CUDA: under
    ``-W error`` (a test suite's setting) each would fail the compilation and leave the
    learner uncompiled (seen on an H200 with torch 2.11).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\._(inductor|dynamo|functorch)")
        yield
