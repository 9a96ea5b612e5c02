"""Stability statistics of recorded curves, defined once and used by every page.

A comparison of two orders of one seed (forward and another) uses only the steps *both* orders
recorded inside the tail window (the last ``tail`` fraction of training, steps n ≥ (1 − tail)·N),
so that a densely recorded forward curve is not compared with a sparsely recorded backward one.

**Fluctuation** is measured on the curve's own scale: the natural logarithm of a loss (losses span
orders of magnitude and the figures plot them on a log scale, so a fluctuation is a *relative*
one), the accuracy itself. With y_k that value at the k-th shared tail step n_k:

* ``spread`` — the primary statistic: the residual standard deviation of y about its least-squares
  polynomial of degree ``TREND_DEGREE`` = 2 in the step, √(Σ r_k² / (K − 3)) over the K shared
  tail steps. The quadratic removes the smooth descent (or rise) that still runs through the tail
  window, curvature included, and nothing faster: three parameters against at least 30 steps, so
  step-to-step noise stays in the residuals, and for white noise of standard deviation σ the
  spread estimates σ without bias in its square. For a loss it is a relative size (0.05: the
  loss is typically 5% off its trend). A plain standard deviation over the window is not used,
  because on a curve still descending it mostly measures the descent (``tail_std``, kept as the
  naive reference the tests compare with);
* ``tv`` — the secondary statistic: total variation per step of training covered,
  Σ|y_{k+1} − y_k| / (n_K − n_1): how much the curve moves back and forth. A monotone trend adds
  only its net change, |y_K − y_1| / (n_K − n_1), which is small when the window's descent is
  small against the noise. Its size depends on the spacing of the shared steps, which both
  orders share, so only its ratio is compared.

Both are undefined (NaN) on fewer than ``MIN_TAIL_STEPS`` = 30 shared tail steps: the spread's
relative sampling error is about 1/√(2(K − 3)), 14% per curve and about 19% on a ratio of two at
K = 30, but 41% and 58% at K = 6, where a quadratic also leaves three degrees of freedom for the
noise. `fluctuation_undefined` says why in words.

**Level**, per curve and order:

* ``median`` — the typical level of the (untransformed) curve in the window, robust to spikes;
* ``final`` — the value at the last step (every recording includes it).

And per order on its own:

* ``displacement decay`` — median of ‖θ_n − θ_prev‖ (the distance between consecutive recorded
  iterates) over the last quarter of training divided by the same median over the second quarter.
  Each order is compared with itself, so the recording period cancels: a trajectory that converges
  to a point has a decay well below 1 (its steps shrink), one that wanders in a stationary
  distribution has a decay near 1 (its steps keep their size) — Theorem 2.2 against Theorem 2.6.

**Divergence.** A run that produced a NaN or infinite loss stopped there (its result's
``diverged_at`` is that step). A pair of runs with a diverged one has every statistic NaN, and the
row names the order and step (``diverged``), so that divergence is shown, never averaged away.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import Polynomial

__all__ = ["MIN_TAIL_STEPS", "TREND_DEGREE", "LOG_CURVES", "common_tail", "curve_values",
           "detrended_spread", "total_variation", "tail_std", "tail_median",
           "fluctuation_undefined", "diverged_at", "displacement_decay", "final_value",
           "stability_row", "ratio", "GLOSSARY"]

MIN_TAIL_STEPS = 30  # fewest shared tail steps on which a fluctuation statistic is defined
TREND_DEGREE = 2     # degree of the polynomial trend the spread is measured about
LOG_CURVES = ("train_loss", "test_loss")  # curves whose fluctuation is measured on a log scale

# what each statistic of a `stability_row` column means, with its unit (for the pages' tables)
GLOSSARY = {
    "tail steps": "steps both orders recorded in the tail window (count)",
    "diverged": "which run of the pair diverged, and at which step ('' if none)",
    "undefined because": "why the fluctuation statistics are NaN ('' if they are defined)",
    "spread": "residual standard deviation about a quadratic trend over the tail window, of "
              "ln(loss) (dimensionless: a relative size) or of the accuracy (fraction)",
    "tv": "total variation per step of training of ln(loss) or of the accuracy, over the tail "
          "window (per step)",
    "ratio": "other order / forward (below 1: the other order has less)",
    "median": "median of the curve over the tail window (loss, or accuracy as a fraction)",
    "final": "value at the last step (accuracy as a fraction)",
    "displacement decay": "median move between consecutive recorded iterates, last quarter of "
                          "training over second quarter (dimensionless)",
}


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


def curve_values(result: dict, key: str, steps: list[int]) -> np.ndarray:
    """A curve at the given steps on the scale its fluctuation is measured on: ln of a loss
    (NaN where the loss is not positive), the accuracy itself."""
    values = _values(result, key, steps)
    if key in LOG_CURVES:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), math.nan)
    return values


def _fluctuation_input(result, key, steps, min_steps):
    """The curve's values for a fluctuation statistic, or None where it is undefined."""
    if len(steps) < min_steps:
        return None
    values = curve_values(result, key, steps)
    if len(values) != len(steps) or len(values) < TREND_DEGREE + 2 \
            or not np.isfinite(values).all():
        return None
    return values


def detrended_spread(result: dict, key: str, steps: list[int],
                     min_steps: int = MIN_TAIL_STEPS) -> float:
    """Residual standard deviation of the curve (ln for a loss) about its least-squares quadratic
    in the step, with K − 3 degrees of freedom; NaN on fewer than ``min_steps`` steps or where the
    curve is not finite."""
    values = _fluctuation_input(result, key, steps, min_steps)
    if values is None:
        return math.nan
    x = np.asarray(steps, dtype=float)
    # Polynomial.fit maps the steps onto [-1, 1] first, so the fit is well conditioned
    residuals = values - Polynomial.fit(x, values, TREND_DEGREE)(x)
    return float(np.sqrt((residuals ** 2).sum() / (len(values) - TREND_DEGREE - 1)))


def total_variation(result: dict, key: str, steps: list[int],
                    min_steps: int = MIN_TAIL_STEPS) -> float:
    """Sum of absolute changes of the curve (ln for a loss) between consecutive given steps, per
    step of training covered; NaN on fewer than ``min_steps`` steps or where it is not finite."""
    values = _fluctuation_input(result, key, steps, min_steps)
    if values is None:
        return math.nan
    return float(np.abs(np.diff(values)).sum() / (steps[-1] - steps[0]))


def tail_std(result: dict, key: str, steps: list[int]) -> float:
    """Plain standard deviation of the untransformed curve over the given steps (NaN if fewer than
    two). Not a page statistic: on a descending curve it measures the descent as much as the
    fluctuation; kept as the reference the spread is tested against."""
    values = _values(result, key, steps)
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def tail_median(result: dict, key: str, steps: list[int]) -> float:
    """The typical level of a curve over the given steps, robust to its spikes."""
    values = _values(result, key, steps)
    return float(np.median(values)) if len(values) else math.nan


def fluctuation_undefined(steps: list[int], min_steps: int = MIN_TAIL_STEPS) -> str:
    """Why the fluctuation statistics cannot be computed on these shared tail steps ('' if they
    can)."""
    if len(steps) < min_steps:
        return (f"only {len(steps)} shared tail step{'s' if len(steps) != 1 else ''}, "
                f"{min_steps} needed")
    return ""


def diverged_at(result: dict) -> int | None:
    """The step at which a run diverged (its loss became NaN or infinite), or None."""
    return result.get("diverged_at")


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


def stability_row(forward: dict, other: dict, tail: float = 0.25,
                  min_steps: int = MIN_TAIL_STEPS) -> dict:
    """The per-seed comparison printed under each figure (see the module docstring).

    Columns: ``tail steps``; ``diverged`` (e.g. 'forward at step 40', '' if neither run did) and
    ``diverged fwd`` / ``diverged other`` (the step, NaN if that run did not diverge);
    ``undefined because`` (why the fluctuation statistics are NaN, '' if they are defined); per
    curve (train loss, test loss, and test accuracy for a classification) its ``spread`` and
    ``tv`` for both orders (``fwd``, ``other``) and their ``ratio`` other/forward; the train-loss
    (and test-accuracy) tail median, the final test accuracy and each order's displacement decay.
    Where a run diverged, every statistic is NaN.
    """
    steps = common_tail(forward, other, tail)
    classification = forward["test_acc"][-1] is not None or other["test_acc"][-1] is not None
    stops = {name: diverged_at(result) for name, result in (("fwd", forward), ("other", other))}
    diverged = ", ".join(f"{result['config']['order']} at step {stops[name]}"
                         for name, result in (("fwd", forward), ("other", other))
                         if stops[name] is not None)
    row: dict = {"tail steps": len(steps), "diverged": diverged,
                 "diverged fwd": math.nan if stops["fwd"] is None else float(stops["fwd"]),
                 "diverged other": math.nan if stops["other"] is None else float(stops["other"]),
                 "undefined because": "diverged" if diverged
                 else fluctuation_undefined(steps, min_steps)}

    def both(statistic, key=None):
        """The statistic of each order, or NaN for both where a run of the pair diverged."""
        if diverged:
            return math.nan, math.nan
        args = (key,) if key else ()
        return statistic(forward, *args), statistic(other, *args)

    curves = ("train_loss", "test_loss") + (("test_acc",) if classification else ())
    for key in curves:
        for name, statistic in (("spread", detrended_spread), ("tv", total_variation)):
            f, o = both(lambda result, k: statistic(result, k, steps, min_steps), key)
            row[f"{key} {name} fwd"], row[f"{key} {name} other"] = f, o
            row[f"{key} {name} ratio"] = ratio(o, f)
    levels = [("train_loss median", lambda r: tail_median(r, "train_loss", steps))]
    if classification:
        levels += [("test_acc median", lambda r: tail_median(r, "test_acc", steps)),
                   ("test_acc final", lambda r: final_value(r, "test_acc"))]
    levels += [("displacement decay", displacement_decay)]
    for label, statistic in levels:
        row[f"{label} fwd"], row[f"{label} other"] = both(statistic)
    return row
