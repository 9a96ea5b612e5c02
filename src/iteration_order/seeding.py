"""One place that makes runs deterministic: explicit generators per random stream, threads set.

Each random stream of a run (model initialisation, batch schedule, evaluation subsets, fake data)
gets its own CPU ``torch.Generator`` derived from (seed, stream name). Streams never share state,
so e.g. evaluating a Hessian or drawing a fake data set cannot shift the batch order, and the
schedule is the same on CPU and GPU because it is always drawn on the CPU.
"""
from __future__ import annotations

import hashlib
import os
import random
from contextlib import contextmanager

import numpy as np
import torch

from .validation import check_int, check_str

__all__ = ["generator", "stream_seed", "seed_everything", "set_threads", "seeded"]


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream, stable across Python versions and machines."""
    check_int("seed", seed, 0)
    check_str("stream", stream)
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, stream: str) -> torch.Generator:
    """A fresh CPU generator for one named random stream of a run."""
    return torch.Generator(device="cpu").manual_seed(stream_seed(seed, stream))


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads explicitly (0 means one per available core); return the count."""
    check_int("threads (0 = all cores)", threads, 0)
    count = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(count)
    return count


def seed_everything(seed: int, threads: int = 0) -> int:
    """Seed the global RNGs (python, numpy, torch) and set threads; return the thread count.

    The package itself draws only from `generator` streams; seeding the globals protects user
    code in notebooks. Deterministic algorithms are requested where torch has them (warn-only, so
    CUDA kernels without a deterministic version still run).
    """
    random.seed(stream_seed(seed, "python"))
    np.random.seed(stream_seed(seed, "numpy") % 2**32)
    torch.manual_seed(stream_seed(seed, "torch"))
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return set_threads(threads)


@contextmanager
def seeded(seed: int, stream: str):
    """Run a block (e.g. torch.nn module construction, which draws from the global RNG) with the
    global torch RNG seeded for one stream, restoring the outer RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, stream))
        yield
