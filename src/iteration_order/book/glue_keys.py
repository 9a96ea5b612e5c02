"""The glue keys each template's pages may glue, declared in one place.

A page's numbers are glued under keys that its study module builds from parts
(``f"{order_key(order)}_{CLAIM_KEYS[claim]}_evidence"``), so a key that the prose in
``experiments.yml`` quotes (``{glue:text}`backward_train_spread_evidence```) appears nowhere in
the source, and a mistyped one would only show when the page executes (as
``[key: not computed]`` in the notebook, as a missing key in the strict build). Here each template
declares its keys as a few readable patterns, ``"{order}_{claim}_{claim_stat}"``, each
placeholder with a finite list of alternatives (taken from the studies' constants where they
exist), compiled once to one anchored regex per template. `registry_problems`, part of
``python -m iteration_order.book check`` (`studies.check_registry`), refuses a registry whose
prose quotes a key its page's template does not declare, before any page runs;
``tests/test_glue_keys.py`` checks that every key the executed pages glue, and that the current
code computes from the committed results, is declared.

Where a study adds a key, add it here too (the test names the key and the template).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import contraction, lie_bracket, sharpness, stationary
from .display import DATA_DIGEST, PNG_DIGEST
from .orders import CLAIM_KEYS
from .registry import load_pages
from .summary import page_key
from ..data import DATASET_NAMES

__all__ = ["TEMPLATES", "declared", "undeclared", "quoted_keys", "registry_problems"]

# -- alternatives shared by several templates ---------------------------------------------------

ENDS = ("min", "max", "range")  # numbers.add_ranges adds X_range beside every X_min, X_max pair
# a glued figure: its own key, the two digests display.glue adds, and the caption each template
# glues beside it
FIGURE_PARTS = ("", DATA_DIGEST, PNG_DIGEST, "_caption")
ORDERS = ("forward", "backward", "reset", "switch")  # orders.order_key of each kind of order
CLAIMS = tuple(CLAIM_KEYS.values())
# per claim and compared order (orders._comparison_numbers, summary._row_numbers)
CLAIM_STATS = ("n", "k", "p", "gm", "evidence", "interval", *ENDS)
# a step n or a position in a list of steps, which the page's parameters choose (Appendix C's
# sweeps): a whole number, never a word, so a typo in the words around it is still refused
WHOLE = re.compile(r"[0-9]+")

SHARED = {"end": ENDS, "figure_part": FIGURE_PARTS, "order": ORDERS, "claim": CLAIMS,
          "claim_stat": CLAIM_STATS}


@dataclass(frozen=True)
class Keys:
    """One template's glue keys: ``patterns`` over the placeholders of ``alternatives`` (and of
    `SHARED`), plus ``provenance`` and each of ``figures`` with its `FIGURE_PARTS`, which every
    template glues."""
    patterns: tuple[str, ...]
    figures: tuple[str, ...] = ()
    alternatives: dict = field(default_factory=dict)

    def all_patterns(self) -> tuple[str, ...]:
        figures = ("{figure}{figure_part}",) if self.figures else ()
        return ("provenance", *figures, *self.patterns)

    def all_alternatives(self) -> dict:
        return {**SHARED, "figure": self.figures, **self.alternatives}


def _run_keys() -> tuple[str, ...]:
    """`lie_bracket.run_key` of every named data set (an ``npz:`` set has no name to declare)."""
    return tuple(sorted({lie_bracket.run_key({"study": {"trajectory": {"dataset": name}}})
                         for name in DATASET_NAMES if not name.startswith("npz:")}))


CONTRACTION = Keys(
    figures=tuple(f"fig_{name}" for name in ("constant", "quadratic", "linear", "regression",
                                             "increments")),
    patterns=("{setting}", "constant_{constant}", "closed_gap_{gap}", "roundoff",
              "{example}_{example_stat}"),
    alternatives={
        # the notebook's `settings`: its parameters and the quadratic's starting point
        "setting": ("constant_steps", "quadratic_h", "quadratic_steps", "quadratic_theta0",
                    "noise_std", "linear_dim", "linear_h", "linear_steps", "regression_points",
                    "regression_dim", "regression_batch", "regression_h", "regression_steps",
                    "seed"),
        "constant": ("first", "backward_at_first", "forward_changes"),
        "gap": ("max", "below"),
        "example": tuple(contraction.EXAMPLES),
        "example_stat": ("k", "rate", "rate_gap_pct", "roundoff_step", "forward_decay")})

ORDERS_PAGE = Keys(
    figures=("curves",),
    patterns=("{setting}", "{order}_{claim}_{claim_stat}", "{order}_{level}_{end}",
              "{order}_decay_grows_k", "{order}_moves_growth_{count}", "{order}_moves_note",
              "{order}_divergence", "{order}_vs_{order}_{versus}",
              "{order}_vs_{order}_{versus_range}_{end}"),
    alternatives={
        "setting": ("steps", "lr", "batch_size", "seeds_n", "tail_start", "chance_loss"),
        # per order, a per-seed range (orders._order_numbers, _tail_level, _comparison_numbers)
        "level": ("decay_own", "moves_growth", "moves_rho", "acc_final", "train_acc_final",
                  "tail_loss", "tail_loss_chance", "tail_steps"),
        "count": ("k", "n"),
        # the reset page's second order against its third (orders._second_against_third)
        "versus": ("seeds", "level_lower_k", "acc_higher_k", "acc_lower_k"),
        "versus_range": ("level_diff", "acc_diff", "spread_ratio")})

_SWEEP_STATS = ("slope_forward", "slope_approx", "useful", "useful_nh", "crossover",
                "crossover_nh", "leaves", "first_sign", "first_kink", "approx_smallest")
LIE_BRACKET = Keys(
    figures=("sweep_check", "steps", "sweep_runs"),
    patterns=("check_{check_setting}", "fit_points", "check_step_{n}",
              "check_{activation}_n{n}_{sweep_stat}", "check_slope_{slope}_{end}",
              "rule_{rule}", "rule_{rule_kind}_{rule_stat}", "compute_minutes", "studies_n",
              "{run}_{run_stat}", "{run}_sweep_step_{n}", "{run}_n{n}_{sweep_stat}",
              "{run}_n{n}_kink_below_lr", "{run}_ratio_n{n}"),
    alternatives={
        "n": WHOLE,
        "check_setting": ("depth", "width", "batch", "h_min", "h_max", "h_count", "steps"),
        "activation": tuple(lie_bracket.ACTIVATIONS),
        "sweep_stat": _SWEEP_STATS,
        "slope": ("forward", "approx"),
        "rule": ("n", "untestable", "factor", "tolerance"),
        "rule_kind": ("endpoint", "kink"),
        "rule_stat": ("k", "failures"),
        "run": _run_keys(),
        # a run's settings (_run_numbers), along it (_along_numbers) and at its last step
        "run_stat": ("depth", "width", "lr", "batch", "steps", "helps_steps", "helps_text",
                     "first_hurt", "ratio_first_hurt", "last_step", "ratio_last", "gap_last",
                     "correction_last", "correction_over_gap_last", "loss_forward_last",
                     "loss_backward_last", "loss_approx_last", "sign_changes_step1")})

ORDER_AVERAGE = Keys(
    figures=("curves",),
    patterns=("{setting}", "{side}_{side_stat}", "{spread}_{end}", "{spread}_text",
              "threshold_ratio_{end}", "sigma_{window}", "{group}_diff_{end}",
              "{group}_diff_text", "second_{second}", "paired_beyond_{paired}"),
    alternatives={
        "setting": ("lr", "steps", "seeds_n", "seeds_text", "batch_text", "eval_test_text",
                    "record_text", "correction_ratio_text", "load_threshold", "load_rule",
                    "diverged_text", "trained_load_max", "diverged_load_min", "separates",
                    "slow_diff_text", "slow_ratio_min", "summary"),
        "side": ("above", "below"),  # the regularised runs at or above the threshold, below it
        "side_stat": ("n", "diverged"),
        "spread": ("correction_per_pair", "correction_cos", "large_test", "sigma"),
        "window": ("steps", "dof", "first_step", "last_step", "tail"),
        "group": ("small", "average", "natural", "grid", "second"),
        "second": ("n", "ratio_max", "beyond_k", "steps_max"),
        "paired": ("k", "text")})

SHARPNESS = Keys(
    figures=tuple(f"{kind}_{problem}" for kind in ("sharpness", "coincidence")
                  for problem in sharpness.PROBLEMS),
    patterns=("eigenpairs", "{problem}_{setting}", "{problem}_tail_frac_{end}",
              "{problem}_peak_{peak}", "{problem}_{order}_ratio_{end}",
              "{problem}_{order}_{order_stat}", "{problem}_{order}_{rotation}_med_{end}",
              "{problem}_{order}_{rotation}_{pooled}", "{problem}_{order}_rot_max_{largest}",
              "{problem}_{order}_first_{rotation}_{end}", "{problem}_{order}_change_med_{end}",
              "{problem}_{order}_rho_{rotation}_text", "{problem}_{order}_rho_step_{step_rho}"),
    alternatives={
        "problem": sharpness.PROBLEMS,
        "setting": ("steps", "lr", "batch_size", "threshold", "every", "probes", "tail_probes",
                    "tail_start", "seeds_n", "probe_rows", "eigenpairs"),
        "peak": ("frac", "where"),
        "order_stat": ("ratios", "flatter_k", "intervals", "change"),
        "rotation": ("rot", "sub"),  # the leading eigenvector's rotation, the subspace's
        "pooled": ("med", "max", "med_vs_ref"),
        "largest": ("where", "sub", "escape", "entry", "gap", "change"),
        "step_rho": ("rot", "sub", "change")})

STATIONARY = Keys(
    figures=(*(f"histogram_{problem}" for problem in stationary.PROBLEMS), "replicates_figure",
             "ks_distance_figure", "trace_figure"),
    patterns=("{setting}", "{problem}_{test}_{test_stat}", "quadratic_{exact_test}_{test_stat}",
              "{problem}_{problem_stat}", "rep_{rep}", "regression_moment_gap",
              "network_k_start"),
    alternatives={
        "setting": ("chains", "steps", "half_step", "early_step", "alpha", "wrong_scale",
                    "replicates", "replicate_chains"),
        "problem": stationary.PROBLEMS,
        # the KS comparisons of every problem; the quadratic's against its exact law besides
        "test": ("main", "early_same", "early_limit", "widened"),
        "exact_test": ("exact_forward", "exact_backward", "wrong_law"),
        "test_stat": ("D", "p", "verdict"),
        "problem_stat": ("level", "k", "rate", "rate_chains", "backward_drift_max",
                         "forward_drift_median", "single_chain_ratio", "rep_rejections",
                         "rep_expected", "rep_tail_p"),
        "rep": ("rejections", "tests", "expected", "tail_p")})

SUMMARY = Keys(
    figures=("fig_claims",),
    patterns=("{setting}", "t_quantile_{seeds}", "{page}_{order}_{claim}_{claim_stat}",
              "{page}_{order}_{claim}_{bound}", "{claim}_{claim_total}", "{claim}_gm_{end}",
              "{page}_{order}_decay_{decay_of}_{end}", "{page}_{order}_decay_{decay_of}_above_one",
              "{page}_{order}_decay_own_seeds", "decay_{pooled}_{end}",
              "decay_{pooled}_{pooled_stat}"),
    alternatives={
        "setting": ("profile_name", "page_links", "pages_n", "min_interval_seeds",
                    "min_tail_steps", "level_pct", "seeds_max", "sign_p_floor",
                    "alone_level", "sign_p_floor_3", "sign_p_floor_5", "sign_p_floor_20",
                    "comparisons_listed", "comparisons_n", "duplicate_comparisons_n",
                    "duplicate_comparisons_text", "related_comparisons_text", "runs_distinct",
                    "runs_listed", "shared_runs_note"),
        "seeds": ("2", "3", "5"),
        "bound": ("low", "high"),  # the t-interval's ends
        "claim_total": ("rows_listed", "duplicates", "rows", "testable", "untestable",
                        "untestable_pages", "all_seeds", "all_seeds_pages",
                        "interval_across_one", "some_seeds_pages", "no_seed", "intervals",
                        "interval_below_one", "interval_above_one", "seeds", "seeds_holding",
                        "alone", "alone_pages"),
        "decay_of": ("own", "fwd"),
        "pooled": ("backward", "forward"),
        "pooled_stat": ("pages", "seeds", "above_one", "pages_all_above", "above_110")})

TEMPLATES: dict[str, Keys] = {
    "contraction": CONTRACTION, "orders": ORDERS_PAGE, "lie_bracket": LIE_BRACKET,
    "order_average": ORDER_AVERAGE, "sharpness": SHARPNESS, "stationary": STATIONARY,
    "summary": SUMMARY}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _alternation(alternatives) -> str:
    if isinstance(alternatives, re.Pattern):
        return f"(?:{alternatives.pattern})"
    if not alternatives:  # a registry without figure pages: no summary key can name one
        return "(?!)"
    # longest first, so that no alternative is cut short by a prefix of it
    return "(?:" + "|".join(map(re.escape, sorted(alternatives, key=len, reverse=True))) + ")"


def _regex(pattern: str, alternatives: dict) -> str:
    """One pattern as a regex: its literal text escaped, each placeholder its alternatives."""
    parts, at = [], 0
    for match in _PLACEHOLDER.finditer(pattern):
        if match[1] not in alternatives:
            raise ValueError(f"glue key pattern {pattern!r}: unknown placeholder {match[0]}")
        parts += [re.escape(pattern[at:match.start()]),
                  _alternation(alternatives[match[1]])]
        at = match.end()
    return "".join(parts) + re.escape(pattern[at:])


@lru_cache(maxsize=None)
def _compiled(template: str, pages: tuple[str, ...]) -> re.Pattern:
    keys = TEMPLATES[template]
    alternatives = {**keys.all_alternatives(), "page": pages}
    return re.compile("(?:" + "|".join(_regex(p, alternatives) for p in keys.all_patterns())
                      + ")")


def _page_keys(path: Path | None) -> tuple[str, ...]:
    """The summary's ``{page}``: `summary.page_key` of every figure page (orders template) of
    the registry, the pages a summary may summarise."""
    return tuple(page_key(name) for name, entry in load_pages(path).items()
                 if entry.get("template") == "orders")


def declared(template: str, path: Path | None = None) -> re.Pattern:
    """The glue keys a page of ``template`` may glue, as one compiled regex (use ``fullmatch``);
    ``path``: the registry whose figure pages the summary's keys name (experiments.yml)."""
    if template not in TEMPLATES:
        raise ValueError(f"template {template!r} declares no glue keys; templates declared: "
                         f"{', '.join(TEMPLATES)}")
    uses_pages = any("{page}" in p for p in TEMPLATES[template].all_patterns())
    return _compiled(template, _page_keys(path) if uses_pages else ())


def undeclared(template: str, keys, path: Path | None = None) -> list[str]:
    """The ``keys`` that ``template`` does not declare, in their order."""
    pattern = declared(template, path)
    return [key for key in keys if not pattern.fullmatch(key)]


# a glue role of MyST (`{glue}`, `{glue:text}`, `{glue:md}`, `{glue:figure}`...) and its body,
# or a glue directive (```{glue:figure} key```) and its argument
_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`]*)`")
_DIRECTIVE = re.compile(r"^[ \t]*(?:`{3,}|:{3,})\{glue(?::[a-z]+)?\}[ \t]+(\S+)", re.MULTILINE)


def quoted_keys(text: str) -> list[str]:
    """The glue keys a piece of prose quotes, without a role's ``:format`` (``constant_first``
    from ``{glue:text}`constant_first:+.0f```)."""
    bodies = _ROLE.findall(text) + _DIRECTIVE.findall(text)
    return [body.partition(":")[0].strip() for body in bodies]


def _strings(value, where: str = ""):
    """Every string of a registry entry with where it is (``conclusion.cpu``, ``notes.cpu[0]``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}".strip("."))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def registry_problems(path: Path | None = None) -> list[str]:
    """Every glue key the registry's prose quotes (titles, claims, notes, conclusions: any
    string of a page's entry) that its page's template does not declare. A page whose template
    is not a known template is left to `registry.check_registry`, which reports it."""
    problems = []
    for name, entry in load_pages(path).items():
        template = entry.get("template")
        if template not in TEMPLATES:
            continue
        for where, text in _strings(entry):
            quoted = quoted_keys(text)
            problems += [f"page {name}: {where} quotes glue key {key!r}, which template "
                         f"{template} does not declare (see src/iteration_order/book/"
                         f"glue_keys.py)" for key in undeclared(template, quoted, path)]
    return problems
