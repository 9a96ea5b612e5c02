"""Stability statistics of recorded curves, defined once and used by every page.

All statistics of a comparison are computed on the steps *both* orders recorded, inside the tail
window (the last ``tail`` fraction of training), so that a densely recorded forward curve is not
compared with a sparsely recorded backward one.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["tail_std", "tail_median", "total_variation", "common_tail", "stability_row"]


def common_tail(a: dict, b: dict, tail: float) -> list[int]:
    """Recorded steps shared by two results, in the last ``tail`` fraction of the run."""
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1]; got {tail!r}")
    steps = a["config"]["steps"]
    start = steps * (1 - tail)
    shared = set(a["recorded_steps"]) & set(b["recorded_steps"])
    return sorted(n for n in shared if n >= start and n > 0)


def _values(result: dict, key: str, steps: list[int]) -> np.ndarray:
    where = {n: i for i, n in enumerate(result["recorded_steps"])}
    return np.array([result[key][where[n]] for n in steps if n in where], dtype=float)


def tail_std(result: dict, key: str, steps: list[int]) -> float:
    """Standard deviation of a curve over the given steps (NaN if fewer than two)."""
    values = _values(result, key, steps)
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def tail_median(result: dict, key: str, steps: list[int]) -> float:
    """The typical level of a curve over the given steps, robust to its spikes."""
    values = _values(result, key, steps)
    return float(np.median(values)) if len(values) else math.nan


def total_variation(result: dict, key: str, steps: list[int]) -> float:
    """Sum of absolute changes between consecutive given steps, per step of training covered."""
    values = _values(result, key, steps)
    if len(values) < 2:
        return math.nan
    return float(np.abs(np.diff(values)).sum() / (steps[-1] - steps[0]))


def stability_row(forward: dict, other: dict, tail: float = 0.25) -> dict:
    """The per-seed comparison printed under each figure: fluctuation (standard deviation) and
    typical level (median) of the curves in the tail window, for forward and the other order."""
    steps = common_tail(forward, other, tail)
    row = {"tail steps": len(steps)}
    for key in ("train_loss", "test_loss"):
        f, o = tail_std(forward, key, steps), tail_std(other, key, steps)
        row[f"{key} std fwd"] = f
        row[f"{key} std other"] = o
        row[f"{key} std ratio"] = o / f if f > 0 else math.nan
    for name, result in (("fwd", forward), ("other", other)):
        row[f"train_loss median {name}"] = tail_median(result, "train_loss", steps)
    for name, result in (("fwd", forward), ("other", other)):
        if result["test_acc"][-1] is not None:
            row[f"test_acc median {name}"] = tail_median(result, "test_acc", steps)
    return row
