"""Across the figure pages: does each claim of the paper hold in our runs, and for how many seeds?

Every figure page compares forward SGD with another order seed by seed (`pages.stability_table`).
Here each claim becomes a per-seed ratio other/forward (below 1: the claim holds for that seed),
formed inside each seed, where both orders share the initial point and the batch schedule. Per
page, compared order and claim (`claim_evidence`):

* the per-seed ratios, and n, the seeds where the ratio is defined (a seed with a diverged run, or
  too few shared tail steps for a fluctuation statistic, has none; the row says which and why);
* k, the seeds where the claim holds (ratio < 1), with the exact two-sided **sign test** p-value
  of k against n/2 (`scipy.stats.binomtest`; ratios of exactly 1 are ties, left out of it). It
  assumes nothing about the size of the ratios, and it cannot be small with few seeds: its
  smallest value is 2·0.5ⁿ, 0.0625 with 5 seeds, so 5 seeds can show a consistent direction but
  never significance at 5% by this test alone;
* the geometric-mean ratio and a **t-interval** on the log ratios, exp(mean ± t_{n−1}·s/√n),
  which assumes the log ratios are normal across seeds (log-normal ratios), something 5 seeds
  cannot check. None is given with fewer than `MIN_INTERVAL_SEEDS` = 4 seeds: with 2 or 3 the t
  quantile is 12.7 or 4.3 and the interval rests entirely on that unverifiable assumption.

A percentile bootstrap of the seeds is not used: it cannot leave the range of the sample, so with
2–3 seeds it is [min, max] whatever the spread, and with 5 it is narrower than the t-interval.

Nothing is trained here unless asked: the figure pages cache their trajectories, and this module
loads them (``train_missing=False`` raises, naming the page to execute first).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .registry import PROFILES, page, resolved_parameters
from .pages import OrdersExperiment, stability_table
from ..parallel import run_many, stored_result
from ..trajectory import Runtime
from ..validation import check_bool, check_choice, check_list, check_number, check_str

__all__ = ["CLAIMS", "MIN_INTERVAL_SEEDS", "SummaryConfig", "page_experiment", "claim_ratios",
           "claim_evidence", "smallest_sign_p", "divergence_note", "page_claims", "claims_table",
           "verdicts", "claims_display"]


class Claim(NamedTuple):
    other: str         # the stability-table column of the other order's statistic
    forward: str       # ... and of forward's
    fluctuation: bool  # a fluctuation statistic, undefined on too few shared tail steps


# claim -> how its per-seed ratio other/forward is formed from a `stability_row`
CLAIMS = {
    "train loss fluctuates less (detrended spread)":
        Claim("train_loss spread other", "train_loss spread fwd", True),
    "train loss moves back and forth less (total variation)":
        Claim("train_loss tv other", "train_loss tv fwd", True),
    "test loss fluctuates less (detrended spread)":
        Claim("test_loss spread other", "test_loss spread fwd", True),
    "test accuracy fluctuates less (detrended spread)":
        Claim("test_acc spread other", "test_acc spread fwd", True),
    "steps shrink more (displacement decay)":
        Claim("displacement decay other", "displacement decay fwd", False),
    "lower typical train loss (tail median)":
        Claim("train_loss median other", "train_loss median fwd", False),
}

MIN_INTERVAL_SEEDS = 4  # fewest seeds with a ratio for which a t-interval is given


@dataclass(frozen=True)
class SummaryConfig:
    pages: tuple[str, ...]       # figure pages of the `orders` template, in the order shown
    profile: str                 # whose parameters (and cached trajectories) to summarise
    level: float = 0.95          # confidence level of the t-interval on the log ratios
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
        check_number("level", self.level, 0, 1, low_open=True, high_open=True)
        check_bool("train_missing", self.train_missing)


def page_experiment(name: str, profile: str, train_missing: bool, runtime: Runtime = Runtime(),
                    jobs: int = 1) -> tuple[OrdersExperiment, dict]:
    """A figure page's experiment at a profile and its results, loaded from the cache."""
    experiment = OrdersExperiment.from_parameters(resolved_parameters(name, profile))
    # a stale or unreadable file counts as missing: it is never read, nor recomputed unasked.
    # The results of the runs' device (`parallel.run_device`: at the paper profile on a machine
    # without CUDA, those a GPU computed elsewhere)
    stored = {c: stored_result(c, runtime) for c in experiment.configs()}
    missing = [c for c, result in stored.items() if result is None]
    if missing and not train_missing:
        raise ValueError(
            f"page {name!r} has {len(missing)} trajectories not computed (or not valid) at "
            f"profile {profile!r}; execute it first: python -m iteration_order.book run "
            f"--profile {profile} --only {name}")
    if missing:
        stored.update(zip(missing, run_many(missing, runtime, jobs=jobs, announce=False)))
    return experiment, {(c.seed, c.order): stored[c] for c in experiment.configs()}


def claim_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed and compared order, the ratio other/forward of every claim the table supports
    (NaN where forward's statistic is zero or either is undefined)."""
    columns = {}
    for claim, (other, forward, _) in CLAIMS.items():
        if other in table and forward in table:
            f = table[forward].astype(float)
            columns[claim] = (table[other].astype(float) / f).where(f > 0)
    return pd.DataFrame(columns, index=table.index)


def smallest_sign_p(n: int) -> float:
    """The smallest two-sided sign-test p-value n seeds can give (all n on one side): 2·0.5ⁿ."""
    return float(stats.binomtest(n, n, 0.5).pvalue) if n > 0 else math.nan


def claim_evidence(ratios, level: float = 0.95) -> dict:
    """The evidence of one claim from its per-seed ratios (NaN: undefined for that seed).

    ``n`` seeds with a ratio, ``holds`` = k of them below 1, the two-sided sign-test ``sign p``
    (ties at exactly 1 left out), the geometric mean ``ratio`` and its t-interval ``low``, ``high``
    at ``level`` on the log ratios (NaN with fewer than `MIN_INTERVAL_SEEDS` seeds, or where a ratio
    is 0 and has no logarithm), and ``interval note`` saying why an interval is missing.
    """
    values = np.asarray(ratios, dtype=float)
    defined = values[np.isfinite(values)]
    n, k, ties = len(defined), int((defined < 1).sum()), int((defined == 1).sum())
    out = {"n": n, "holds": k, "sign p": math.nan, "ratio": math.nan, "low": math.nan,
           "high": math.nan, "interval note": ""}
    if n - ties > 0:
        out["sign p"] = float(stats.binomtest(k, n - ties, 0.5).pvalue)
    if n == 0:
        out["interval note"] = "no seed has the ratio"
        return out
    if (defined <= 0).any():
        out["interval note"] = "a ratio of 0 has no logarithm: no mean or interval on the log scale"
        return out
    logs = np.log(defined)
    out["ratio"] = float(np.exp(logs.mean()))
    if n < MIN_INTERVAL_SEEDS:
        out["interval note"] = (f"no interval from {n} seed{'s' if n > 1 else ''} (at least "
                                f"{MIN_INTERVAL_SEEDS} needed)")
        return out
    half = stats.t.ppf((1 + level) / 2, n - 1) * stats.sem(logs)
    out["low"], out["high"] = float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
    return out


def divergence_note(table: pd.DataFrame, order: str, reference: str = "forward") -> str:
    """Which seeds' runs diverged in the comparison of ``reference`` with ``order``, and at which
    step, in words ('' if none): '2 of 5 seeds diverged (forward: seed 1 at step 12, seed 3 at
    step 40); ratios from 3 seeds'."""
    rows = table.xs(order, level="order")
    hit = rows[rows["diverged"] != ""]
    if hit.empty:
        return ""
    parts = [f"{name}: " + ", ".join(f"seed {seed} at step {int(step)}"
                                     for seed, step in hit[column].dropna().items())
             for name, column in ((reference, "diverged fwd"), (order, "diverged other"))
             if hit[column].notna().any()]
    left = len(rows) - len(hit)
    return (f"{len(hit)} of {len(rows)} seeds diverged ({'; '.join(parts)}); ratios from "
            f"{left} seed{'s' if left != 1 else ''}")


def _undefined_note(table: pd.DataFrame, per_seed: pd.Series, claim: Claim) -> str:
    """Why the claim's ratio is missing on some seeds, counted by reason."""
    reasons = Counter()
    for seed, value in per_seed.items():
        if np.isfinite(value):
            continue
        row = table.loc[seed]
        if row["diverged"]:
            reasons["a run diverged"] += 1
        elif claim.fluctuation and row["undefined because"]:
            reasons[row["undefined because"]] += 1
        else:
            reasons["forward's statistic is zero or undefined"] += 1
    return "; ".join(f"{count} of {len(per_seed)} seeds: {reason}"
                     for reason, count in reasons.items())


def page_claims(table: pd.DataFrame, reference: str = "forward",
                level: float = 0.95) -> pd.DataFrame:
    """One row per (compared order, claim) of one page's stability table: ``seeds`` compared,
    ``diverged`` (seeds with a diverged run) and ``divergence`` (in words), the per-seed ratios
    (``per seed``, in seed order, 'n/a' where undefined), `claim_evidence`'s columns, and
    ``undefined`` (why some seeds have no ratio)."""
    ratios = claim_ratios(table)
    rows = []
    for order in table.index.get_level_values("order").unique():
        per_order = ratios.xs(order, level="order")
        compared = table.xs(order, level="order")
        for claim in per_order.columns:
            per_seed = per_order[claim]
            rows.append({
                "order": order, "claim": claim, "seeds": len(per_seed),
                "diverged": int((compared["diverged"] != "").sum()),
                "divergence": divergence_note(table, order, reference),
                "per seed": ", ".join("n/a" if not np.isfinite(v) else f"{v:.3g}"
                                      for v in per_seed),
                **claim_evidence(per_seed.to_numpy(dtype=float), level),
                "undefined": _undefined_note(compared, per_seed, CLAIMS[claim])})
    return pd.DataFrame(rows).set_index(["order", "claim"])


def claims_table(config: SummaryConfig, runtime: Runtime = Runtime(progress=False),
                 jobs: int = 1) -> tuple[pd.DataFrame, dict]:
    """`page_claims` of every page, one row per (page, compared order, claim). Also returns each
    page's per-seed stability table."""
    parts, tables = {}, {}
    for name in config.pages:
        experiment, results = page_experiment(name, config.profile, config.train_missing,
                                              runtime, jobs)
        tables[name] = table = stability_table(experiment, results)
        parts[name] = page_claims(table, experiment.orders[0], config.level)
    return pd.concat(parts, names=["page"]), tables


def verdicts(claims: pd.DataFrame, level: float = 0.95, reference: str = "forward") -> list[str]:
    """The claims in words, one line per claim under a heading per (page,) compared order: the
    seeds where it holds with the sign test, the per-seed ratios, the geometric mean and its
    interval or why there is none; 'cannot test' where no seed has the ratio."""
    lines = []
    groups = [name for name in claims.index.names if name != "claim"]
    for key, rows in claims.groupby(level=groups, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        *page_name, order = key
        first = rows.iloc[0]
        heading = f"{' '.join(page_name) + ' ' if page_name else ''}({order} against " \
                  f"{reference}, {int(first['seeds'])} seed{'s' if first['seeds'] != 1 else ''})"
        lines.append(heading + (f": {first['divergence']}" if first["divergence"] else ""))
        for claim, row in zip(rows.index.get_level_values("claim"), rows.to_dict("records")):
            if row["n"] == 0:
                lines.append(f"  {claim}: cannot test ({row['undefined']})")
                continue
            text = (f"  {claim}: holds for {row['holds']} of {row['n']} seeds (sign test "
                    f"p = {row['sign p']:.3g}); ratios {row['per seed']}")
            if np.isfinite(row["low"]):
                text += (f"; geometric mean {row['ratio']:.3g}, {level:.0%} t-interval "
                         f"[{row['low']:.3g}, {row['high']:.3g}]")
            elif np.isfinite(row["ratio"]):
                text += f"; geometric mean {row['ratio']:.3g}, {row['interval note']}"
            else:
                text += f"; {row['interval note']}"
            if row["undefined"]:
                text += f" [no ratio on {row['undefined']}]"
            lines.append(text)
    return lines


def claims_display(claims: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """`page_claims` or `claims_table` as a reader's table: per claim 'k of n' seeds where it
    holds, the sign test's p, the geometric-mean ratio and its t-interval (or why there is none),
    the per-seed ratios, and why some seeds have no ratio. Numbers rounded to 3 significant
    figures, so the rendered HTML and nbval's comparison stay stable."""
    def interval(row) -> str:
        if np.isfinite(row["low"]):
            return f"{row['low']:.3g} to {row['high']:.3g}"
        return row["interval note"] or "n/a"

    shown = pd.DataFrame({
        "holds (k of n seeds)": [f"{k} of {n}" if n else "cannot test"
                                 for k, n in zip(claims["holds"], claims["n"])],
        "sign test p": [f"{p:.3g}" if np.isfinite(p) else "n/a" for p in claims["sign p"]],
        "geometric mean ratio": [f"{r:.3g}" if np.isfinite(r) else "n/a"
                                 for r in claims["ratio"]],
        f"{level:.0%} t-interval": [interval(row) for _, row in claims.iterrows()],
        "per-seed ratios": claims["per seed"],
        "no ratio on": [u or "" for u in claims["undefined"]],
    }, index=claims.index)
    return shown
