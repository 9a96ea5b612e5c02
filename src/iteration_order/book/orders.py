"""The experiment behind the figure pages: forward against another order, seed by seed.

A page's notebook builds one frozen `OrdersExperiment` from its parameters cell and calls `run`;
every (seed, order) pair is one cached trajectory, so pages share runs and resume after an
interruption.
"""
from __future__ import annotations

from collections.abc import Callable

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

import numpy as np
from scipy import stats

from ..orders import Reset, SwitchAt, as_order
from ..parallel import run_many
from ..stability import (MIN_TAIL_STEPS, common_tail, detrended_spread, diverged_at,
                         displacement_decay, final_value, ratio, stability_row, tail_median,
                         total_variation)
from ..trajectory import CONV_FIELDS, MLP_FIELDS, Runtime, TrajectoryConfig
from ..validation import check_list, check_number
from .numbers import add_ranges, interval_text, p_text, plural, sig

__all__ = ["OrdersExperiment", "stability_table", "page_numbers", "order_key", "CLAIM_KEYS",
           "display_table", "train_acc_columns", "regime_changes", "moves_trend",
           "range_reference"]


# parameters of the orders template that say where and how a page runs or what it is called,
# never what is computed
PAGE_ONLY = ("jobs", "profile", "page", "engine", "data_root", "download", "paper_figure")


@dataclass(frozen=True)
class OrdersExperiment:
    dataset: str
    model: str
    lr: float
    batch_size: int
    steps: int
    seeds: tuple[int, ...]
    orders: tuple[str, ...] = ("forward", "backward")  # the first is the reference
    depth: int = 5
    width: int = 500
    init: str = "torch"
    base_channels: int = 64  # convolutional models: first stage's channels (64 = the paper's)
    optimizer: str = "sgd"
    fake_data: bool = False
    record: str = "every:1"
    record_forward: str = "every:1"
    eval_train_size: int = 0
    eval_test_size: int = 0
    tail: float = 0.25  # the window of the stability statistics: last quarter of training

    def __post_init__(self):
        object.__setattr__(self, "seeds", check_list("seeds", self.seeds, [0, 1]))
        orders = check_list("orders", self.orders, ["forward", "backward"])
        object.__setattr__(self, "orders", tuple(as_order(o).spec() for o in orders))
        if len(self.orders) < 2:
            raise ValueError(f"an experiment compares at least two orders; got {list(orders)}")
        if not self.seeds:
            raise ValueError("an experiment needs at least one seed; got seeds=[]")
        check_number("tail", self.tail, 0, 1, low_open=True)
        self.configs()  # every other field is validated once, by TrajectoryConfig
        _no_repeats("seeds", self.seeds)
        _no_repeats("orders", self.orders)

    @classmethod
    def from_parameters(cls, params: dict) -> "OrdersExperiment":
        """The experiment a page of the ``orders`` template runs, from its registry parameters
        (the runtime and presentation ones, `PAGE_ONLY`, are not part of the science)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - fields - set(PAGE_ONLY)
        if unknown:
            raise ValueError(f"not parameters of an orders page: {sorted(unknown)}; allowed: "
                             f"{sorted(fields)} and {', '.join(PAGE_ONLY)}")
        return cls(**{k: v for k, v in params.items() if k in fields})

    def config(self, seed: int, order: str) -> TrajectoryConfig:
        """One run's config. The MLP's fields go to the MLP only, and ``base_channels`` to the
        convolutional models only: every page of the template inherits both defaults, which the
        other kind of model does not use and `TrajectoryConfig` would refuse away from them."""
        fields = {f.name for f in dataclasses.fields(TrajectoryConfig)}
        fields -= set(MLP_FIELDS if self.model != "mlp" else CONV_FIELDS)
        shared = {k: v for k, v in dataclasses.asdict(self).items() if k in fields}
        return TrajectoryConfig(**{**shared, "seed": seed, "order": order})

    def configs(self) -> list[TrajectoryConfig]:
        return [self.config(s, o) for s in self.seeds for o in self.orders]

    def run(self, jobs: int = 1, runtime: Runtime = Runtime()) -> dict[tuple[int, str], dict]:
        results = run_many(self.configs(), runtime, jobs=jobs)
        return {(c.seed, c.order): r for c, r in zip(self.configs(), results)}


def stability_table(experiment: OrdersExperiment, results: dict,
                    reference: str | None = None) -> pd.DataFrame:
    """One row per (seed, compared order): `stability.stability_row` of ``reference`` (default
    the experiment's first order, forward) against that order — fluctuation (detrended spread,
    total variation) over the shared tail steps, levels, displacement decay, and which run
    diverged at which step (column ``diverged``; that row's statistics are NaN). Column meanings
    and units: `stability.GLOSSARY`."""
    reference = reference or experiment.orders[0]
    if reference not in experiment.orders:
        raise ValueError(f"reference must be one of the experiment's orders "
                         f"{list(experiment.orders)}; got {reference!r}")
    rows = []
    for seed in experiment.seeds:
        for order in experiment.orders:
            if order == reference:
                continue
            forward, other = results[(seed, reference)], results[(seed, order)]
            row = stability_row(forward, other, experiment.tail)
            row.update(train_acc_columns(forward, other, experiment.tail))
            rows.append({"seed": seed, "order": order, **row})
    return pd.DataFrame(rows).set_index(["seed", "order"])


def train_acc_columns(forward: dict, other: dict, tail: float,
                      min_steps: int = MIN_TAIL_STEPS) -> dict:
    """The train accuracy's fluctuation, as `stability.stability_row` gives the test accuracy's
    (composed from `stability`'s public statistics, over the same shared tail steps): ``train_acc
    spread``/``tv`` of both orders (``fwd``, ``other``) and their ``ratio`` other/forward, NaN
    where a run of the pair diverged. No columns where neither run has a train accuracy (a
    regression)."""
    if all(r.get("train_acc", [None])[-1] is None for r in (forward, other)):
        return {}
    steps = common_tail(forward, other, tail)
    diverged = diverged_at(forward) is not None or diverged_at(other) is not None
    row = {}
    for name, statistic in (("spread", detrended_spread), ("tv", total_variation)):
        f, o = (math.nan, math.nan) if diverged else \
            (statistic(forward, "train_acc", steps, min_steps),
             statistic(other, "train_acc", steps, min_steps))
        row[f"train_acc {name} fwd"], row[f"train_acc {name} other"] = f, o
        row[f"train_acc {name} ratio"] = ratio(o, f)
    return row


def display_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A `stability_table` as a reader sees it (the template displays ``display_table(table).T``):
    every number to ``digits`` significant figures (so that tail medians of 0.00016 and 0.00011
    are not both 0.0002 or 0.0001), steps and counts whole, 'n/a' where a statistic is undefined,
    and the ``diverged fwd``/``diverged other`` steps empty where that run did not diverge."""
    def cell(column, value):
        if column.startswith("diverged "):
            return "" if value != value else str(int(value))
        if isinstance(value, str):
            return value
        if column == "tail steps":
            return str(int(value))
        return sig(value, digits)
    return pd.DataFrame({column: [cell(column, v) for v in table[column]]
                         for column in table.columns}, index=table.index)


# ------------------------------------------------------------------------------------------------
# The numbers a page's prose quotes: every one computed here from the run, glued into the text
# ------------------------------------------------------------------------------------------------

# claim of `summary.CLAIMS` -> the short name its numbers carry in the prose (glue keys)
CLAIM_KEYS = {
    "train loss fluctuates less (detrended spread)": "train_spread",
    "train loss moves back and forth less (total variation)": "train_tv",
    "test loss fluctuates less (detrended spread)": "test_spread",
    "test accuracy fluctuates less (detrended spread)": "acc_spread",
    "train accuracy fluctuates less (detrended spread)": "train_acc_spread",
    "steps shrink more (displacement decay)": "decay",
    "lower typical train loss (tail median)": "level",
}


def order_key(order: str) -> str:
    """The short name of an order in glue keys: forward, backward, reset, switch."""
    return as_order(order).spec().split(":")[0]


def span(values) -> tuple[float, float]:
    """(smallest, largest) of the finite values, as the prose quotes a per-seed range; NaN, NaN
    where none is finite (no seed has the number)."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return (min(finite), max(finite)) if finite else (math.nan, math.nan)


def _evidence_text(row: dict) -> str:
    """One claim's evidence in words: 'k of n seeds (sign test p = ...)' or why it cannot be
    tested, as `summary.verdicts` says it."""
    if row["n"] == 0:
        return f"cannot be tested here ({row['undefined']})"
    return (f"{row['holds']} of {plural(int(row['n']), 'seed')} (two-sided sign test "
            f"p = {p_text(row['sign p'])})")


def _interval_text(row: dict, level: float = 0.95) -> str:
    """The geometric mean and its t-interval, each bound strictly on its own side of 1
    (`numbers.interval_text`), or why there is no interval."""
    return interval_text(row["ratio"], row["low"], row["high"], row["interval note"], level)


def regime_changes(order: str, steps: int) -> list[int]:
    """The steps 1..steps−1 at which ``order`` changes regime: the base point moves (a reset) or
    forward turns into backward (a switch); none for forward and backward."""
    order = as_order(order)
    if isinstance(order, Reset):
        at = order.at if order.every is None else range(order.every, steps, order.every)
        return [c for c in at if 0 < c < steps]
    if isinstance(order, SwitchAt):
        return [order.step] if 0 < order.step < steps else []
    return []


def moves_trend(result: dict, order: str | None = None) -> dict:
    """Do a run's moves settle within one regime? From its ``displacement`` curve (the distance
    between consecutive recorded iterates, as `stability.displacement_decay` uses it) over the
    second half of training, steps N/2 < n ≤ N, leaving out a move whose two iterates lie on
    either side of a regime change (`regime_changes`):

    * ``growth`` — median move over the last quarter (3N/4 < n ≤ N) / median over the third
      (N/2 < n ≤ 3N/4): above 1 the moves grow, below 1 they shrink;
    * ``rho`` — Spearman's rank correlation of the moves with the step over the second half
      (near 1: they grow steadily; near −1: they shrink steadily);
    * ``note`` — '' where both are defined, else why not: a regime change after N/2 (the ratio
      would compare two regimes), a diverged run, or too few recorded moves.
    """
    order = order or result["config"]["order"]
    total = result["config"]["steps"]
    out = {"growth": math.nan, "rho": math.nan, "note": ""}
    late = [c for c in regime_changes(order, total) if c > total / 2]
    if late:
        out["note"] = (f"undefined: the regime changes at step {late[0]}, after the half-way step "
                       f"{total / 2:g}, so the second half is not one regime")
        return out
    if diverged_at(result) is not None:
        out["note"] = f"undefined: the run diverged at step {diverged_at(result)}"
        return out
    steps = np.asarray(result["recorded_steps"])
    moves = np.asarray(result["displacement"], dtype=float)
    changes = regime_changes(order, total)
    previous = np.concatenate([[steps[0]], steps[:-1]])
    keep = (steps > total / 2) & np.isfinite(moves)
    for c in changes:
        keep &= ~((previous < c) & (c < steps))
    third = moves[keep & (steps <= 0.75 * total)]
    last = moves[keep & (steps > 0.75 * total)]
    if len(third) == 0 or len(last) == 0 or keep.sum() < 3:
        out["note"] = f"undefined: {plural(int(keep.sum()), 'recorded move')} in the second half"
        return out
    before = float(np.median(third))
    out["growth"] = float(np.median(last)) / before if before > 0 else math.nan
    out["rho"] = float(stats.spearmanr(steps[keep], moves[keep])[0])
    return out


def range_reference(key: str) -> float | None:
    """The value a per-seed range of a glue key is compared with, so that its ``_range`` text
    never prints an end on the wrong side of it: 1 for a ratio (claims, decays, growth of the
    moves, spread ratios), 0 for a difference or a correlation, none for a level or a count."""
    if key.endswith(("_diff", "_rho", "_cos")) or "_diff_" in key:
        return 0.0
    if key.endswith(("tail_steps", "acc_final", "_frac_med", "_med", "_test", "sigma",
                     "per_pair", "_intervals", "_load")) or "_load" in key:
        return None
    return 1.0


def _percent(key: str) -> str:
    return "%" if key.endswith("acc_final") else ""


def page_numbers(experiment: OrdersExperiment, results: dict) -> dict:
    """Every number (and verdict) a figure page's conclusion quotes, by glue key.

    Keys: the run's settings (``steps``, ``lr``, ``batch_size``, ``seeds_n``, ``tail_start``);
    per compared order (``<order>_`` prefix, see `order_key`) the shared tail steps
    (``tail_steps_min``/``max``), the divergence note, and per claim (``<order>_<claim>_``,
    see `CLAIM_KEYS`) ``n``, ``k``, ``p``, ``gm`` (geometric mean ratio), ``min``/``max`` of the
    per-seed ratios, ``evidence`` (k of n with the sign test, or why it cannot be tested) and
    ``interval`` (the t-interval, or why there is none); per order its displacement decay range
    (``<order>_decay_own_min``/``max``) and the seeds whose moves grow (``_grows_k``); the tail
    medians of the train loss and final test accuracies (``<order>_acc_final_min``/``max``).
    With three orders (the reset page) the second is also compared with the third
    (``<second>_vs_<third>_`` keys: tail-median and final-accuracy differences per seed).
    Within-regime trend of each order's moves (`moves_trend`): ``<order>_moves_growth_min``/
    ``max``/``k`` (seeds where they grow)/``n`` (seeds with the ratio), ``<order>_moves_rho_min``/
    ``max`` and ``<order>_moves_note`` (the window, or why undefined). For every ``X_min``/
    ``X_max`` pair, ``X_range``: the range in words, each end honest with respect to
    `range_reference` ("0.931 to 1.04"; "34.5%" for a single value).
    """
    from .claims import page_claims

    numbers: dict = {"steps": experiment.steps, "lr": experiment.lr,
                     "batch_size": experiment.batch_size, "seeds_n": len(experiment.seeds),
                     "tail_start": round(experiment.steps * (1 - experiment.tail))}
    reference = experiment.orders[0]
    table = stability_table(experiment, results)
    claims = page_claims(table, reference)
    # each order's own numbers, then, for a compared order, its claims against the reference
    for order in experiment.orders:
        numbers.update(_order_numbers(experiment, results, order))
        if order != reference:
            numbers.update(_comparison_numbers(table, claims, order))
    if len(experiment.orders) == 3:
        numbers.update(_second_against_third(experiment, results))
    return add_ranges(numbers, range_reference, _percent)


def _order_numbers(experiment: OrdersExperiment, results: dict, order: str) -> dict:
    """One order's own numbers (``<order>_`` keys): its displacement decay and the trend of its
    moves, its final accuracies (classification only) and its tail level, each over the seeds
    whose run did not diverge (the moves' trend says itself why it is undefined)."""
    key = order_key(order)
    runs = [results[(s, order)] for s in experiment.seeds]
    own = [r for r in runs if r.get("diverged_at") is None]
    values = [displacement_decay(r) for r in own]
    numbers: dict = {}
    numbers[f"{key}_decay_own_min"], numbers[f"{key}_decay_own_max"] = span(values)
    numbers[f"{key}_decay_grows_k"] = sum(v > 1 for v in values)
    numbers.update(_moves_numbers(key, order, runs, experiment.steps))
    if results[(experiment.seeds[0], order)]["test_acc"][-1] is not None:
        accs = [final_value(r, "test_acc") * 100 for r in own]
        numbers[f"{key}_acc_final_min"], numbers[f"{key}_acc_final_max"] = span(accs)
        train_accs = [final_value(r, "train_acc") * 100 for r in own]
        numbers[f"{key}_train_acc_final_min"], numbers[f"{key}_train_acc_final_max"] = \
            span(train_accs)
    numbers.update(_tail_level(experiment, results, order))
    return numbers


def _moves_numbers(key: str, order: str, runs: list[dict], steps: int) -> dict:
    """`moves_trend` over the seeds' ``runs`` of one order: the range of the growth and of ρ,
    on how many seeds the moves grow, and the window in words (or why it is undefined)."""
    numbers: dict = {}
    trends = [moves_trend(r, order) for r in runs]
    growth = [t["growth"] for t in trends]
    numbers[f"{key}_moves_growth_min"], numbers[f"{key}_moves_growth_max"] = span(growth)
    numbers[f"{key}_moves_growth_k"] = sum(g > 1 for g in growth)
    numbers[f"{key}_moves_growth_n"] = sum(g == g for g in growth)
    numbers[f"{key}_moves_rho_min"], numbers[f"{key}_moves_rho_max"] = \
        span([t["rho"] for t in trends])
    notes = list(dict.fromkeys(t["note"] for t in trends if t["note"]))
    numbers[f"{key}_moves_note"] = "; ".join(notes) or (
        f"within one regime (moves spanning the change at step "
        f"{regime_changes(order, steps)[0]} left out)"
        if regime_changes(order, steps) else "within one regime")
    return numbers


def _comparison_numbers(table: pd.DataFrame, claims: pd.DataFrame, order: str) -> dict:
    """A compared order against the reference: its shared tail steps, its divergence note and,
    per claim it has (``<order>_<claim>_`` keys), the evidence of `claims.page_claims`."""
    key = order_key(order)
    rows = table.xs(order, level="order")
    numbers: dict = {f"{key}_tail_steps_min": int(rows["tail steps"].min()),
                     f"{key}_tail_steps_max": int(rows["tail steps"].max()),
                     f"{key}_divergence": claims.xs(order, level="order")["divergence"].iloc[0]
                     or "no run diverged"}
    for claim, short in CLAIM_KEYS.items():
        if (order, claim) not in claims.index:
            continue
        row = claims.loc[(order, claim)].to_dict()
        per_seed = list(row["per seed values"])
        prefix = f"{key}_{short}"
        numbers.update({f"{prefix}_n": int(row["n"]), f"{prefix}_k": int(row["holds"]),
                        f"{prefix}_p": row["sign p"], f"{prefix}_gm": row["ratio"],
                        f"{prefix}_evidence": _evidence_text(row),
                        f"{prefix}_interval": _interval_text(row)})
        numbers[f"{prefix}_min"], numbers[f"{prefix}_max"] = span(per_seed)
    return numbers


# classes of the classification sets, for the loss of a uniform guess (ln C); a subset has its set's
_CLASSES = {"fashionmnist": 10, "cifar10": 10, "cifar10-subset": 10, "cifar100": 100}


def _tail_level(experiment: "OrdersExperiment", results: dict, order: str) -> dict:
    """How far training got: per seed the median train loss of ``order`` over the tail steps that
    every order of the page recorded (``<order>_tail_loss_min``/``max``), and on a classification
    set that median over ln C, the loss of a uniform guess over its C classes
    (``<order>_tail_loss_chance_min``/``max``, with ``chance_loss`` = ln C)."""
    key, levels = order_key(order), []
    for seed in experiment.seeds:
        runs = [results[(seed, o)] for o in experiment.orders]
        if any(r.get("diverged_at") is not None for r in runs):
            continue
        steps = set(common_tail(runs[0], runs[0], experiment.tail))
        for other in runs[1:]:
            steps &= set(common_tail(runs[0], other, experiment.tail))
        levels.append(tail_median(results[(seed, order)], "train_loss", sorted(steps)))
    out: dict = {}
    out[f"{key}_tail_loss_min"], out[f"{key}_tail_loss_max"] = span(levels)
    classes = _CLASSES.get(experiment.dataset)
    if classes is not None:
        out["chance_loss"] = math.log(classes)
        out[f"{key}_tail_loss_chance_min"], out[f"{key}_tail_loss_chance_max"] = span(
            [v / math.log(classes) for v in levels])
    return out


def _second_against_third(experiment: OrdersExperiment, results: dict) -> dict:
    """The reset page's own question: where does the restarted run end, compared with the plain
    backward run of the same seeds and batches? Per seed, second minus third in the tail median
    of the train loss and in the final test accuracy (points), and the spread ratio."""
    second, third = experiment.orders[1], experiment.orders[2]
    prefix = f"{order_key(second)}_vs_{order_key(third)}"
    level, acc, spread = [], [], []
    for seed in experiment.seeds:
        a, b = results[(seed, second)], results[(seed, third)]
        if a.get("diverged_at") is not None or b.get("diverged_at") is not None:
            continue
        steps = common_tail(a, b, experiment.tail)
        level.append(tail_median(a, "train_loss", steps) - tail_median(b, "train_loss", steps))
        if a["test_acc"][-1] is not None:
            acc.append(100 * (final_value(a, "test_acc") - final_value(b, "test_acc")))
        spread.append(detrended_spread(a, "train_loss", steps)
                      / detrended_spread(b, "train_loss", steps))
    out = {f"{prefix}_seeds": len(level),
           f"{prefix}_level_lower_k": sum(d < 0 for d in level),
           f"{prefix}_acc_higher_k": sum(d > 0 for d in acc),
           f"{prefix}_acc_lower_k": sum(d < 0 for d in acc)}
    out[f"{prefix}_level_diff_min"], out[f"{prefix}_level_diff_max"] = span(level)
    out[f"{prefix}_acc_diff_min"], out[f"{prefix}_acc_diff_max"] = span(acc)
    out[f"{prefix}_spread_ratio_min"], out[f"{prefix}_spread_ratio_max"] = span(spread)
    return out


def _no_repeats(name: str, values: tuple) -> None:
    """A repeated seed or order would be one cached run shown twice."""
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise ValueError(f"{name} must not repeat a value; got {list(values)} ({repeated[0]!r} "
                         f"more than once)")


# ------------------------------------------------------------------------------------------------
# The page protocol (`studies`): each template's study module has `page_setup(values)`, what the
# template builds from its parameters, and `page_loads(setup, runtime)`, the results it reads,
# each as a read under cache mode 'only'. The template and the book check both call them, so the
# check can never go out of date with the template.
# ------------------------------------------------------------------------------------------------

Load = tuple[str, Callable[[], object]]  # (what is loaded, a read that raises if it is missing)


def trajectory_loads(configs, runtime: Runtime) -> list[Load]:
    """The stored trajectories of ``configs``, as reads (`trajectory.stored_trajectory`)."""
    from ..trajectory import describe_config, stored_trajectory
    return [(describe_config(c), lambda c=c: stored_trajectory(c, runtime))
            for c in dict.fromkeys(configs)]


def page_setup(values: dict) -> OrdersExperiment:
    """The experiment of a page of the ``orders`` template, from its parameter values."""
    return OrdersExperiment.from_parameters(values)


def page_loads(experiment: OrdersExperiment, runtime: Runtime) -> list[Load]:
    return trajectory_loads(experiment.configs(), runtime)
