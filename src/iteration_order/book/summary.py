"""Across the figure pages: does each claim of the paper hold in our runs, and for how many seeds?

Every figure page compares forward SGD with another order seed by seed (`pages.stability_table`).
Here each claim becomes a per-seed ratio other/forward (below 1: the claim holds for that seed),
summarised per page by the number of seeds where it holds and the geometric mean ratio with a
paired bootstrap confidence interval: the ratio is formed inside each seed, where both orders share
the initial point and the batch schedule, and the seeds are resampled with replacement.

Nothing is trained here unless asked: the figure pages cache their trajectories, and this module
loads them (``train_missing=False`` raises, naming the page to execute first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .registry import PROFILES, page, resolved_parameters
from .pages import OrdersExperiment, stability_table
from ..parallel import run_many
from ..seeding import stream_seed
from ..trajectory import Runtime, result_path, run_trajectory
from ..validation import check_bool, check_choice, check_int, check_list, check_number, check_str

__all__ = ["CLAIMS", "SummaryConfig", "page_experiment", "claim_ratios", "paired_bootstrap",
           "claims_table"]

# claim -> how its per-seed ratio other/forward is formed from a `stability_row`
CLAIMS = {
    "train loss fluctuates less (std)": ("train_loss std other", "train_loss std fwd"),
    "train loss moves back and forth less (total variation)": ("train_loss tv other",
                                                               "train_loss tv fwd"),
    "test loss fluctuates less (std)": ("test_loss std other", "test_loss std fwd"),
    "test accuracy fluctuates less (std)": ("test_acc std other", "test_acc std fwd"),
    "steps shrink more (displacement decay)": ("displacement decay other",
                                               "displacement decay fwd"),
    "lower typical train loss (tail median)": ("train_loss median other", "train_loss median fwd"),
}


@dataclass(frozen=True)
class SummaryConfig:
    pages: tuple[str, ...]       # figure pages of the `orders` template, in the order shown
    profile: str                 # whose parameters (and cached trajectories) to summarise
    resamples: int = 10_000      # bootstrap resamples of the seeds
    level: float = 0.95          # confidence level of the bootstrap interval
    seed: int = 0                # seeds the bootstrap's own random stream
    train_missing: bool = False  # smoke runs may train; book pages only load

    def __post_init__(self):
        pages = check_list("pages", self.pages, ["fig04-x2", "fig07-fashionmnist"],
                           lambda name, value: check_str(name, value))
        object.__setattr__(self, "pages", pages)
        if not self.pages:
            raise ValueError("a summary needs at least one page; got pages=[]")
        for name in self.pages:
            if page(name)["template"] != "orders":
                raise ValueError(f"page {name!r} is not a figure page of the orders template")
        check_choice("profile", self.profile, PROFILES)
        check_int("resamples", self.resamples, 100)
        check_number("level", self.level, 0, 1, low_open=True, high_open=True)
        check_int("seed", self.seed, 0)
        check_bool("train_missing", self.train_missing)


def page_experiment(name: str, profile: str, train_missing: bool, runtime: Runtime = Runtime(),
                    jobs: int = 1) -> tuple[OrdersExperiment, dict]:
    """A figure page's experiment at a profile and its results, loaded from the cache."""
    experiment = OrdersExperiment.from_parameters(resolved_parameters(name, profile))
    missing = [c for c in experiment.configs() if not result_path(c, runtime).is_file()]
    if missing and not train_missing:
        raise ValueError(
            f"page {name!r} has {len(missing)} trajectories not yet computed at profile "
            f"{profile!r}; execute it first: python -m iteration_order.book run --profile "
            f"{profile} --only {name}")
    if missing:
        run_many(missing, runtime, jobs=jobs, announce=False)
    results = {(c.seed, c.order): run_trajectory(c, runtime) for c in experiment.configs()}
    return experiment, results


def claim_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed and compared order, the ratio other/forward of every claim the table supports."""
    columns = {}
    for claim, (other, forward) in CLAIMS.items():
        if other in table and forward in table:
            f = table[forward].astype(float)
            columns[claim] = (table[other].astype(float) / f).where(f > 0)
    return pd.DataFrame(columns, index=table.index)


def paired_bootstrap(ratios, resamples: int, level: float, rng: np.random.Generator):
    """Geometric mean of per-seed ratios and its percentile bootstrap interval over seeds.

    Undefined (NaN) ratios are left out; with fewer than two seeds left, the interval is NaN.
    """
    logs = np.log(np.asarray([r for r in ratios if np.isfinite(r) and r > 0], dtype=float))
    if len(logs) == 0:
        return math.nan, math.nan, math.nan
    centre = float(np.exp(logs.mean()))
    if len(logs) < 2:
        return centre, math.nan, math.nan
    draws = rng.integers(0, len(logs), size=(resamples, len(logs)))
    means = logs[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return centre, float(np.exp(low)), float(np.exp(high))


def claims_table(config: SummaryConfig, runtime: Runtime = Runtime(progress=False),
                 jobs: int = 1) -> tuple[pd.DataFrame, dict]:
    """One row per (page, compared order, claim): seeds, seeds where it holds, geometric mean ratio
    and its bootstrap interval. Also returns each page's per-seed stability table."""
    rng = np.random.default_rng(stream_seed(config.seed, "summary-bootstrap"))
    rows, tables = [], {}
    for name in config.pages:
        experiment, results = page_experiment(name, config.profile, config.train_missing,
                                              runtime, jobs)
        tables[name] = table = stability_table(experiment, results)
        ratios = claim_ratios(table)
        for order in experiment.orders[1:]:
            per_seed = ratios.xs(order, level="order")
            for claim in per_seed.columns:
                values = per_seed[claim].to_numpy(dtype=float)
                defined = values[np.isfinite(values)]
                centre, low, high = paired_bootstrap(values, config.resamples, config.level, rng)
                rows.append({"page": name, "order": order, "claim": claim,
                             "seeds": len(defined), "holds": int((defined < 1).sum()),
                             "ratio": centre, "low": low, "high": high})
    return pd.DataFrame(rows).set_index(["page", "order", "claim"]), tables
