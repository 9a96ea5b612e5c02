"""The sharpness page's study: one problem, several seeds and orders, probed by `sharpness`.

`SharpnessExperiment` is the page's frozen config: a `TrajectoryConfig` (seed and order set per
run), the seeds, a `Probe` and the orders; `SharpnessExperiment.run` probes every (seed, order)
with `sharpness.run_probes`, each cached on its own. From those results:

* `tail_sharpness` — where each order settles: the median λ_max in the last ``tail`` of training,
  against 2/h and against the reference order;
* `intervals`, `coincidence_table` — per interval between probes, the leading eigenvector's rotation
  and the loss spike or jump, and their rank correlations (``scipy.stats.spearmanr``: rank-based,
  because loss jumps are heavy-tailed and a handful of spikes would dominate a Pearson correlation);
* `plot_sharpness`, `plot_coincidence` — the page's figures.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter
from scipy.stats import spearmanr

from ..orders import as_order
from .plots import ORDER_COLOURS
from ..sharpness import Probe, SharpnessRun, run_probes
from ..trajectory import Runtime, TrajectoryConfig
from ..validation import check_int, check_list, check_number

__all__ = ["SharpnessExperiment", "tail_sharpness", "intervals", "coincidence_table",
           "plot_sharpness", "plot_coincidence"]

MIN_PAIRS = 5  # fewest intervals a rank correlation is computed on


# ------------------------------------------------------------------------------------------------
# An experiment: one problem, several seeds, forward and backward
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SharpnessExperiment:
    trajectory: TrajectoryConfig  # the problem; seed and order are set per run
    seeds: tuple[int, ...]
    probe: Probe
    orders: tuple[str, ...] = ("forward", "backward")  # the first is the reference
    tail: float = 0.25  # "where training settles": probes in the last quarter of the steps
    # The first intervals from θ_0 hold the initial fall of the loss, when both orders leave the
    # initial point and the Hessian reorganises; they would dominate the rank correlations.
    skip_intervals: int = 1

    def __post_init__(self):
        if not isinstance(self.trajectory, TrajectoryConfig):
            raise ValueError(f"trajectory must be a TrajectoryConfig (TrajectoryConfig.from_fields "
                             f"builds one from a dict); got {self.trajectory!r}")
        if not isinstance(self.probe, Probe):
            raise ValueError(f"probe must be a Probe; got {self.probe!r}")
        object.__setattr__(self, "seeds", check_list("seeds", self.seeds, [0, 1]))
        orders = check_list("orders", self.orders, ["forward", "backward"])
        object.__setattr__(self, "orders", tuple(as_order(o).spec() for o in orders))
        if not self.seeds:
            raise ValueError("a sharpness experiment needs at least one seed; got seeds=[]")
        check_number("tail", self.tail, 0, 1, low_open=True)
        check_int("skip_intervals", self.skip_intervals, 0)
        self.runs()  # validates every run once, here

    def run_for(self, seed: int, order: str) -> SharpnessRun:
        return SharpnessRun(self.trajectory.replace(seed=seed, order=order), self.probe)

    def runs(self) -> list[SharpnessRun]:
        return [self.run_for(s, o) for s in self.seeds for o in self.orders]

    def run(self, runtime: Runtime = Runtime(), jobs: int = 1) -> dict[tuple[int, str], dict]:
        """Every (seed, order) result, cached one by one; ``jobs`` single-thread processes."""
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1; got {jobs!r}")
        runs = self.runs()
        if jobs == 1:
            results = [run_probes(r, runtime) for r in runs]
        else:  # spawn, not fork: torch's thread pools are not fork-safe
            worker = dataclasses.replace(runtime, threads=runtime.threads or 1, progress=False)
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                results = list(pool.map(run_probes, runs, [worker] * len(runs)))
        return {(r.trajectory.seed, r.trajectory.order): res for r, res in zip(runs, results)}


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------

def _tail_mask(result: dict, tail: float) -> np.ndarray:
    steps = np.asarray(result["steps"])
    return steps >= (1 - tail) * result["config"]["trajectory"]["steps"]


def tail_sharpness(experiment: SharpnessExperiment, results: dict) -> pd.DataFrame:
    """Per seed and order: the median λ_max over the probes of the tail window, that median as a
    fraction of 2/h, and the ratio to the reference order's median (below 1 = flatter)."""
    reference = experiment.orders[0]
    keys = [(seed, order) for seed in experiment.seeds for order in experiment.orders]
    masks = {key: _tail_mask(results[key], experiment.tail) for key in keys}
    medians = {key: float(np.median(np.asarray(results[key]["sharpness"])[masks[key]]))
               for key in keys}
    rows = []
    for seed, order in keys:
        r, mask, median = results[(seed, order)], masks[(seed, order)], medians[(seed, order)]
        rows.append({"seed": seed, "order": order, "tail probes": int(mask.sum()),
                     "λ_max at step 0": r["sharpness"][0],
                     "tail median λ_max": median,
                     "λ_max / (2/h)": median / r["threshold"],
                     "ratio to " + reference: median / medians[(seed, reference)],
                     "tail median probe loss": float(np.median(np.asarray(r["probe_loss"])[mask]))})
    return pd.DataFrame(rows).set_index(["seed", "order"])


def intervals(result: dict) -> pd.DataFrame:
    """One row per interval (t, t+k] between consecutive probes.

    * ``rotation`` = 1 − |⟨v_t, v_{t+k}⟩| of the leading eigenvectors, ``subspace rotation`` the
      same with v_t projected on the whole top-``eigenpairs`` subspace at t+k;
    * ``jump`` = log(L(t+k) / L(t)) of the probe-batch loss at the probes;
    * ``spike`` = log(max L over the recorded curve in (t, t+k] / L(t)): the worst excursion between
      the probes (forward only; NaN where the order records no curve between probes).
    """
    steps, loss = result["steps"], result["probe_loss"]
    curve = pd.Series(result["curve_loss"], index=result["curve_steps"], dtype=float)
    between = len(curve) > len(steps)
    rows = []
    for j in range(1, len(steps)):
        t0, t1 = steps[j - 1], steps[j]
        inside = curve[(curve.index > t0) & (curve.index <= t1)]
        rows.append({"start": t0, "end": t1,
                     "rotation": 1 - result["overlap"][j],
                     "subspace rotation": 1 - result["subspace_overlap"][j],
                     "jump": math.log(loss[j] / loss[j - 1]),
                     "spike": math.log(inside.max() / loss[j - 1]) if between else math.nan})
    return pd.DataFrame(rows)


def _spearman(x, y) -> tuple[float, float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    # Below 5 pairs the smallest exact two-sided p-value is 1/12 or more, and scipy's
    # t-approximation reports p = 0 for a perfect ρ on 3 points: no test at all is more honest.
    if keep.sum() < MIN_PAIRS or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return math.nan, math.nan
    test = spearmanr(x[keep], y[keep])
    return float(test.statistic), float(test.pvalue)


def coincidence_table(experiment: SharpnessExperiment, results: dict) -> pd.DataFrame:
    """Per order, per seed and pooled over seeds: Spearman's ρ (and its p-value) between the
    rotation 1 − overlap and the loss spike between probes (where recorded) or the jump at them,
    over the intervals after the first ``experiment.skip_intervals``. ρ of each with the interval's
    start step is given too: two quantities that both drift with training time are correlated
    with each other whether or not one causes the other."""
    rows = []
    for order in experiment.orders:
        tables = {seed: intervals(results[(seed, order)]).iloc[experiment.skip_intervals:]
                  for seed in experiment.seeds}
        tables["all"] = pd.concat(tables.values(), ignore_index=True)
        for seed, t in tables.items():
            rho_spike, p_spike = _spearman(t["rotation"], t["spike"])
            rho_jump, p_jump = _spearman(t["rotation"], t["jump"])
            rows.append({"order": order, "seed": seed, "intervals": len(t),
                         "median rotation": float(t["rotation"].median()),
                         "max rotation": float(t["rotation"].max()),
                         "median spike": float(t["spike"].median()),
                         "ρ(rotation, spike)": rho_spike, "p spike": p_spike,
                         "ρ(rotation, jump)": rho_jump, "p jump": p_jump,
                         "ρ(step, rotation)": _spearman(t["start"], t["rotation"])[0],
                         "ρ(step, spike)": _spearman(t["start"], t["spike"])[0]})
    return pd.DataFrame(rows).set_index(["order", "seed"])


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def _colour(order: str):
    return ORDER_COLOURS[order.split(":")[0]]


def _plain_log_ticks(ax, extra=()) -> None:
    """A log-scaled y axis with a few ticks labelled 0.002, 40, ... (not 2×10⁻³, 4×10¹): 1, 2, 5
    per decade over short ranges, powers of ten over long ones, plus the values in ``extra``."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    subs = (1, 2, 5) if math.log10(high / low) <= 2 else (1,)
    nice = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
            for m in subs]
    low = max([t for t in nice if t <= low], default=low)  # start at a labelled value
    ticks = sorted({t for t in nice if low <= t <= high} | set(extra))
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low, high)


def plot_sharpness(experiment: SharpnessExperiment, results: dict, title: str = ""):
    """One row per seed: λ_max against 2/h, the probe-batch loss, and the eigenvector rotation."""
    seeds, orders = experiment.seeds, experiment.orders
    fig, axes = plt.subplots(len(seeds), 3, figsize=(11, 2.6 * len(seeds) + 0.6), squeeze=False,
                             sharex=True)
    for row, seed in enumerate(seeds):
        ax_s, ax_l, ax_r = axes[row]
        for order in orders:
            r, colour = results[(seed, order)], _colour(order)
            ax_s.plot(r["steps"], r["sharpness"], "o-", ms=3, lw=1, color=colour, label=order)
            if len(r["curve_steps"]) > len(r["steps"]):
                ax_l.plot(r["curve_steps"], r["curve_loss"], lw=0.6, color=colour, alpha=0.6)
            ax_l.plot(r["steps"], r["probe_loss"], "o", ms=3, color=colour)
            ax_r.plot(r["steps"][1:], [1 - o for o in r["overlap"][1:]], "o-", ms=3, lw=1,
                      color=colour)
        threshold = results[(seed, orders[0])]["threshold"]
        ax_s.axhline(threshold, color="grey", ls="--", lw=0.8, label="2/h")
        ax_s.set_yscale("log")  # before the limit, so the autoscaled bottom is a log-scale one
        ax_s.set_ylim(top=1.25 * threshold)
        _plain_log_ticks(ax_s, extra=[threshold])
        _plain_log_ticks(ax_l)
        ax_r.set_ylim(-0.03, 1.03)
        ax_s.set_ylabel(f"seed {seed}")
        ax_s.set_title("sharpness λ_max (log)", fontsize=9)
        ax_l.set_title("loss on the probe batch (log)", fontsize=9)
        ax_r.set_title("rotation 1 − |⟨v_t, v_{t+k}⟩|", fontsize=9)
        for ax in axes[row]:
            ax.tick_params(labelsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1.0), title=title or None)
    band = 0.6 if title else 0.35  # inches kept free for the legend
    fig.tight_layout(rect=(0, 0, 1, 1 - band / fig.get_figheight()))
    return fig


def plot_coincidence(experiment: SharpnessExperiment, results: dict, title: str = ""):
    """Per order, every interval between probes: eigenvector rotation against the loss spike
    (forward, between probes) or the loss jump (orders without a curve between probes)."""
    orders = experiment.orders
    fig, axes = plt.subplots(1, len(orders), figsize=(4.2 * len(orders), 3.4), squeeze=False)
    skip = experiment.skip_intervals
    for ax, order in zip(axes[0], orders):
        per_seed = [intervals(results[(s, order)]) for s in experiment.seeds]
        table = pd.concat([t.iloc[skip:] for t in per_seed])
        first = pd.concat([t.iloc[:skip] for t in per_seed])
        column = "spike" if table["spike"].notna().any() else "jump"
        ax.scatter(table["rotation"], table[column], s=14, color=_colour(order), alpha=0.8,
                   label="intervals in ρ")
        if skip:
            ax.scatter(first["rotation"], first[column], s=18, facecolors="none",
                       edgecolors=_colour(order), label="first interval of each seed (not in ρ)"
                       if skip == 1 else f"first {skip} intervals of each seed (not in ρ)")
            ax.legend(fontsize=7, loc="best")
        ax.axhline(0, color="grey", lw=0.6)
        # symlog: rank statistics ignore scale, and most rotations are far below 0.01
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlim(-1e-4, 1.5)
        ax.set_xlabel("rotation 1 − |⟨v_t, v_{t+k}⟩| (symlog)")
        ax.set_ylabel("log max loss in (t, t+k] / loss at t" if column == "spike"
                      else "log loss at t+k / loss at t")
        ax.set_title(f"{order}: {len(table) + len(first)} intervals, {len(experiment.seeds)} seed(s)",
                     fontsize=9)
        ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
