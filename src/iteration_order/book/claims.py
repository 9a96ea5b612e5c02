"""One page's claims, seed by seed: each claim of the paper as a per-seed ratio other order /
forward, its evidence (k of n seeds with the exact sign test, a t-interval of the geometric mean
from `MIN_INTERVAL_SEEDS` seeds on), and the table a reader sees.

A figure page (`pages`) and the summary across pages (`summary`) both use this; it imports
neither, so the two do not import each other. The statistics are explained in `summary`'s
docstring and on the summary page.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from ..validation import check_number
from .numbers import honest, p_text, plural, range_text

__all__ = ["Claim", "CLAIMS", "MIN_INTERVAL_SEEDS", "claim_ratios", "smallest_sign_p",
           "t_quantile", "claim_evidence", "divergence_note", "page_claims", "claims_display"]


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
    "train accuracy fluctuates less (detrended spread)":
        Claim("train_acc spread other", "train_acc spread fwd", True),
    "steps shrink more (displacement decay)":
        Claim("displacement decay other", "displacement decay fwd", False),
    "lower typical train loss (tail median)":
        Claim("train_loss median other", "train_loss median fwd", False),
}

MIN_INTERVAL_SEEDS = 4  # fewest seeds with a ratio for which a t-interval is given


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


def t_quantile(n: int, level: float = 0.95) -> float:
    """The t quantile a `level` interval from ``n`` seeds multiplies s/√n by (n − 1 degrees of
    freedom): 12.7 for 2 seeds, 4.3 for 3, 2.78 for 5 at 95%."""
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 seeds; got n={n}")
    check_number("level", level, 0, 1, low_open=True, high_open=True)
    return float(stats.t.ppf((1 + level) / 2, n - 1))


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
    return (f"{len(hit)} of {plural(len(rows), 'seed')} diverged ({'; '.join(parts)}); ratios "
            f"from {plural(left, 'seed')}")


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
    return "; ".join(f"{count} of {plural(len(per_seed), 'seed')}: {reason}"
                     for reason, count in reasons.items())


def page_claims(table: pd.DataFrame, reference: str = "forward",
                level: float = 0.95) -> pd.DataFrame:
    """One row per (compared order, claim) of one page's stability table: ``seeds`` compared,
    ``diverged`` (seeds with a diverged run) and ``divergence`` (in words), the per-seed ratios
    (``per seed values``, floats in seed order, NaN where undefined; ``per seed``, the same in
    words, 'n/a' where undefined), `claim_evidence`'s columns, and ``undefined`` (why some seeds
    have no ratio)."""
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
                "per seed values": tuple(float(v) for v in per_seed),
                "per seed": ", ".join(honest(v, 1.0) for v in per_seed),
                **claim_evidence(per_seed.to_numpy(dtype=float), level),
                "undefined": _undefined_note(compared, per_seed, CLAIMS[claim])})
    return pd.DataFrame(rows).set_index(["order", "claim"])


def claims_display(claims: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """`page_claims` or `claims_table` as a reader's table: per claim 'k of n' seeds where it
    holds, the sign test's p, the geometric-mean ratio and its t-interval (or why there is none),
    the per-seed ratios, and why some seeds have no ratio. Numbers rounded to 3 significant
    figures, so the rendered HTML and nbval's comparison stay stable."""
    def interval(row) -> str:
        if np.isfinite(row["low"]):
            return range_text(row["low"], row["high"], 1.0)
        return row["interval note"] or "n/a"

    shown = pd.DataFrame({
        "holds (k of n seeds)": [f"{k} of {n}" if n else "cannot test"
                                 for k, n in zip(claims["holds"], claims["n"])],
        "sign test p": [p_text(p) for p in claims["sign p"]],
        "geometric mean ratio": [honest(r, 1.0) for r in claims["ratio"]],
        f"{level:.0%} t-interval": [interval(row) for _, row in claims.iterrows()],
        "per-seed ratios": claims["per seed"],
        "no ratio on": [u or "" for u in claims["undefined"]],
    }, index=claims.index)
    if "same runs as" in claims:  # a comparison repeating another's runs: counted once
        shown["same runs as"] = claims["same runs as"].fillna("")
    return shown
