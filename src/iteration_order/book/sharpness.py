"""The sharpness page's study: one problem, several seeds and orders, probed by `sharpness`.

`SharpnessExperiment` is the page's frozen config: a `TrajectoryConfig` (seed and order set per
run), the seeds, a `Probe` and the orders; `SharpnessExperiment.run` probes every (seed, order)
with `sharpness.run_probes`, each cached on its own. From those results:

* `tail_sharpness` — where each order settles: the median λ_max in the last ``tail`` of training,
  against 2/h and against the reference order;
* `intervals` — per interval (t, t+k] between consecutive probes, two rotations: the
  *leading-vector rotation* 1 − |⟨v_t, v_{t+k}⟩| and the *subspace rotation* 1 − (1/m) Σ cos² φ_i,
  φ_i the m principal angles between the top-m eigenvector subspaces at t and t+k (m = the probe's
  ``eigenpairs``; `sharpness.subspace_similarity`). Two nearly equal top eigenvalues that trade
  places turn the leading vector by up to 90° and leave the subspace where it was: a
  leading-vector rotation near 1 with a subspace rotation near 0 is such a swap, not a new sharp
  direction. With them, the loss spike or jump of the interval;
* `rotation_table` — per order and seed, the median and range of both rotations;
  `largest_rotations` — per order, the interval of the largest leading-vector rotation;
* `coincidence_table` — their rank correlations with the loss change (``scipy.stats.spearmanr``:
  rank-based, because loss jumps are heavy-tailed and a handful of spikes would dominate a
  Pearson correlation);
* `sharpness_numbers` — the numbers the page's conclusion quotes, by glue key;
* `plot_sharpness`, `plot_coincidence` and their captions — the page's figures.
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

from .numbers import add_ranges, honest, listed, sig
from ..orders import as_order
from .orders import order_key, span
from .plots import ORDER_COLOURS, _colour_name, describe_steps
from ..sharpness import Probe, SharpnessRun, run_probes
from ..trajectory import Runtime, TrajectoryConfig
from ..validation import check_int, check_list, check_number

__all__ = ["SharpnessExperiment", "tail_sharpness", "intervals", "loss_change", "rotation_table",
           "largest_rotations", "coincidence_table", "significant", "sharpness_numbers", "plot_sharpness", "plot_coincidence",
           "sharpness_caption", "coincidence_caption"]

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

    def run(self, jobs: int = 1, runtime: Runtime = Runtime()) -> dict[tuple[int, str], dict]:
        """Every (seed, order) result, cached one by one; ``jobs`` single-thread processes (the
        same signature as every study's ``run``)."""
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
    fraction of 2/h, the ratio to the reference order's median (below 1 = flatter), the largest
    λ_max of any probe of the run as a fraction of 2/h, and the median probe-batch loss of the
    tail window."""
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
                     "tail median λ_max / (2/h)": median / r["threshold"],
                     "ratio to " + reference: median / medians[(seed, reference)],
                     "max λ_max / (2/h)": float(np.nanmax(r["sharpness"])) / r["threshold"],
                     "tail median probe loss": float(np.median(np.asarray(r["probe_loss"])[mask]))})
    return pd.DataFrame(rows).set_index(["seed", "order"])


def intervals(result: dict) -> pd.DataFrame:
    """One row per interval (t, t+k] between consecutive probes.

    * ``rotation`` = 1 − |⟨v_t, v_{t+k}⟩|, the leading-vector rotation;
    * ``subspace rotation`` = 1 − the mean squared cosine of the principal angles between the
      top-``eigenpairs`` eigenvector subspaces at t and t+k (`sharpness.subspace_similarity`);
    * ``leading escape`` = 1 − ‖U_{t+k}ᵀ v_t‖: how much of the old leading vector left the new
      top subspace (0 when it only moved inside it), and ``leading entry`` = 1 − ‖U_tᵀ v_{t+k}‖:
      how much of the new leading vector came from outside the old one. A leading-vector
      rotation near 1 with both near 0 is a reordering inside the top subspace;
    * ``gap`` = the smaller of (λ₁ − λ₂)/λ₁ at t and at t+k: near 0, the two largest eigenvalues
      are nearly equal and may trade places;
    * ``jump`` = log(L(t+k) / L(t)) of the probe-batch loss at the probes;
    * ``spike`` = log(max L over the recorded curve in (t, t+k] / L(t)): the worst excursion between
      the probes (forward only; NaN where the order records no curve between probes).
    """
    steps, loss = result["steps"], result["probe_loss"]
    curve = pd.Series(result["curve_loss"], index=result["curve_steps"], dtype=float)
    between = len(curve) > len(steps)
    gaps = [(v[0] - v[1]) / v[0] if len(v) > 1 else math.nan for v in result["eigenvalues"]]
    rows = []
    for j in range(1, len(steps)):
        t0, t1 = steps[j - 1], steps[j]
        inside = curve[(curve.index > t0) & (curve.index <= t1)]
        rows.append({"start": t0, "end": t1,
                     "rotation": 1 - result["overlap"][j],
                     "subspace rotation": 1 - result["subspace_similarity"][j],
                     "leading escape": 1 - result["subspace_overlap"][j],
                     "leading entry": 1 - result["reverse_subspace_overlap"][j],
                     "gap": min(gaps[j - 1], gaps[j]),
                     "jump": math.log(loss[j] / loss[j - 1]),
                     "spike": math.log(inside.max() / loss[j - 1]) if between else math.nan})
    return pd.DataFrame(rows)


def loss_change(table: pd.DataFrame) -> str:
    """The loss measure of an order's intervals: ``spike`` where a curve was recorded between
    the probes (forward), else ``jump``."""
    return "spike" if table["spike"].notna().any() else "jump"


def _spearman(x, y) -> tuple[float, float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    # Below 5 pairs the smallest exact two-sided p-value is 1/12 or more, and scipy's
    # t-approximation reports p = 0 for a perfect ρ on 3 points: no test at all is more honest.
    if keep.sum() < MIN_PAIRS or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return math.nan, math.nan
    test = spearmanr(x[keep], y[keep])
    return float(test.statistic), float(test.pvalue)


def _kept(experiment: SharpnessExperiment, results: dict, order: str) -> dict:
    """Per seed, and pooled as ``"all"``, the intervals of one order after the first
    ``experiment.skip_intervals``."""
    tables = {seed: intervals(results[(seed, order)]).iloc[experiment.skip_intervals:]
              for seed in experiment.seeds}
    tables["all"] = pd.concat(tables.values(), keys=list(tables), names=["seed", None])
    tables["all"] = tables["all"].reset_index(level=0).reset_index(drop=True)
    return tables


def rotation_table(experiment: SharpnessExperiment, results: dict) -> pd.DataFrame:
    """Per order, per seed and pooled over seeds: the median and the range (min, max) of the
    leading-vector and of the subspace rotation over the intervals after the first
    ``experiment.skip_intervals``."""
    rows = []
    for order in experiment.orders:
        for seed, t in _kept(experiment, results, order).items():
            row = {"order": order, "seed": seed, "intervals": len(t)}
            for column, name in (("rotation", "leading"), ("subspace rotation", "subspace")):
                row |= {f"{name}: median": float(t[column].median()),
                        f"{name}: min": float(t[column].min()),
                        f"{name}: max": float(t[column].max())}
            rows.append(row)
    return pd.DataFrame(rows).set_index(["order", "seed"])


def largest_rotations(experiment: SharpnessExperiment, results: dict) -> pd.DataFrame:
    """Per order, the interval (after the skipped first ones, any seed) where the leading
    eigenvector turned most, with what tells a reordering inside the top subspace from a new
    sharp direction: its subspace rotation, leading escape and entry, the eigenvalue gap and the
    loss change (see `intervals`)."""
    rows = []
    for order in experiment.orders:
        pooled = _kept(experiment, results, order)["all"]
        if not len(pooled):
            continue
        top = pooled.loc[pooled["rotation"].idxmax()]
        change = loss_change(pooled)
        rows.append({"order": order, "seed": int(top["seed"]), "start": int(top["start"]),
                     "end": int(top["end"]), "rotation": float(top["rotation"]),
                     "subspace rotation": float(top["subspace rotation"]),
                     "leading escape": float(top["leading escape"]),
                     "leading entry": float(top["leading entry"]), "gap": float(top["gap"]),
                     "loss change": change, "value": float(top[change])})
    return pd.DataFrame(rows).set_index("order")


def coincidence_table(experiment: SharpnessExperiment, results: dict) -> pd.DataFrame:
    """Per order, per seed and pooled over seeds: Spearman's ρ (and its p-value) between each
    rotation (leading vector, subspace) and the loss change of the interval — the spike between
    probes where recorded, else the jump at them (`loss_change`) — over the intervals after the
    first ``experiment.skip_intervals``. ρ of each with the interval's start step is given too:
    two quantities that both drift with training time are correlated with each other whether or
    not one causes the other. NaN where fewer than `MIN_PAIRS` intervals allow no test."""
    rows = []
    for order in experiment.orders:
        for seed, t in _kept(experiment, results, order).items():
            change = loss_change(t)
            rho_rot, p_rot = _spearman(t["rotation"], t[change])
            rho_sub, p_sub = _spearman(t["subspace rotation"], t[change])
            rows.append({"order": order, "seed": seed, "loss change": change,
                         "intervals": len(t),
                         "median loss change": float(t[change].median()),
                         "ρ(rotation, loss change)": rho_rot, "p (rotation)": p_rot,
                         "ρ(subspace rotation, loss change)": rho_sub, "p (subspace)": p_sub,
                         "ρ(step, rotation)": _spearman(t["start"], t["rotation"])[0],
                         "ρ(step, subspace rotation)": _spearman(t["start"],
                                                                 t["subspace rotation"])[0],
                         "ρ(step, loss change)": _spearman(t["start"], t[change])[0]})
    return pd.DataFrame(rows).set_index(["order", "seed"])


def significant(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table for display, every float as text to ``digits`` significant figures
    (`numbers.sig`): fixed decimals would print a loss of 7e-05 as 0 and a sharpness of 380.8
    with useless digits, and a float column would show 0.5 as "0.500000"; 'n/a' where undefined.
    Other columns are kept."""
    check_int("digits", digits, 1)
    return table.apply(lambda column: column.map(lambda v: sig(v, digits))
                       if column.dtype == float else column)


# ------------------------------------------------------------------------------------------------
# The numbers the page's conclusion quotes
# ------------------------------------------------------------------------------------------------

_listed = listed


def _rho_text(rho: float, p: float, n: int, seeds: int, per_seed: list[float],
              per_seed_n: list[int]) -> str:
    """A pooled rank correlation in words, with the per-seed range, or why it is not tested."""
    pooled = (f"ρ = {rho:.2f} (p = {p:.2g}) over {n} intervals pooled from {seeds} seed"
              f"{'s' if seeds != 1 else ''}" if rho == rho else
              f"not tested pooled ({n} interval{'s' if n != 1 else ''}; a rank correlation needs "
              f"at least {MIN_PAIRS})")
    low, high = span(per_seed)
    if seeds == 1:
        return pooled
    if low == low:
        return pooled + f"; per seed {low:.2f} to {high:.2f}"
    counts = _listed(sorted(set(per_seed_n)))
    return pooled + (f"; not tested per seed ({counts} intervals each, fewer than {MIN_PAIRS})")


def sharpness_numbers(experiment: SharpnessExperiment, results: dict, prefix: str) -> dict:
    """Every number (and phrase holding numbers) the page's conclusion quotes about one problem,
    by glue key ``<prefix>_<name>``.

    Settings: ``steps``, ``lr``, ``batch_size``, ``threshold`` (2/h), ``every`` (probe spacing k),
    ``probes`` (per run), ``tail_probes`` (per run, in the last ``tail`` of training),
    ``tail_start``, ``seeds_n``, ``probe_rows``, ``eigenpairs``.
    Sharpness: ``tail_frac_min``/``max`` — the range over runs of the tail-median λ_max / (2/h);
    ``peak_frac`` and ``peak_where`` — the largest λ_max / (2/h) of any probe and where;
    per non-reference order ``<order>_ratio_min``/``max``, ``_ratios`` (per seed, in words),
    ``_flatter_k`` (seeds where its tail median is below the reference's).
    Per order (``<order>_``): ``intervals`` (per seed, after the skipped first ones),
    ``rot_med_min``/``max`` and ``sub_med_min``/``max`` — the range over seeds of the per-seed
    median leading-vector and subspace rotation; ``rot_med``/``sub_med`` pooled medians;
    ``rot_max``, ``sub_max`` — the largest over the pooled intervals; ``rot_max_where``, and at that
    interval ``rot_max_sub`` (its subspace rotation), ``rot_max_escape``, ``rot_max_entry`` (see
    `intervals`), ``rot_max_gap`` (the
    smaller relative gap (λ₁−λ₂)/λ₁ of its two probes) and ``rot_max_change`` (its loss change);
    ``first_rot_min``/``max`` and ``first_sub_min``/``max`` over the skipped first intervals;
    ``change`` (spike or jump) and ``change_med_min``/``max`` over seeds' medians;
    ``rho_rot_text``, ``rho_sub_text`` (rank correlations with the loss change, in words),
    ``rho_step_rot``, ``rho_step_sub``, ``rho_step_change`` (pooled ρ with the start step);
    and for non-reference orders ``rot_med_vs_ref``, ``sub_med_vs_ref``: pooled median over the
    reference order's.
    """
    # the tables over all orders are computed once; each order's keys follow in order
    n = _probe_settings(experiment, results)
    n.update(_settle_numbers(experiment, results))
    tables = (rotation_table(experiment, results), coincidence_table(experiment, results),
              largest_rotations(experiment, results))
    per_order = {order: _order_numbers(experiment, results, order, *tables)
                 for order in experiment.orders}
    for numbers in per_order.values():
        n.update(numbers)
    n.update(_against_reference(experiment, per_order))
    add_ranges(n, _reference)
    return {f"{prefix}_{k}": v for k, v in n.items()}


def _probe_settings(experiment: SharpnessExperiment, results: dict) -> dict:
    """The run's and the probe's settings, read from the first run of the reference order (the
    probe's steps and rows are the same for every run)."""
    any_run = results[(experiment.seeds[0], experiment.orders[0])]
    config = experiment.trajectory
    return {"steps": config.steps, "lr": config.lr, "batch_size": config.batch_size,
            "threshold": any_run["threshold"], "every": experiment.probe.every,
            "probes": len(any_run["steps"]),
            "tail_probes": int(_tail_mask(any_run, experiment.tail).sum()),
            "tail_start": math.ceil((1 - experiment.tail) * config.steps),
            "seeds_n": len(experiment.seeds), "probe_rows": any_run["probe_rows"],
            "eigenpairs": experiment.probe.eigenpairs}


def _settle_numbers(experiment: SharpnessExperiment, results: dict) -> dict:
    """Where the sharpness settles against 2/h (`tail_sharpness`), its largest value of any probe
    and where, and per non-reference order its tail median over the reference's, seed by seed."""
    reference = experiment.orders[0]
    n: dict = {}
    settle = tail_sharpness(experiment, results)
    n["tail_frac_min"], n["tail_frac_max"] = span(settle["tail median λ_max / (2/h)"])
    peaks = [(value / results[key]["threshold"], step, *key) for key in settle.index
             for step, value in zip(results[key]["steps"], results[key]["sharpness"])
             if value == value]
    frac, step, seed, order = max(peaks)
    n["peak_frac"] = frac
    n["peak_where"] = (f"at initialisation, seed {seed}" if step == 0 else
                       f"{order}, seed {seed}, step {step}")
    for order in experiment.orders[1:]:
        key = order_key(order)
        ratios = settle.xs(order, level="order")[f"ratio to {reference}"]
        n[f"{key}_ratio_min"], n[f"{key}_ratio_max"] = span(ratios)
        n[f"{key}_ratios"] = _listed(honest(v, 1.0) for v in ratios)
        n[f"{key}_flatter_k"] = int((ratios < 1).sum())
    return n


def _order_numbers(experiment: SharpnessExperiment, results: dict, order: str,
                   rotations: pd.DataFrame, rho: pd.DataFrame, largest: pd.DataFrame) -> dict:
    """One order's keys (``<order>_``): its rotations, its largest rotation, the skipped first
    intervals, and the rank correlations with its loss change. ``rotations``, ``rho`` and
    ``largest`` are `rotation_table`, `coincidence_table` and `largest_rotations`."""
    key, pooled = order_key(order), _kept(experiment, results, order)["all"]
    n = _rotation_numbers(key, rotations.xs(order, level="order").drop(index="all"), pooled)
    if order in largest.index:
        n.update(_largest_numbers(key, largest.loc[order]))
    first = pd.concat([intervals(results[(s, order)]).iloc[:experiment.skip_intervals]
                       for s in experiment.seeds])
    n[f"{key}_first_rot_min"], n[f"{key}_first_rot_max"] = span(first["rotation"])
    n[f"{key}_first_sub_min"], n[f"{key}_first_sub_max"] = span(first["subspace rotation"])
    n.update(_change_numbers(key, rho.xs(order, level="order"), loss_change(pooled),
                             len(experiment.seeds)))
    return n


def _rotation_numbers(key: str, per_seed: pd.DataFrame, pooled: pd.DataFrame) -> dict:
    """Both rotations of one order: the range over seeds of their per-seed medians
    (``per_seed``: its rows of `rotation_table`), and their median and largest value over the
    ``pooled`` intervals of all seeds."""
    n = {f"{key}_intervals": int(per_seed["intervals"].max())}
    for short, name, column in (("rot", "leading", "rotation"),
                                ("sub", "subspace", "subspace rotation")):
        n[f"{key}_{short}_med_min"], n[f"{key}_{short}_med_max"] = span(
            per_seed[f"{name}: median"])
        n[f"{key}_{short}_med"] = float(pooled[column].median())
        n[f"{key}_{short}_max"] = float(pooled[column].max())
    return n


def _largest_numbers(key: str, top: pd.Series) -> dict:
    """The interval of an order's largest leading-vector rotation (its row of
    `largest_rotations`), with what tells a swap inside the top subspace from a new direction."""
    return {f"{key}_rot_max_where": (f"seed {int(top['seed'])}, steps {int(top['start'])}–"
                                     f"{int(top['end'])}"),
            f"{key}_rot_max_sub": float(top["subspace rotation"]),
            f"{key}_rot_max_escape": float(top["leading escape"]),
            f"{key}_rot_max_entry": float(top["leading entry"]),
            f"{key}_rot_max_gap": float(top["gap"]),
            f"{key}_rot_max_change": float(top["value"])}


def _change_numbers(key: str, rows: pd.DataFrame, change: str, seeds: int) -> dict:
    """An order's loss change (spike or jump) and its rank correlations with the rotations and
    the step, pooled and per seed (``rows``: its rows of `coincidence_table`)."""
    seeds_rows = rows.drop(index="all")
    n = {f"{key}_change": change}
    n[f"{key}_change_med_min"], n[f"{key}_change_med_max"] = span(
        seeds_rows["median loss change"])
    everything = rows.loc["all"]
    for short, column, p_column in (("rot", "ρ(rotation, loss change)", "p (rotation)"),
                                    ("sub", "ρ(subspace rotation, loss change)",
                                     "p (subspace)")):
        n[f"{key}_rho_{short}_text"] = _rho_text(
            everything[column], everything[p_column], int(everything["intervals"]),
            seeds, list(seeds_rows[column]), [int(v) for v in seeds_rows["intervals"]])
    n[f"{key}_rho_step_rot"] = float(everything["ρ(step, rotation)"])
    n[f"{key}_rho_step_sub"] = float(everything["ρ(step, subspace rotation)"])
    n[f"{key}_rho_step_change"] = float(everything["ρ(step, loss change)"])
    return n


def _against_reference(experiment: SharpnessExperiment, per_order: dict) -> dict:
    """Per non-reference order, its pooled median rotations over the reference order's
    (``per_order``: each order's `_order_numbers`)."""
    reference = experiment.orders[0]
    n: dict = {}
    for order in experiment.orders[1:]:
        for short in ("rot", "sub"):
            n[f"{order_key(order)}_{short}_med_vs_ref"] = (
                per_order[order][f"{order_key(order)}_{short}_med"]
                / per_order[reference][f"{order_key(reference)}_{short}_med"])
    return n


def _reference(prefix: str) -> float | None:
    """Sharpness fractions of 2/h and ratios are compared with 1, rank correlations with 0."""
    if prefix.startswith("tail_frac") or prefix.endswith("_ratio"):
        return 1.0
    return 0.0 if "rho" in prefix else None

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
    """One row per seed: λ_max against 2/h, the probe-batch loss, and the rotations between
    probes (leading vector solid, top-``eigenpairs`` subspace dashed)."""
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
            ax_r.plot(r["steps"][1:], [1 - o for o in r["subspace_similarity"][1:]], "s--",
                      ms=3, lw=1, color=colour, mfc="none")
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
        ax_r.set_title(f"rotation since the previous probe:\nleading vector (solid), "
                       f"top-{experiment.probe.eigenpairs} subspace (dashed)", fontsize=9)
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
    """Per order (columns), every interval between probes: the leading-vector rotation (top row)
    and the subspace rotation (bottom row) against the loss spike (forward, between probes) or
    the loss jump (orders without a curve between probes)."""
    orders = experiment.orders
    fig, axes = plt.subplots(2, len(orders), figsize=(4.2 * len(orders), 6.4), squeeze=False,
                             sharey="col")
    skip = experiment.skip_intervals
    for col, order in enumerate(orders):
        per_seed = [intervals(results[(s, order)]) for s in experiment.seeds]
        table = pd.concat([t.iloc[skip:] for t in per_seed])
        first = pd.concat([t.iloc[:skip] for t in per_seed])
        column = loss_change(table) if len(table) else loss_change(first)
        for row, (rotation, label) in enumerate(
                (("rotation", "leading-vector rotation 1 − |⟨v_t, v_{t+k}⟩|"),
                 ("subspace rotation", f"top-{experiment.probe.eigenpairs} subspace rotation"))):
            ax = axes[row][col]
            ax.scatter(table[rotation], table[column], s=14, color=_colour(order), alpha=0.8,
                       label="intervals in ρ")
            if skip:
                ax.scatter(first[rotation], first[column], s=18, facecolors="none",
                           edgecolors=_colour(order), label="first interval of each seed (not in ρ)"
                           if skip == 1 else f"first {skip} intervals of each seed (not in ρ)")
                ax.legend(fontsize=7, loc="best")
            ax.axhline(0, color="grey", lw=0.6)
            # symlog: rank statistics ignore scale, and most rotations are far below 0.01
            ax.set_xscale("symlog", linthresh=1e-3)
            ax.set_xlim(-1e-4, 1.5)
            ax.set_xlabel(f"{label} (symlog)", fontsize=8)
            ax.set_ylabel("log max loss in (t, t+k] / loss at t" if column == "spike"
                          else "log loss at t+k / loss at t", fontsize=8)
            ax.set_title(f"{order}: {len(table) + len(first)} intervals, "
                         f"{len(experiment.seeds)} seed(s)", fontsize=9)
            ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------------

def _seeds_text(seeds) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {_listed(seeds)}"


def _probe_text(experiment: SharpnessExperiment, results: dict) -> str:
    r = results[(experiment.seeds[0], experiment.orders[0])]
    steps = r["steps"]
    rows = r["probe_rows"]
    batch = (f"the whole training set ({rows} examples)" if experiment.probe.batch == 0
             or rows < experiment.probe.batch else f"a fixed batch of {rows} training examples "
             f"per seed, shared by the orders")
    return (f"Probes {describe_steps(steps)} from step 0 to {steps[-1]}, {len(steps)} per run, "
            f"each the Hessian of the loss on {batch}")


def sharpness_caption(experiment: SharpnessExperiment, results: dict, profile: str,
                      problem: str) -> str:
    """The caption of a `plot_sharpness` figure: not a figure of the paper, what is drawn and
    how it is sampled, and the profile."""
    r = results[(experiment.seeds[0], experiment.orders[0])]
    listed = _listed(f"{o} ({_colour_name(o)})" for o in experiment.orders)
    dense = [o for o in experiment.orders
             if any(len(results[(s, o)]["curve_steps"]) > len(results[(s, o)]["steps"])
                    for s in experiment.seeds)]
    spacing = sorted({describe_steps(results[(s, o)]["curve_steps"]) for s in experiment.seeds
                      for o in dense})
    between = (f"; the thin line is {_listed(dense)}'s loss {' or '.join(spacing)}, which costs "
               f"no restart" if dense else "")
    return (f"Not a figure of the paper (it measures no Hessian): {problem}, {profile} profile, "
            f"{_seeds_text(experiment.seeds)}, one row each; {listed}. "
            f"{_probe_text(experiment, results)}. "
            f"Left: the sharpness λ_max against 2/h = {r['threshold']:g} (dashed), log scale. "
            f"Middle: the probe-batch loss at the probes (dots){between}. "
            f"Right: at each probe, the rotation since the previous one, of the leading "
            f"eigenvector (solid, 1 − |⟨v_t, v_{{t+k}}⟩|) and of the top-"
            f"{experiment.probe.eigenpairs} eigenvector subspace (dashed, 1 − the mean squared "
            f"cosine of the principal angles).")


def coincidence_caption(experiment: SharpnessExperiment, results: dict, profile: str,
                        problem: str) -> str:
    """The caption of a `plot_coincidence` figure."""
    changes = {o: loss_change(pd.concat([intervals(results[(s, o)]) for s in experiment.seeds]))
               for o in experiment.orders}
    words = {"spike": "the log of the largest recorded loss inside the interval over the loss at "
                      "its start",
             "jump": "the log of the loss at the interval's end over the loss at its start"}
    vertical = "; ".join(f"for {_listed(o for o in experiment.orders if changes[o] == c)}, {w}"
                         for c, w in words.items() if c in changes.values())
    skip = experiment.skip_intervals
    hollow = (f" Hollow markers: the first interval{'s' if skip > 1 else ''} of each seed, "
              f"left out of the rank correlations." if skip else "")
    return (f"Not a figure of the paper: {problem}, {profile} profile, "
            f"{_seeds_text(experiment.seeds)}{' pooled' if len(experiment.seeds) > 1 else ''}; "
            f"one column per order. Each point is one interval between consecutive probes. "
            f"{_probe_text(experiment, results)}. Horizontally the rotation over the interval, of the leading eigenvector (top row) "
            f"and of the top-{experiment.probe.eigenpairs} subspace (bottom row), on an axis "
            f"linear below 0.001 and logarithmic above; vertically, {vertical}.{hollow}")


PROBLEMS = ("synthetic", "fashion")  # the template's two problems, each a group of parameters


def page_setup(values: dict) -> dict[str, SharpnessExperiment]:
    """The sharpness page's experiments, one per problem, from the template's parameter values."""
    return {name: SharpnessExperiment(
        TrajectoryConfig.from_fields(values[name], name), seeds=values[f"{name}_seeds"],
        probe=Probe(**values[f"{name}_probe"], eigenpairs=values["eigenpairs"],
                    tol=values["lanczos_tol"]))
        for name in PROBLEMS}


def page_loads(problems: dict, runtime: Runtime) -> list:
    return [(repr(run), lambda run=run: run_probes(run, runtime))
            for experiment in problems.values() for run in experiment.runs()]
