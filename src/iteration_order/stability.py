"""Stability statistics of recorded curves, defined once and used by every page.

A comparison of two orders of one seed (forward and another) uses only the steps *both* orders
recorded inside the tail window (the last ``tail`` fraction of training), so that a densely recorded
forward curve is not compared with a sparsely recorded backward one. Per curve and order:

* ``std`` — standard deviation over those steps: how much the curve fluctuates;
* ``tv`` — total variation per step of training covered, Σ|y_{k+1} − y_k| / (n_last − n_first):
  how much it moves back and forth (a smooth descent has a small one, a jagged curve a large one);
* ``median`` — its typical level in the window, robust to spikes.

And per order on its own:

* ``displacement decay`` — median of ‖θ_n − θ_prev‖ (the distance between consecutive recorded
  iterates) over the last quarter of training divided by the same median over the second quarter.
  Each order is compared with itself, so the recording period cancels: a trajectory that converges
  to a point has a decay well below 1 (its steps shrink), one that wanders in a stationary
  distribution has a decay near 1 (its steps keep their size) — Theorem 2.2 against Theorem 2.6;
* ``final`` — the value at the last step (every recording includes it).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["tail_std", "tail_median", "total_variation", "common_tail", "displacement_decay",
           "final_value", "stability_row", "ratio"]


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


def displacement_decay(result: dict, early: tuple[float, float] = (0.25, 0.5),
                       late: tuple[float, float] = (0.75, 1.0)) -> float:
    """Median displacement between consecutive recorded iterates in the ``late`` fraction of
    training over the median in the ``early`` fraction (NaN if a window holds no recorded step,
    or the early median is zero)."""
    steps = np.asarray(result["recorded_steps"])
    moves = np.asarray(result["displacement"], dtype=float)
    total = result["config"]["steps"]

    def median_in(window):
        inside = (steps > window[0] * total) & (steps <= window[1] * total) & (steps > 0)
        return float(np.median(moves[inside])) if inside.any() else math.nan

    before, after = median_in(early), median_in(late)
    return after / before if before > 0 else math.nan


def final_value(result: dict, key: str) -> float:
    """A curve's value at the last recorded step (NaN for a curve the task does not have)."""
    value = result[key][-1]
    return math.nan if value is None else float(value)


def ratio(other: float, forward: float) -> float:
    """other / forward, NaN where forward is zero or either is undefined."""
    return other / forward if forward > 0 and not math.isnan(other) else math.nan


def stability_row(forward: dict, other: dict, tail: float = 0.25) -> dict:
    """The per-seed comparison printed under each figure (see the module docstring): fluctuation
    (std, total variation) of the train loss, test loss and test accuracy in the tail window for
    both orders with their ratio other/forward, typical train-loss (and test-accuracy) level,
    final test accuracy and displacement decay of each order."""
    steps = common_tail(forward, other, tail)
    classification = forward["test_acc"][-1] is not None
    row: dict = {"tail steps": len(steps)}
    curves = ("train_loss", "test_loss") + (("test_acc",) if classification else ())
    for key in curves:
        for name, statistic in (("std", tail_std), ("tv", total_variation)):
            f, o = statistic(forward, key, steps), statistic(other, key, steps)
            row[f"{key} {name} fwd"], row[f"{key} {name} other"] = f, o
            row[f"{key} {name} ratio"] = ratio(o, f)
    for name, result in (("fwd", forward), ("other", other)):
        row[f"train_loss median {name}"] = tail_median(result, "train_loss", steps)
    if classification:
        for name, result in (("fwd", forward), ("other", other)):
            row[f"test_acc median {name}"] = tail_median(result, "test_acc", steps)
        for name, result in (("fwd", forward), ("other", other)):
            row[f"test_acc final {name}"] = final_value(result, "test_acc")
    for name, result in (("fwd", forward), ("other", other)):
        row[f"displacement decay {name}"] = displacement_decay(result)
    return row
