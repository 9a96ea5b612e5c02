"""The experiment behind the figure pages: forward against another order, seed by seed.

A page's notebook builds one frozen `OrdersExperiment` from its parameters cell and calls `run`;
every (seed, order) pair is one cached trajectory, so pages share runs and resume after an
interruption.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from ..orders import as_order
from ..parallel import run_many
from ..stability import (common_tail, detrended_spread, displacement_decay, final_value,
                         stability_row, tail_median)
from ..trajectory import MLP_FIELDS, Runtime, TrajectoryConfig
from ..validation import check_list, check_number

__all__ = ["OrdersExperiment", "stability_table", "page_numbers", "order_key", "CLAIM_KEYS"]


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
        """One run's config. The MLP's fields go to the MLP only: every page of the template
        inherits its ``depth``, ``width`` and ``init`` defaults, which a ResNet page does not use
        and `TrajectoryConfig` would refuse away from their defaults."""
        fields = {f.name for f in dataclasses.fields(TrajectoryConfig)}
        if self.model != "mlp":
            fields -= set(MLP_FIELDS)
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
            row = stability_row(results[(seed, reference)], results[(seed, order)],
                                experiment.tail)
            rows.append({"seed": seed, "order": order, **row})
    return pd.DataFrame(rows).set_index(["seed", "order"])


# ------------------------------------------------------------------------------------------------
# The numbers a page's prose quotes: every one computed here from the run, glued into the text
# ------------------------------------------------------------------------------------------------

# claim of `summary.CLAIMS` -> the short name its numbers carry in the prose (glue keys)
CLAIM_KEYS = {
    "train loss fluctuates less (detrended spread)": "train_spread",
    "train loss moves back and forth less (total variation)": "train_tv",
    "test loss fluctuates less (detrended spread)": "test_spread",
    "test accuracy fluctuates less (detrended spread)": "acc_spread",
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
    return (f"{row['holds']} of {row['n']} seeds (two-sided sign test p = {row['sign p']:.2g})")


def _interval_text(row: dict) -> str:
    if row["low"] == row["low"]:
        return f"geometric mean {row['ratio']:.2g}, 95% t-interval {row['low']:.2g} to {row['high']:.2g}"
    if row["ratio"] == row["ratio"]:
        return f"geometric mean {row['ratio']:.2g}, {row['interval note']}"
    return row["interval note"]


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
    """
    from .summary import page_claims  # the summary imports this module

    numbers: dict = {"steps": experiment.steps, "lr": experiment.lr,
                     "batch_size": experiment.batch_size, "seeds_n": len(experiment.seeds),
                     "tail_start": round(experiment.steps * (1 - experiment.tail))}
    reference = experiment.orders[0]
    table = stability_table(experiment, results)
    claims = page_claims(table, reference)
    for order in experiment.orders:
        key = order_key(order)
        decays = [results[(s, order)] for s in experiment.seeds]
        own = [r for r in decays if r.get("diverged_at") is None]
        values = [displacement_decay(r) for r in own]
        numbers[f"{key}_decay_own_min"], numbers[f"{key}_decay_own_max"] = span(values)
        numbers[f"{key}_decay_grows_k"] = sum(v > 1 for v in values)
        if results[(experiment.seeds[0], order)]["test_acc"][-1] is not None:
            accs = [final_value(r, "test_acc") * 100 for r in own]
            numbers[f"{key}_acc_final_min"], numbers[f"{key}_acc_final_max"] = span(accs)
        if order == reference:
            continue
        rows = table.xs(order, level="order")
        numbers[f"{key}_tail_steps_min"] = int(rows["tail steps"].min())
        numbers[f"{key}_tail_steps_max"] = int(rows["tail steps"].max())
        numbers[f"{key}_divergence"] = claims.xs(order, level="order")["divergence"].iloc[0] \
            or "no run diverged"
        for claim, short in CLAIM_KEYS.items():
            if (order, claim) not in claims.index:
                continue
            row = claims.loc[(order, claim)].to_dict()
            per_seed = [float(v) if v != "n/a" else float("nan")
                        for v in row["per seed"].split(", ")]
            prefix = f"{key}_{short}"
            numbers.update({f"{prefix}_n": int(row["n"]), f"{prefix}_k": int(row["holds"]),
                            f"{prefix}_p": row["sign p"], f"{prefix}_gm": row["ratio"],
                            f"{prefix}_evidence": _evidence_text(row),
                            f"{prefix}_interval": _interval_text(row)})
            numbers[f"{prefix}_min"], numbers[f"{prefix}_max"] = span(per_seed)
    if len(experiment.orders) == 3:
        numbers.update(_second_against_third(experiment, results))
    return numbers


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
