"""Across the figure pages: does each claim of the paper hold in our runs, and for how many seeds?

Every figure page compares forward SGD with another order seed by seed (`orders.stability_table`).
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

Beyond the claims, `decay_table` asks of every compared order whether its own steps shrink (the
displacement decay of that order alone, not its ratio to forward's): convergence to a point, the
paper's explanation of backward's smoothness, needs a decay below 1. `summary_numbers` gives every
number the summary page's prose quotes (glued into it) and `page_links` the list of summarised
pages.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from .registry import PROFILES, page, resolved_parameters
from .numbers import add_ranges, honest, interval_text, listed, p_text, plural, range_text, sig
from .claims import (CLAIMS, MIN_INTERVAL_SEEDS, claim_evidence, claim_ratios,
                     claims_display, divergence_note, page_claims, smallest_sign_p, t_quantile)
from .orders import (CLAIM_KEYS, OrdersExperiment, trajectory_loads, order_key, range_reference, span,
                    stability_table)
from ..cache import MissingResultError
from ..parallel import run_many, stored_result
from numpy.polynomial import Polynomial

from ..stability import (MIN_TAIL_STEPS, TREND_DEGREE, common_tail, curve_values, diverged_at,
                         tail_std)
from ..trajectory import Runtime
from ..validation import check_bool, check_choice, check_list, check_number, check_str

__all__ = ["CLAIMS", "MIN_INTERVAL_SEEDS", "SummaryConfig", "Summary", "page_experiment",
           "claim_ratios", "claim_evidence", "smallest_sign_p", "t_quantile", "divergence_note",
           "page_claims", "summarise", "claims_table", "verdicts", "claims_display",
           "claims_by_claim", "decay_table", "summary_numbers", "page_key", "page_links",
           "claims_caption", "seed_counts_table", "spread_check", "run_identity",
           "shared_runs", "SHARED_COLUMNS"]


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
    stored = {c: _stored(c, runtime) for c in experiment.configs()}
    missing = [c for c, result in stored.items() if result is None]
    if missing and not train_missing:
        raise ValueError(
            f"page {name!r} has {len(missing)} trajectories not computed (or not valid) at "
            f"profile {profile!r}; execute it first: python -m iteration_order.book run "
            f"--profile {profile} --only {name}")
    if missing:
        stored.update(zip(missing, run_many(missing, runtime, jobs=jobs, announce=False)))
    return experiment, {(c.seed, c.order): stored[c] for c in experiment.configs()}


def _stored(config, runtime: Runtime) -> dict | None:
    """The cached result, or None where there is none, also under ``cache='only'`` (which raises
    per run): the summary then names the page to execute, with all its missing runs counted."""
    try:
        return stored_result(config, runtime)
    except MissingResultError:
        return None


class Summary(NamedTuple):
    claims: pd.DataFrame     # `page_claims` of every page: one row per (page, order, claim)
    tables: dict             # page -> its per-seed `stability_table`
    runs: dict               # page -> {(seed, order): run dict}, the trajectories loaded


def summarise(config: SummaryConfig, runtime: Runtime = Runtime(progress=False),
              jobs: int = 1) -> Summary:
    """Every page's claims, per-seed stability table and loaded runs (for the provenance)."""
    parts, tables, runs = {}, {}, {}
    for name in config.pages:
        experiment, results = page_experiment(name, config.profile, config.train_missing,
                                              runtime, jobs)
        runs[name] = results
        tables[name] = table = stability_table(experiment, results)
        parts[name] = page_claims(table, experiment.orders[0], config.level)
    claims = pd.concat(parts, names=["page"])
    return Summary(_with_shared(claims, shared_runs(runs)), tables, runs)


# columns `summarise` adds to the claims: which comparisons use the same runs
SHARED_COLUMNS = ("reference runs", "other runs", "same runs as", "shares runs with")


def run_identity(result: dict) -> str:
    """What makes two loaded runs one: the cache key of its config (the results file it was
    read from), or the config itself where a result has no key."""
    return result.get("key") or json.dumps(result["config"], sort_keys=True, default=str)


def shared_runs(runs: dict, reference: str = "forward") -> pd.DataFrame:
    """Which comparisons of the summarised pages use the same runs. ``runs``: page -> {(seed,
    order): run} (`Summary.runs`). One row per (page, compared order): ``reference runs`` and
    ``other runs`` (the `run_identity` of each seed's runs, in seed order); ``same runs as``:
    the first earlier comparison whose runs are identical ('page order', '' if none: such a
    comparison is the same evidence and is counted once); ``shares runs with``: the other
    comparisons that share some but not all of its runs (usually the reference's: related, not
    independent, evidence)."""
    rows = {}
    for name, results in runs.items():
        seeds = list(dict.fromkeys(seed for seed, _ in results))
        for order in dict.fromkeys(order for _, order in results):
            if order == reference:
                continue
            rows[(name, order)] = (
                tuple(run_identity(results[(s, reference)]) for s in seeds
                      if (s, reference) in results),
                tuple(run_identity(results[(s, order)]) for s in seeds))
    table = []
    for (name, order), (ref, other) in rows.items():
        same = next((f"{n} {o}" for (n, o), (r, x) in rows.items()
                     if (r, x) == (ref, other) and (n, o) != (name, order)
                     and list(rows).index((n, o)) < list(rows).index((name, order))), "")
        mine = set(ref) | set(other)
        related = [f"{n} {o}" for (n, o), (r, x) in rows.items() if (n, o) != (name, order)
                   and (r, x) != (ref, other) and mine & (set(r) | set(x))]
        table.append({"page": name, "order": order, "reference runs": ref, "other runs": other,
                      "same runs as": same, "shares runs with": listed(related)})
    columns = ["page", "order", *SHARED_COLUMNS]
    return pd.DataFrame(table, columns=columns).set_index(["page", "order"])


def _with_shared(claims: pd.DataFrame, shared: pd.DataFrame) -> pd.DataFrame:
    """The claims with `shared_runs`'s columns, per (page, order)."""
    claims = claims.copy()
    keys = list(zip(claims.index.get_level_values("page"), claims.index.get_level_values("order")))
    for column in SHARED_COLUMNS:
        empty = () if column.endswith("runs") else ""
        claims[column] = [shared.loc[key, column] if key in shared.index else empty
                          for key in keys]
    return claims


def claims_table(config: SummaryConfig, runtime: Runtime = Runtime(progress=False),
                 jobs: int = 1) -> tuple[pd.DataFrame, dict]:
    """`page_claims` of every page, one row per (page, compared order, claim). Also returns each
    page's per-seed stability table."""
    summary = summarise(config, runtime, jobs)
    return summary.claims, summary.tables


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
                  f"{reference}, {plural(int(first['seeds']), 'seed')})"
        lines.append(heading + (f": {first['divergence']}" if first["divergence"] else ""))
        for claim, row in zip(rows.index.get_level_values("claim"), rows.to_dict("records")):
            if row["n"] == 0:
                lines.append(f"  {claim}: cannot test ({row['undefined']})")
                continue
            text = (f"  {claim}: holds for {row['holds']} of {plural(int(row['n']), 'seed')} "
                    f"(sign test p = {p_text(row['sign p'])}); ratios {row['per seed']}; "
                    + interval_text(row["ratio"], row["low"], row["high"],
                                    row["interval note"], level))
            if row["undefined"]:
                text += f" [no ratio on {row['undefined']}]"
            lines.append(text)
    return lines


def claims_by_claim(claims: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """`claims_display` of a `claims_table`, grouped by claim (in `CLAIMS` order) and, within a
    claim, by page in the summary's order: the evidence for one claim reads down one block."""
    shown = claims_display(claims, level)
    pages = list(dict.fromkeys(shown.index.get_level_values("page")))
    order = sorted(range(len(shown)), key=lambda i: (
        list(CLAIMS).index(shown.index[i][2]), pages.index(shown.index[i][0])))
    return shown.iloc[order].reorder_levels(["claim", "page", "order"])


def _own_decays(table: pd.DataFrame, order: str) -> tuple[pd.Series, pd.Series]:
    """Per seed, the displacement decay of ``order`` and of the reference on the same seeds."""
    rows = table.xs(order, level="order")
    return rows["displacement decay other"].astype(float), \
        rows["displacement decay fwd"].astype(float)


def decay_table(tables: dict) -> pd.DataFrame:
    """Does each order's own step size shrink? One row per (page, compared order): per seed the
    displacement decay of that order and of forward on the same seed (median move between
    consecutive recorded iterates over the last quarter of training / over the second quarter;
    below 1 the steps shrink, as convergence to a point needs), and on how many seeds each is
    above 1 (the steps grow). Numbers as text at 3 significant figures, for a stable display."""
    rows = []
    for name, table in tables.items():
        for order in table.index.get_level_values("order").unique():
            own, forward = _own_decays(table, order)
            defined = own[np.isfinite(own)]
            defined_fwd = forward[np.isfinite(forward)]
            rows.append({
                "page": name, "order": order,
                "seeds": len(own),
                "steps grow (decay > 1)": f"{int((defined > 1).sum())} of {len(defined)}",
                "decay per seed": ", ".join(honest(v, 1.0) for v in own),
                "forward: steps grow": f"{int((defined_fwd > 1).sum())} of {len(defined_fwd)}",
                "forward: decay per seed": ", ".join(honest(v, 1.0) for v in forward)})
    return pd.DataFrame(rows).set_index(["page", "order"])


def page_key(name: str) -> str:
    """A page's name as it appears in glue keys: fig04-x2 -> fig04_x2."""
    return name.replace("-", "_")


# a page decides for a claim alone when it holds on most of its seeds and its two-sided sign test
# is below this level; the floor 2·0.5ⁿ is quoted for these seed counts (3 and 5: the pages' usual
# counts; 20: where the first goes below 0.001)
ALONE_LEVEL = 0.05
SIGN_FLOOR_SEEDS = (3, 5, 20)


def summary_numbers(claims: pd.DataFrame, tables: dict, level: float = 0.95) -> dict:
    """Every number (and list of pages) the summary page's prose quotes, by glue key.

    * ``pages_n``, ``min_interval_seeds``, ``min_tail_steps``, ``level_pct``; ``seeds_max``
      (most seeds of any page's claim) with ``sign_p_floor``, the smallest two-sided sign-test
      p they can give, and ``t_quantile_2``/``_3``/``_5`` (the t factor of a `level` interval
      from 2, 3, 5 seeds);
    * per page, compared order and claim (``<page>_<order>_<claim>_``, `page_key`, `order_key`,
      `orders.CLAIM_KEYS`): ``n``, ``k`` (seeds where it holds), ``p`` (sign test), ``gm``
      (geometric mean), ``low``/``high`` (t-interval; NaN where none), ``min``/``max`` of the
      per-seed ratios, and ``evidence`` ('k of n seeds, sign test p = ...' or 'cannot test');
    * per claim (``<claim>_``): ``rows`` (page-order pairs), ``testable`` (rows with a ratio on
      some seed) and ``untestable`` with ``untestable_pages`` (their names), ``all_seeds`` (rows
      where it holds on every seed with a ratio) with ``all_seeds_pages``, ``no_seed`` (rows where
      it holds on none), ``gm_min``/``gm_max`` over the testable rows, ``intervals`` (rows with a
      t-interval), ``interval_below_one``/``interval_above_one`` (rows whose interval lies below /
      above 1), ``seeds`` and ``seeds_holding`` (summed over the rows);
    * per page and order, that order's own displacement decay (``<page>_<order>_decay_own_min``,
      ``_max``, ``_above_one``, ``_seeds``) and forward's on the same seeds (``_decay_fwd_min``,
      ``_max``, ``_above_one``);
    * over the full-backward comparisons (compared order ``backward``): ``decay_backward_pages``,
      ``decay_backward_seeds`` (seeds with a decay), ``decay_backward_above_one`` (seeds whose
      backward steps grow), ``decay_backward_pages_all_above`` (pages where they grow on every
      seed), ``decay_backward_min``/``max``; forward on the same seeds: ``decay_forward_min``/
      ``max``, ``decay_forward_above_one``, ``decay_forward_above_110`` (grow by more than 10%).
    """
    # one helper per block of keys above, merged in that order
    numbers = _setting_numbers(claims, tables, level)
    numbers.update(_row_numbers(claims, level))
    numbers.update(_shared_numbers(claims))
    numbers.update(_claim_numbers(claims))
    numbers.update(_page_decay_numbers(tables))
    numbers.update(_backward_decay_numbers(claims, tables))
    return add_ranges(numbers, _summary_reference)


def _setting_numbers(claims: pd.DataFrame, tables: dict, level: float) -> dict:
    """What the summary's method section quotes: the thresholds, and what the most seeds of any
    row can show (the sign test's floor, the t factors of a few seed counts)."""
    numbers: dict = {"pages_n": len(tables), "min_interval_seeds": MIN_INTERVAL_SEEDS,
                     "min_tail_steps": MIN_TAIL_STEPS, "level_pct": 100 * level}
    seeds_max = int(claims["n"].max()) if len(claims) else 0
    numbers["seeds_max"] = seeds_max
    numbers["sign_p_floor"] = smallest_sign_p(seeds_max)
    numbers["alone_level"] = ALONE_LEVEL
    for n in SIGN_FLOOR_SEEDS:
        numbers[f"sign_p_floor_{n}"] = smallest_sign_p(n)
    for n in (2, 3, 5):
        numbers[f"t_quantile_{n}"] = t_quantile(n, level)
    return numbers


def _row_numbers(claims: pd.DataFrame, level: float) -> dict:
    """Per page, compared order and claim, the evidence of that row (``<page>_<order>_<claim>_``
    keys), so that the prose can quote any one comparison."""
    numbers: dict = {}
    for (name, order, claim), row in claims.iterrows():
        prefix = f"{page_key(name)}_{order_key(order)}_{CLAIM_KEYS[claim]}"
        low, high = span(row["per seed values"])
        numbers.update({
            f"{prefix}_n": int(row["n"]), f"{prefix}_k": int(row["holds"]),
            f"{prefix}_p": row["sign p"], f"{prefix}_gm": row["ratio"],
            f"{prefix}_low": row["low"], f"{prefix}_high": row["high"],
            f"{prefix}_min": low, f"{prefix}_max": high,
            f"{prefix}_evidence": "cannot test" if row["n"] == 0 else
            f"{row['holds']} of {plural(int(row['n']), 'seed')}, sign test "
            f"p = {p_text(row['sign p'])}",
            f"{prefix}_interval": interval_text(row["ratio"], row["low"], row["high"],
                                                row["interval note"], level)})
    return numbers


def _claim_rows(claims: pd.DataFrame, claim: str) -> pd.DataFrame:
    """The rows of one claim, or none (the table's empty head) where no page has it."""
    return claims.xs(claim, level="claim") if claim in \
        claims.index.get_level_values("claim") else claims.iloc[:0]


def _claim_numbers(claims: pd.DataFrame) -> dict:
    """Per claim (``<claim>_`` keys), over the rows counted as evidence (`_counted`: a
    comparison that repeats another's runs is listed but not counted twice): where it can be
    tested, where it holds on every seed or on none, its geometric means and intervals."""
    numbers: dict = {}
    counted = claims[_counted(claims)]
    for claim, short in CLAIM_KEYS.items():
        every_row, rows = _claim_rows(claims, claim), _claim_rows(counted, claim)
        numbers[f"{short}_rows_listed"] = len(every_row)
        numbers[f"{short}_duplicates"] = len(every_row) - len(rows)
        testable = rows[rows["n"] > 0]
        untestable = rows[rows["n"] == 0]
        every = testable[testable["holds"] == testable["n"]]
        with_interval = testable[np.isfinite(testable["low"].astype(float))]
        gm_low, gm_high = span(testable["ratio"])
        numbers.update({
            f"{short}_rows": len(rows), f"{short}_testable": len(testable),
            f"{short}_untestable": len(untestable),
            f"{short}_untestable_pages": _names(untestable.index),
            f"{short}_all_seeds": len(every), f"{short}_all_seeds_pages": _names(every.index),
            f"{short}_interval_across_one": int(((with_interval["low"] <= 1)
                                                 & (with_interval["high"] >= 1)).sum()),
            f"{short}_some_seeds_pages": _names(testable[testable["holds"] < testable["n"]].index),
            f"{short}_no_seed": int((testable["holds"] == 0).sum()),
            f"{short}_gm_min": gm_low, f"{short}_gm_max": gm_high,
            f"{short}_intervals": len(with_interval),
            f"{short}_interval_below_one": int((with_interval["high"] < 1).sum()),
            f"{short}_interval_above_one": int((with_interval["low"] > 1).sum()),
            f"{short}_seeds": int(testable["n"].sum()),
            f"{short}_seeds_holding": int(testable["holds"].sum())})
        # where a page's own seeds decide for the claim, by its sign test alone
        alone = testable[(2 * testable["holds"] > testable["n"])
                         & (testable["sign p"].astype(float) < ALONE_LEVEL)]
        numbers[f"{short}_alone"] = len(alone)
        numbers[f"{short}_alone_pages"] = _names(alone.index)
    return numbers


def _page_decay_numbers(tables: dict) -> dict:
    """Per page and compared order, that order's own displacement decay and forward's on the
    same seeds (``<page>_<order>_decay_`` keys): does each order's step size shrink?"""
    numbers: dict = {}
    for name, table in tables.items():
        for order in table.index.get_level_values("order").unique():
            own, forward = _own_decays(table, order)
            prefix = f"{page_key(name)}_{order_key(order)}"
            numbers[f"{prefix}_decay_own_min"], numbers[f"{prefix}_decay_own_max"] = span(own)
            numbers[f"{prefix}_decay_own_above_one"] = int((own > 1).sum())
            numbers[f"{prefix}_decay_own_seeds"] = int(np.isfinite(own).sum())
            numbers[f"{prefix}_decay_fwd_min"], numbers[f"{prefix}_decay_fwd_max"] = \
                span(forward)
            numbers[f"{prefix}_decay_fwd_above_one"] = int((forward > 1).sum())
    return numbers


def _backward_decay_numbers(claims: pd.DataFrame, tables: dict) -> dict:
    """The decays pooled over the full-backward comparisons, each counted once (a comparison
    that repeats another's runs is left out), on the seeds where both orders have one: the
    paper's explanation of backward's smoothness, convergence to a point, needs them below 1."""
    backward = {"own": [], "fwd": [], "pages": 0, "all_above": 0}
    duplicates = {(name, order) for name, order, _ in claims[~_counted(claims)].index}
    for name, table in tables.items():
        for order in table.index.get_level_values("order").unique():
            if order != "backward" or (name, order) in duplicates:
                continue
            own, forward = _own_decays(table, order)
            both = np.isfinite(own) & np.isfinite(forward)
            backward["own"] += list(own[both])
            backward["fwd"] += list(forward[both])
            backward["pages"] += 1
            backward["all_above"] += bool(both.any() and (own[both] > 1).all())
    own, fwd = np.asarray(backward["own"]), np.asarray(backward["fwd"])
    numbers: dict = {
        "decay_backward_pages": backward["pages"], "decay_backward_seeds": len(own),
        "decay_backward_above_one": int((own > 1).sum()),
        "decay_backward_pages_all_above": backward["all_above"],
        "decay_forward_above_one": int((fwd > 1).sum()),
        "decay_forward_above_110": int((fwd > 1.1).sum())}
    numbers["decay_backward_min"], numbers["decay_backward_max"] = span(own)
    numbers["decay_forward_min"], numbers["decay_forward_max"] = span(fwd)
    return numbers


def _summary_reference(prefix: str) -> float | None:
    """What a summary range is compared with: ratios (claims, geometric means, decays) with 1."""
    return range_reference(prefix)


def _counted(claims: pd.DataFrame) -> pd.Series:
    """The claims rows counted as evidence: all but those whose comparison uses the same runs as
    an earlier one (`shared_runs`), which would count those runs twice."""
    if "same runs as" not in claims:
        return pd.Series(True, index=claims.index)
    return claims["same runs as"].fillna("") == ""


def _shared_numbers(claims: pd.DataFrame) -> dict:
    """The comparisons and runs the summary counts, each once, and which ones share runs."""
    pairs = claims.index.droplevel("claim").unique()
    out = {"comparisons_listed": len(pairs)}
    if "same runs as" not in claims:
        out.update({"comparisons_n": len(pairs), "duplicate_comparisons_n": 0,
                    "duplicate_comparisons_text": "none", "related_comparisons_text": "none",
                    "shared_runs_note": "no comparison shares runs with another"})
        return out
    first = claims.groupby(level=["page", "order"], sort=False).first()
    duplicates = first[first["same runs as"] != ""]
    runs = {r for column in ("reference runs", "other runs") for ids in first[column]
            for r in ids}
    listed_runs = sum(len(a) + len(b) for a, b in
                      zip(first["reference runs"], first["other runs"]))
    dup_text = listed(f"{page} {order_key(order)} uses the same runs as "
                      f"{same.split(' ')[0]} {order_key(same.split(' ', 1)[1])}"
                      for (page, order), same in duplicates["same runs as"].items()) or "none"
    groups = _components({(page, order): set(a) | set(b) for (page, order), a, b in zip(
        first.index, first["reference runs"], first["other runs"])
        if (page, order) not in duplicates.index})
    groups = [listed(f"{page} {order_key(order)}" for page, order in group)
              for group in groups if len(group) > 1]
    rel_text = "; ".join(groups) or "none"
    note = (f"{plural(len(pairs), 'comparison')} listed, {len(pairs) - len(duplicates)} counted: "
            + (f"{dup_text} (counted once)" if len(duplicates) else "no comparison repeats "
               "another's runs")
            + (f"; related comparisons that share runs (the reference's), not independent "
               f"evidence: {rel_text}" if groups else "")
            + f". {plural(len(runs), 'distinct run')} in all.")
    out.update({"comparisons_n": len(pairs) - len(duplicates),
                "duplicate_comparisons_n": len(duplicates),
                "duplicate_comparisons_text": dup_text, "related_comparisons_text": rel_text,
                "runs_distinct": len(runs), "runs_listed": listed_runs,
                "shared_runs_note": note})
    return out


def _components(runs: dict) -> list[list]:
    """Groups of comparisons linked by shared runs (``runs``: comparison -> its run ids), each in
    the order given."""
    groups: list[list] = []
    for key, ids in runs.items():
        linked = [g for g in groups if any(runs[k] & ids for k in g)]
        merged = [k for g in linked for k in g] + [key]
        groups = [g for g in groups if g not in linked] + [merged]
    order = list(runs)
    return [sorted(g, key=order.index) for g in groups]


def _names(index) -> str:
    """(page, order) pairs as a list in words: 'fig08-vgg19 and fig09-resnet50' ('none')."""
    pages = list(dict.fromkeys(name for name, _ in index))
    return listed(pages) if pages else "none"


def page_links(pages, profile: str) -> str:
    """MyST Markdown: one bullet per summarised page, a link to it (its title, `{doc}` to
    ``/book/<page>``, where the runner writes executed pages) with what it compares and on how
    many seeds at ``profile``."""
    lines = []
    for name in pages:
        params = resolved_parameters(name, profile)
        orders = [order_key(o) for o in params.get("orders", ["forward", "backward"])]
        seeds = len(params["seeds"])
        lines.append(f"- {{doc}}`/book/{name}`: {orders[0]} against "
                     f"{listed(orders[1:])}, {plural(seeds, 'seed')}, "
                     f"{params['steps']} steps")
    return "\n".join(lines)


def claims_caption(claims: pd.DataFrame, shown: list[str], profile: str,
                   level: float = 0.95) -> str:
    """The caption of `plots.plot_claims` for these claims, from the table it draws."""
    rows = claims.index.droplevel("claim").unique()
    pages = rows.get_level_values("page").unique()
    cannot = claims[claims.index.get_level_values("claim").isin(shown) & (claims["n"] == 0)]
    return (f"Not a figure of the paper: the book's summary of {len(shown)} of its claims over "
            f"{len(pages)} figure pages ({len(rows)} comparisons with forward), each at its own "
            f"{profile} profile. One row per page and compared order; orange dots: the per-seed "
            f"ratios other order / forward (left of the dashed line at 1, the other order does "
            f"better on that seed); black diamond: their geometric mean, with its {level:.0%} "
            f"t-interval where a row has at least {MIN_INTERVAL_SEEDS} seeds with the ratio. "
            f"'Cannot test' ({len(cannot)} panel rows here): no seed has the ratio (too few "
            f"shared tail steps, or diverged runs); 'not measured': the page has no such curve "
            f"(accuracy on a regression). Log scales, each panel its own.")


def seed_counts_table(claims: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """What each number of seeds found among the claims can show: per n (seeds with a ratio), how
    many page-claim rows have it, the smallest two-sided sign-test p it allows and whether that can
    reach 5%, and the t factor of a ``level`` interval (none below `MIN_INTERVAL_SEEDS`)."""
    counts = Counter(int(n) for n in claims["n"] if n > 0)
    rows = [{"seeds with a ratio": n, "page-claim rows": counts[n],
             "smallest sign-test p": p_text(smallest_sign_p(n)),
             "can reach p ≤ 0.05": "yes" if smallest_sign_p(n) <= 0.05 else "no",
             f"{level:.0%} t factor": sig(t_quantile(n, level)) if n >= MIN_INTERVAL_SEEDS
             else f"no interval (under {MIN_INTERVAL_SEEDS} seeds)"}
            for n in sorted(counts, reverse=True)]
    return pd.DataFrame(rows).set_index("seeds with a ratio")


def _residuals(values: np.ndarray, steps, degree: int) -> np.ndarray:
    """The curve's residuals about its least-squares polynomial of ``degree`` in the step (the
    spread's own fit, `stability.detrended_spread`, at `TREND_DEGREE`)."""
    x = np.asarray(steps, dtype=float)
    return values - Polynomial.fit(x, values, degree)(x)


def _spread(values: np.ndarray, steps, degree: int) -> float:
    residuals = _residuals(values, steps, degree)
    return float(np.sqrt((residuals ** 2).sum() / (len(values) - degree - 1)))


def _range(values, digits: int = 2, reference: float | None = None) -> str:
    return range_text(*span(values), reference, digits)


def spread_check(runs: dict, key: str = "train_loss", tail: float = 0.25,
                 reference: str = "forward") -> pd.DataFrame:
    """Why the claims use the detrended spread, checked on the runs themselves. Per page and
    compared order, over the seeds whose shared tail holds at least `MIN_TAIL_STEPS` steps (and
    whose runs did not diverge): the per-seed ratio other/forward of the plain standard deviation
    of the curve (`stability.tail_std`, which measures the descent as well as the fluctuation),
    of the spread about a quadratic trend (the claims' statistic), the largest change of that
    ratio with a linear or a cubic trend instead, and the lag-one autocorrelation of the
    reference's residuals (near 0 or negative: the trend leaves noise; clearly positive: a trend
    the quadratic missed). Ranges over the seeds, as text. ``runs``: page -> {(seed, order): run},
    `Summary.runs`."""
    rows = []
    for name, results in runs.items():
        orders = list(dict.fromkeys(order for _, order in results))
        seeds = list(dict.fromkeys(seed for seed, _ in results))
        for order in orders:
            if order == reference:
                continue
            plain, spread, change, lag = [], [], [], []
            for seed in seeds:
                a, b = results[(seed, reference)], results[(seed, order)]
                if diverged_at(a) is not None or diverged_at(b) is not None:
                    continue
                steps = common_tail(a, b, tail)
                if len(steps) < MIN_TAIL_STEPS:
                    continue
                va, vb = curve_values(a, key, steps), curve_values(b, key, steps)
                if not (np.isfinite(va).all() and np.isfinite(vb).all()):
                    continue
                plain.append(tail_std(b, key, steps) / tail_std(a, key, steps))
                by_degree = {d: _spread(vb, steps, d) / _spread(va, steps, d)
                             for d in (TREND_DEGREE - 1, TREND_DEGREE, TREND_DEGREE + 1)}
                spread.append(by_degree[TREND_DEGREE])
                change.append(max(abs(r - by_degree[TREND_DEGREE]) for r in by_degree.values()))
                residuals = _residuals(va, steps, TREND_DEGREE)
                lag.append(float(np.corrcoef(residuals[:-1], residuals[1:])[0, 1]))
            if not spread:
                continue
            rows.append({
                "page": name, "order": order, "seeds": len(spread),
                "plain std ratio": _range(plain, reference=1.0),
                "spread ratio (quadratic trend)": _range(spread, reference=1.0),
                "largest change with a linear or cubic trend": sig(max(change), 2),
                f"{reference}'s residuals: lag-one autocorrelation": _range(lag, reference=0.0)})
    columns = ["page", "order", "seeds", "plain std ratio", "spread ratio (quadratic trend)",
               "largest change with a linear or cubic trend",
               f"{reference}'s residuals: lag-one autocorrelation"]
    return pd.DataFrame(rows, columns=columns).set_index(["page", "order"])


def page_setup(values: dict) -> SummaryConfig:
    """What a summary page summarises, from the template's parameter values."""
    return SummaryConfig(pages=values["pages"], profile=values["profile"], level=values["level"],
                         train_missing=values["train_missing"])


def page_loads(config: SummaryConfig, runtime: Runtime) -> list:
    """The trajectories of the summarised pages at the summary's profile (`page_experiment`); a
    smoke summary trains what it lacks, so nothing is pre-checked there."""
    if config.train_missing:
        return []
    return [load for name in config.pages for load in trajectory_loads(
        OrdersExperiment.from_parameters(resolved_parameters(name, config.profile)).configs(),
        runtime)]
