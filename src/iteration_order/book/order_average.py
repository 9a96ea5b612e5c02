"""The Appendix D page's study (Figures 14–19): every update of `order_average` on the same batches.

`OrderAverageExperiment` is the page's frozen config: per split c and seed, one cached trajectory
per variant (large batch, large batch at h/c, small batches, exact order average, regularised at
each λ). From its results:

* `correction_at_start` — the size and direction of the correction at θ_0 on the first batch;
* `summary_table` — where each run ended, against the large batch;
* `regularised_runs` and `divergence_summary` — which regularised runs diverged, against the size
  of the correction, λ·c(c−1), measured in h²;
* `loss_fluctuation` and `differences_table` — each finite run's final test loss minus the
  large batch's, against the scale one seed and the evaluation subset resolve;
* `page_numbers` — every number the page's summary and conclusion quote, by glue key;
* `plot_curves` and `curves_caption` — the page's figure: train and test loss, and the test loss
  minus the large batch's on a symmetric log scale, with its caption.
"""
from __future__ import annotations

import math
from collections import Counter
import dataclasses
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .numbers import add_ranges, honest, listed, range_text, sig
from ..hessian import flatten
from ..order_average import closest_multiple, gradients_and_correction, micro_batch_rows
from ..parallel import run_many
from ..stability import TREND_DEGREE
from ..trajectory import Runtime, TrajectoryConfig, prepare
from ..validation import check_bool, check_int, check_list, check_number
from .orders import span, trajectory_loads
from .plots import describe_steps

__all__ = ["OrderAverageExperiment", "correction_at_start", "corrections_at_start",
           "summary_table", "regularised_runs", "divergence_summary", "loss_fluctuation",
           "differences_table", "page_numbers", "summary_markdown", "plot_curves",
           "curves_caption", "lambda_label", "DIVERGENCE_LOAD", "FLUCTUATION_TAIL",
           "MIN_FLUCTUATION_STEPS"]

# ------------------------------------------------------------------------------------------------
# The experiment of Figures 14–19: every update on the same batches, one cached run each
# ------------------------------------------------------------------------------------------------

# variant names, which label the runs in tables and legends
LARGE, LARGE_SLOW, SMALL, AVERAGE = "large", "large, lr h/c", "small", "average"
NATURAL = "λ = ½h′²"  # the weight the exact order average implies (Lemma C.1)


def lambda_label(multiple: float) -> str:
    return f"λ = {multiple:g}h²"


@dataclass(frozen=True)
class OrderAverageExperiment:
    """Large-batch, small-batch and regularised training of one network, per split c and seed.

    For each c the batch holds `closest_multiple`(batch_size, c) examples. Learning rates follow
    D.1: the large step and the regularised update use h = ``lr``, the small steps h′ = h/c.
    """
    dataset: str
    lr: float                          # h
    batch_size: int                    # |B| before rounding to a multiple of c
    splits: tuple[int, ...]            # the values of c
    lambdas: tuple[float, ...]         # λ of the regularised runs, in units of h²
    steps: int                         # large batches per run
    seeds: tuple[int, ...]
    natural_lambda: bool = True        # also λ = ½h′², the weight the order average implies
    average_splits: tuple[int, ...] = ()  # the c for which the exact order average also runs
    literal_large: bool = True         # also the large batch at lr h/c (the caption's wording)
    depth: int = 5
    width: int = 500
    init: str = "he"
    fake_data: bool = False
    record_forward: str = "every:10"
    eval_train_size: int = 0
    eval_test_size: int = 0

    def __post_init__(self):
        # c and |B| are checked here, not only by TrajectoryConfig: `closest_multiple` rounds
        # them (True would pass as 1) before any config exists
        check_int("batch_size", self.batch_size, 1)
        splits = check_list("splits", self.splits, [2, 3], lambda n, c: check_int(n, c, 2))
        lambdas = check_list("lambdas", self.lambdas, [0.5, 4.0],
                             lambda n, m: check_number(n, m, 0, low_open=True))
        seeds = check_list("seeds", self.seeds, [0])  # each seed is checked by TrajectoryConfig
        average = check_list("average_splits", self.average_splits, [2])
        for name, value in (("splits", splits), ("lambdas", lambdas), ("seeds", seeds),
                            ("average_splits", average)):
            object.__setattr__(self, name, value)
        if not self.splits or not self.seeds:
            raise ValueError(f"need at least one split and one seed; got splits={list(splits)}, "
                             f"seeds={list(seeds)}")
        extra = [c for c in average if c not in splits]
        if extra:
            raise ValueError(f"average_splits {extra} are not among splits {splits}")
        check_bool("natural_lambda", self.natural_lambda)
        check_bool("literal_large", self.literal_large)
        self.configs()  # every other field is validated once, by TrajectoryConfig

    def variants(self, c: int) -> dict[str, TrajectoryConfig]:
        """Variant name -> TrajectoryConfig for one split c and seed 0."""
        h = self.lr
        base = TrajectoryConfig(
            dataset=self.dataset, fake_data=self.fake_data, model="mlp", depth=self.depth,
            width=self.width, init=self.init, lr=h, batch_size=closest_multiple(
                self.batch_size, c), steps=self.steps, seed=0, order="forward",
            record_forward=self.record_forward, eval_train_size=self.eval_train_size,
            eval_test_size=self.eval_test_size)
        out = {LARGE: base}
        if self.literal_large:
            out[LARGE_SLOW] = base.replace(lr=h / c)
        out[SMALL] = base.replace(update="small", micro_batches=c, lr=h / c)
        if c in self.average_splits:
            out[AVERAGE] = base.replace(update="average", micro_batches=c, lr=h / c)
        multiples = ([1 / (2 * c * c)] if self.natural_lambda else []) + list(self.lambdas)
        for k, m in enumerate(multiples):
            name = NATURAL if self.natural_lambda and k == 0 else lambda_label(m)
            out[name] = base.replace(update="regularised", micro_batches=c, reg_lambda=m * h * h)
        return out

    def configs(self) -> dict[tuple[int, int, str], TrajectoryConfig]:
        """(seed, c, variant) -> TrajectoryConfig."""
        return {(seed, c, name): config.replace(seed=seed)
                for seed in self.seeds for c in self.splits
                for name, config in self.variants(c).items()}

    def run(self, jobs: int = 1, runtime: Runtime = Runtime()
            ) -> dict[tuple[int, int, str], dict]:
        configs = self.configs()
        results = run_many(list(configs.values()), runtime, jobs=jobs)
        return dict(zip(configs, results))


def correction_at_start(experiment: OrderAverageExperiment, seed: int,
                        runtime: Runtime = Runtime()) -> pd.DataFrame:
    """Per split c, on the first batch at θ_0: the large step h‖∇L_B‖, the correction at λ = h²,
    h²‖Σ_{i≠j} H_i g_j‖, their ratio, and the cosine between the correction and ∇L_B (> 0: the
    correction points uphill, against the step)."""
    rows = []
    for c in experiment.splits:
        run = prepare(experiment.variants(c)[LARGE].replace(seed=seed), runtime)
        params = {k: run.state0[k] for k in run.maps.param_names}
        grads, correction = gradients_and_correction(
            run.model, run.maps.loss_fn, run.data.x_train, run.data.y_train,
            micro_batch_rows(run.maps.rows[0], c), params)
        g = flatten({k: sum(gi[k] for gi in grads) / c for k in params})  # ∇L_B
        C = flatten(correction)
        step, term = experiment.lr * float(g.norm()), experiment.lr ** 2 * float(C.norm())
        rows.append({"c": c, "h‖∇L_B‖": step, "h²‖correction‖": term, "ratio": term / step,
                     "cos(correction, ∇L_B)": float(g @ C / (g.norm() * C.norm()))})
    return pd.DataFrame(rows).set_index("c")


def summary_table(experiment: OrderAverageExperiment, results: dict) -> pd.DataFrame:
    """One row per (seed, c, variant): its settings and where the run ended."""
    rows = []
    for (seed, c, name), r in results.items():
        config, reference = r["config"], results[(seed, c, LARGE)]
        finite = r["diverged_at"] is None
        rows.append({
            "seed": seed, "c": c, "variant": name, "batch": config["batch_size"],
            "lr / h": config["lr"] / experiment.lr,
            "λ / h²": config["reg_lambda"] / experiment.lr ** 2,
            "final train loss": r["train_loss"][-1] if finite else math.nan,
            "final test loss": r["test_loss"][-1] if finite else math.nan,
            "final test acc": r["test_acc"][-1] if finite else math.nan,
            "test loss − large": (r["test_loss"][-1] - reference["test_loss"][-1]
                                  if finite else math.nan),
            "diverged by step": r["diverged_at"] if not finite else "",
        })
    return pd.DataFrame(rows).set_index(["seed", "c", "variant"])


def corrections_at_start(experiment: OrderAverageExperiment,
                         runtime: Runtime = Runtime()) -> pd.DataFrame:
    """`correction_at_start` for every seed, indexed by (seed, c), with the ratio per ordered
    pair of micro-batches, ratio / (c(c−1)): the correction sums c(c−1) terms H_i g_j, so a ratio
    per pair that stays put across c says that the correction grows like c(c−1)."""
    frames = {seed: correction_at_start(experiment, seed, runtime) for seed in experiment.seeds}
    table = pd.concat(frames, names=["seed"])
    pairs = np.array([c * (c - 1) for c in table.index.get_level_values("c")])
    table.insert(table.columns.get_loc("ratio") + 1, "ratio per pair", table["ratio"] / pairs)
    return table


# ------------------------------------------------------------------------------------------------
# Which regularised runs diverged, against the size of the correction
# ------------------------------------------------------------------------------------------------

# The load λ·c(c−1), in units of h², from which the regularised runs diverged in the first cpu run
# of this page (every run at 4h² or more diverged, every run at 3h² or less trained). It describes
# those runs, it does not predict them: `divergence_summary` reports the largest load that trained
# and the smallest that diverged, so that the page shows whether it still separates them. Why this
# product: the correction sums c(c−1) terms H_i g_j, and `corrections_at_start` measures their size
# per pair nearly the same for every c.
DIVERGENCE_LOAD = 4.0


def _is_regularised(result: dict) -> bool:
    return result["config"].get("update") == "regularised"


def _in_h2(value: float, lr: float) -> float:
    """``value`` in units of h², rounded to 12 significant digits so that 2e-6 / 0.001² is 2 and
    a load equal to the threshold is not a rounding error below it."""
    return float(f"{value / lr ** 2:.12g}")


def regularised_runs(experiment: OrderAverageExperiment, results: dict,
                     threshold: float = DIVERGENCE_LOAD) -> pd.DataFrame:
    """One row per regularised run (those at λ = ½h′² included), indexed by (seed, c, variant)
    and sorted by λ: λ and the load λ·c(c−1), both in units of h², whether the load is at or above
    ``threshold`` (in h²) and the first recorded step with a non-finite loss ('' if the run
    trained to its last step)."""
    check_number("threshold", threshold, 0, low_open=True)
    rows = []
    for (seed, c, name), r in results.items():
        if not _is_regularised(r):
            continue
        multiple = _in_h2(r["config"]["reg_lambda"], experiment.lr)
        load = float(f"{multiple * c * (c - 1):.12g}")
        rows.append({"seed": seed, "c": c, "variant": name, "λ / h²": multiple,
                     "λ·c(c−1) / h²": load, "at or above threshold": load >= threshold,
                     "diverged by step": "" if r["diverged_at"] is None else r["diverged_at"]})
    columns = ["seed", "c", "variant", "λ / h²", "λ·c(c−1) / h²", "at or above threshold",
               "diverged by step"]
    table = pd.DataFrame(rows, columns=columns).sort_values(["seed", "c", "λ / h²"])
    return table.set_index(["seed", "c", "variant"])


def _diverged(runs: pd.DataFrame) -> pd.Series:
    return runs["diverged by step"] != ""


def _diverged_text(runs: pd.DataFrame) -> str:
    """'c = 2: λ = 2h² by step 70 and λ = 4h² by step 30; c = 3: …' (each part opens with the
    seed when there are several), or 'none'."""
    gone = runs[_diverged(runs)]
    seeds = runs.index.get_level_values("seed").unique()
    parts = []
    for (seed, c), part in gone.groupby(level=["seed", "c"], sort=True):
        items = [f"{name} by step {step}" for (_, _, name), step
                 in part["diverged by step"].items()]
        listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"
        parts.append((f"seed {seed}, " if len(seeds) > 1 else "") + f"c = {c}: {listed}")
    return "; ".join(parts) or "none"


def divergence_summary(experiment: OrderAverageExperiment, results: dict,
                       threshold: float = DIVERGENCE_LOAD) -> dict:
    """How many regularised runs diverged at a load λ·c(c−1) at or above ``threshold`` (in h²)
    and how many below it.

    Keys: ``threshold``; ``above_n`` runs at or above it, of which ``above_diverged`` diverged;
    ``below_n`` and ``below_diverged`` likewise; ``diverged_text`` (which c and λ, by which step;
    'none'); ``trained_load_max``, the largest load of a run that trained to its last step, and
    ``diverged_load_min``, the smallest of a run that diverged (NaN where there is none);
    ``separates``, whether every run at or above the threshold diverged and none below it."""
    runs = regularised_runs(experiment, results, threshold)
    above, gone = runs["at or above threshold"], _diverged(runs)
    loads = runs["λ·c(c−1) / h²"]
    out = {"threshold": float(threshold),
           "above_n": int(above.sum()), "above_diverged": int((above & gone).sum()),
           "below_n": int((~above).sum()), "below_diverged": int((~above & gone).sum()),
           "diverged_text": _diverged_text(runs),
           "trained_load_max": float(loads[~gone].max()) if (~gone).any() else math.nan,
           "diverged_load_min": float(loads[gone].min()) if gone.any() else math.nan}
    out["separates"] = (out["above_diverged"] == out["above_n"]) and out["below_diverged"] == 0
    return out


# ------------------------------------------------------------------------------------------------
# Test-loss differences against the large batch, and the scale one seed resolves
# ------------------------------------------------------------------------------------------------

FLUCTUATION_TAIL = 0.25     # the window: the last quarter of training, as on the figure pages
MIN_FLUCTUATION_STEPS = 5   # recorded steps in it: a quadratic trend then leaves 2 or more
                            # degrees of freedom for the residuals


def _tail_steps(result: dict, tail: float) -> list[int]:
    """The steps a run recorded in the last ``tail`` fraction of its training (step 0 never)."""
    check_number("tail", tail, 0, 1, low_open=True)
    start = result["config"]["steps"] * (1 - tail)
    return [n for n in result["recorded_steps"] if n >= start and n > 0]


def loss_fluctuation(result: dict, tail: float = FLUCTUATION_TAIL,
                     min_steps: int = MIN_FLUCTUATION_STEPS, key: str = "test_loss") -> float:
    """How much one run's test loss (or the curve ``key``) moves from one recorded step to the next beyond its smooth
    descent: the residual standard deviation of the test loss about its least-squares quadratic
    in the step, over the steps recorded in the last ``tail`` of training (K − 3 degrees of
    freedom for K steps). It is the figure pages' spread (`iteration_order.stability`), taken of
    the loss itself, not of its logarithm, because the differences it is compared with are in
    loss units.

    Why this is the scale to compare a final test-loss difference with: the wiggles about the
    trend come from which batches were drawn, measured on this fixed evaluation subset; another
    seed draws other batches, so a difference between two runs smaller than this is within what
    the batch draw alone moves a run's final test loss by, and one seed cannot attribute it to
    the update. Raises ValueError for a diverged run or too few steps in the window."""
    check_int("min_steps", min_steps, TREND_DEGREE + 2)
    if result["diverged_at"] is not None:
        raise ValueError(f"the run diverged by step {result['diverged_at']}: its test loss has "
                         f"no fluctuation to measure")
    steps = _tail_steps(result, tail)
    if len(steps) < min_steps:
        raise ValueError(f"the test-loss fluctuation needs at least {min_steps} recorded steps in "
                         f"the last {tail:.0%} of training; the run recorded {len(steps)} there "
                         f"({steps}): record more often (record_forward)")
    where = {n: i for i, n in enumerate(result["recorded_steps"])}
    values = np.array([result[key][where[n]] for n in steps], dtype=float)
    x = np.asarray(steps, dtype=float)
    # Polynomial.fit maps the steps onto [-1, 1] first, so the fit is well conditioned
    residuals = values - np.polynomial.Polynomial.fit(x, values, TREND_DEGREE)(x)
    return float(np.sqrt((residuals ** 2).sum() / (len(values) - TREND_DEGREE - 1)))


def _descent_per_step(result: dict, tail: float) -> float:
    """The mean fall of the test loss per step over the window (positive while it descends)."""
    steps = _tail_steps(result, tail)
    where = {n: i for i, n in enumerate(result["recorded_steps"])}
    first, last = result["test_loss"][where[steps[0]]], result["test_loss"][where[steps[-1]]]
    return (first - last) / (steps[-1] - steps[0]) if steps[-1] > steps[0] else math.nan


def _paired_fluctuation(result: dict, reference: dict, tail: float) -> float:
    """`loss_fluctuation` of the difference curve result − reference (same seed and batches):
    how much the difference itself moves from one recorded step to the next, beyond its trend.
    Both runs see the same batches, so much of the batch noise cancels here; what is left says
    how steady the final difference is within this one seed."""
    n = min(len(result["recorded_steps"]), len(reference["recorded_steps"]))
    difference = {"config": result["config"], "recorded_steps": result["recorded_steps"][:n],
                  "diverged_at": None,
                  "test_loss": [a - b for a, b in zip(result["test_loss"][:n],
                                                      reference["test_loss"][:n])]}
    return loss_fluctuation(difference, tail)


def differences_table(experiment: OrderAverageExperiment, results: dict,
                      tail: float = FLUCTUATION_TAIL) -> pd.DataFrame:
    """One row per run that trained to its last step, other than the large batch itself, indexed
    by (seed, c, variant): its final test loss, minus the large batch's (same seed and c), the
    large batch's `loss_fluctuation` σ, |difference| / σ, whether the difference exceeds σ
    (below it: not resolved by one seed and this evaluation subset), and the fluctuation of the
    difference curve itself over the same window (`_paired_fluctuation`)."""
    rows = []
    for (seed, c, name), r in results.items():
        if name == LARGE or r["diverged_at"] is not None:
            continue
        reference = results[(seed, c, LARGE)]
        sigma = loss_fluctuation(reference, tail)
        delta = r["test_loss"][-1] - reference["test_loss"][-1]
        rows.append({"seed": seed, "c": c, "variant": name, "final test loss": r["test_loss"][-1],
                     "test loss − large": delta, "σ of large": sigma,
                     "|difference| / σ": abs(delta) / sigma, "beyond σ": abs(delta) > sigma,
                     "σ of difference": _paired_fluctuation(r, reference, tail)})
    columns = ["seed", "c", "variant", "final test loss", "test loss − large", "σ of large",
               "|difference| / σ", "beyond σ", "σ of difference"]
    return pd.DataFrame(rows, columns=columns).set_index(["seed", "c", "variant"])


# ------------------------------------------------------------------------------------------------
# Every number the page's summary and conclusion quote
# ------------------------------------------------------------------------------------------------

_listed = listed


def _range_text(low: float, high: float, spec: str, joint: str = "–") -> str:
    """A range in words (`numbers.range_text`): a single value where both ends are equal, else
    '0.26–0.31' (or joined by ``joint``). ``spec`` "+..." marks a difference: signed ends, each
    strictly on its own side of 0 (never "+0.0000" or "-0.0000"); otherwise ``spec``'s digits
    (".2f": 2 significant figures, else 3)."""
    if not spec.startswith("+"):
        return range_text(low, high, None, 2 if spec.endswith(".2f") else 3, joint=joint)
    if low == high:
        return signed_honest(low)
    a, b = signed_honest(low), signed_honest(high)
    return a if a == b else f"{a}{joint}{b}"


def signed_honest(value: float, digits: int = 2) -> str:
    """A difference with its sign, on its own side of 0 ("+0.00003", "-0.0002", "0")."""
    text = honest(value, 0.0, digits)
    return text if text.startswith("-") or text in ("0", "n/a") else "+" + text


def _subset(size: int, what: str) -> str:
    return f"a fixed subset of {size:,} {what} images" if size else f"all {what} images"


def page_numbers(experiment: OrderAverageExperiment, results: dict, start: pd.DataFrame,
                 threshold: float = DIVERGENCE_LOAD, tail: float = FLUCTUATION_TAIL) -> dict:
    """Every number (and listing) the page's summary and conclusion quote, by glue key.

    ``start`` is `corrections_at_start`. Keys: the settings (``lr``, ``steps``, ``seeds_n``,
    ``batch_text``, ``eval_test_text``, ``record_text``); the correction at θ_0
    (``correction_ratio_text``, ``correction_per_pair_min``/``max``, ``correction_cos_min``/``max``,
    ``threshold_ratio_min``/``max``: the correction over the step at a load equal to the
    threshold); the divergences (`divergence_summary`'s keys, ``threshold`` as
    ``load_threshold``, and ``load_rule``: 'λ·c(c−1) ≥ 4h²'); the differences against the large
    batch (`differences_table`): ``large_test_min``/``max``, ``sigma_min``/``max`` with
    ``sigma_steps`` (recorded steps in the window, fewest over the large runs), ``sigma_dof``,
    ``sigma_first_step``, ``sigma_last_step`` and ``sigma_tail`` (the window's fraction); for
    the runs that differ from the large step at second order in h (small batches, order
    average, regulariser) ``second_n`` runs, ``second_diff_min``/``max``,
    ``second_ratio_max`` (largest |difference| / σ), ``second_beyond_k`` (how many exceed σ),
    ``second_steps_max`` (largest |difference| over the large batch's descent per step in the
    window), and for them all (``second_``) and per group (``small_``, ``average_``,
    ``natural_``, ``grid_``) ``diff_min``/``max`` and ``diff_text`` ('+0.0001 to +0.0003',
    'none'); ``paired_beyond_k`` and ``paired_beyond_text``: which of the second-order
    differences exceed the fluctuation of their own difference curve (steady within this seed);
    the large batch at rate h/c: ``slow_diff_text``, ``slow_ratio_min``; and
    as text, ``seeds_text``, ``sigma_text``, ``correction_per_pair_text`` and
    ``correction_cos_text`` and ``large_test_text``."""
    # each part of the page's prose has its own helper; their keys are merged in the order the
    # page quotes them
    numbers = _settings_numbers(experiment, results)
    numbers.update(_correction_numbers(experiment, start, threshold))
    numbers.update(_divergence_numbers(experiment, results, threshold))
    table = differences_table(experiment, results, tail)
    numbers.update(_large_batch_numbers(experiment, results, tail))
    numbers.update(_second_order_numbers(experiment, results, table, tail))
    numbers.update(_group_numbers(table))
    return add_ranges(numbers, _reference)


def _settings_numbers(experiment: OrderAverageExperiment, results: dict) -> dict:
    """The run's settings as the page states them: rate, steps, seeds, batch size (the most
    common one, with the c whose rounding to a multiple of c differs), images and recording."""
    numbers: dict = {"lr": experiment.lr, "steps": experiment.steps,
                     "seeds_n": len(experiment.seeds),
                     "seeds_text": "one seed" if len(experiment.seeds) == 1 else
                     f"{len(experiment.seeds)} seeds"}
    batches = {c: closest_multiple(experiment.batch_size, c) for c in experiment.splits}
    usual = Counter(batches.values()).most_common(1)[0][0]  # ties: the first c's
    others = [f"{b} for c = {c}" for c, b in batches.items() if b != usual]
    numbers["batch_text"] = f"{usual:,}" + (f" ({', '.join(others)})" if others else "")
    numbers["eval_test_text"] = _subset(experiment.eval_test_size, "test")
    first = results[(experiment.seeds[0], experiment.splits[0], LARGE)]
    numbers["record_text"] = describe_steps(first["recorded_steps"])
    return numbers


def _correction_numbers(experiment: OrderAverageExperiment, start: pd.DataFrame,
                        threshold: float) -> dict:
    """The correction at θ_0, seed by seed (``start`` is `corrections_at_start`), and its ratio
    to the step at a load equal to ``threshold``: the size the divergences are set against."""
    numbers: dict = {}
    by_c = start["ratio"].groupby(level="c")
    numbers["correction_ratio_text"] = (
        _listed([_range_text(by_c.min()[c], by_c.max()[c], ".2f") for c in experiment.splits])
        + " for c = " + _listed([str(c) for c in experiment.splits]))
    per_pair = span(start["ratio per pair"])
    numbers["correction_per_pair_min"], numbers["correction_per_pair_max"] = per_pair
    numbers["correction_cos_min"], numbers["correction_cos_max"] = \
        span(start["cos(correction, ∇L_B)"])
    numbers["correction_per_pair_text"] = _range_text(*per_pair, ".3f", " to ")
    numbers["correction_cos_text"] = _range_text(numbers["correction_cos_min"],
                                                 numbers["correction_cos_max"], ".2f", " to ")
    numbers["threshold_ratio_min"] = threshold * per_pair[0]
    numbers["threshold_ratio_max"] = threshold * per_pair[1]
    return numbers


def _divergence_numbers(experiment: OrderAverageExperiment, results: dict,
                        threshold: float) -> dict:
    """`divergence_summary`, its ``threshold`` renamed ``load_threshold`` (the glue key the page
    uses) and led by the rule in words."""
    divergence = divergence_summary(experiment, results, threshold)
    numbers = {"load_threshold": divergence.pop("threshold"),
               "load_rule": f"λ·c(c−1) ≥ {threshold:g}h²"}
    numbers.update(divergence)
    return numbers


def _large_batch_numbers(experiment: OrderAverageExperiment, results: dict, tail: float) -> dict:
    """The large batch's final test loss and its own fluctuation σ over the window, with the
    window's steps: the scale every difference is judged against."""
    numbers: dict = {}
    larges = [results[(s, c, LARGE)] for s in experiment.seeds for c in experiment.splits]
    numbers["large_test_min"], numbers["large_test_max"] = span(
        [r["test_loss"][-1] for r in larges])
    numbers["large_test_text"] = _range_text(numbers["large_test_min"],
                                             numbers["large_test_max"], ".4f", " to ")
    numbers["sigma_min"], numbers["sigma_max"] = span(
        [loss_fluctuation(r, tail) for r in larges])
    numbers["sigma_text"] = _range_text(numbers["sigma_min"], numbers["sigma_max"], ".4f",
                                        " to ")
    numbers["sigma_steps"] = min(len(_tail_steps(r, tail)) for r in larges)
    numbers["sigma_dof"] = numbers["sigma_steps"] - TREND_DEGREE - 1
    window = sorted({n for r in larges for n in _tail_steps(r, tail)})
    numbers["sigma_first_step"], numbers["sigma_last_step"] = window[0], window[-1]
    numbers["sigma_tail"] = tail
    return numbers


def _second_order_numbers(experiment: OrderAverageExperiment, results: dict,
                          table: pd.DataFrame, tail: float) -> dict:
    """The runs that differ from the large step only at second order in h (all but the large
    batch at h/c): how many, how far their differences go in σ and in steps of the large batch's
    descent, and which are steady against their own difference curve's fluctuation."""
    numbers: dict = {}
    second = table[table.index.get_level_values("variant") != LARGE_SLOW]
    numbers["second_n"] = len(second)
    numbers["second_ratio_max"] = float(second["|difference| / σ"].max()) if len(second) \
        else math.nan
    numbers["second_beyond_k"] = int(second["beyond σ"].sum())
    steady = second[second["test loss − large"].abs() > second["σ of difference"]]
    numbers["paired_beyond_k"] = len(steady)
    numbers["paired_beyond_text"] = _steady_text(steady, several_seeds=len(experiment.seeds) > 1)
    descent = {(s, c): _descent_per_step(results[(s, c, LARGE)], tail)
               for s in experiment.seeds for c in experiment.splits}
    in_steps = [abs(d) / descent[(s, c)] for (s, c, _), d in second["test loss − large"].items()]
    numbers["second_steps_max"] = max(in_steps) if in_steps else math.nan
    return numbers


def _steady_text(steady: pd.DataFrame, several_seeds: bool) -> str:
    """'c = 2: small and λ = 1h²; c = 3: …' (each part led by its seed when there are several),
    or 'none'."""
    groups_text = []
    for (seed, c), part in steady.groupby(level=["seed", "c"], sort=True):
        where = (f"seed {seed}, " if several_seeds else "") + f"c = {c}"
        groups_text.append(f"{where}: {_listed(list(part.index.get_level_values('variant')))}")
    return "; ".join(groups_text) or "none"


def _group_numbers(table: pd.DataFrame) -> dict:
    """The range of the differences per group of variants (``second_`` all second-order runs
    together), and the large batch at h/c, which differs at first order and is quoted apart."""
    numbers: dict = {}
    names = table.index.get_level_values("variant")
    groups = {"small": names == SMALL, "average": names == AVERAGE,
              "natural": names == NATURAL,
              "grid": [n not in (LARGE_SLOW, SMALL, AVERAGE, NATURAL) for n in names]}
    groups["second"] = names != LARGE_SLOW
    for key, mask in groups.items():
        low, high = span(table[mask]["test loss − large"])
        numbers[f"{key}_diff_min"], numbers[f"{key}_diff_max"] = low, high
        numbers[f"{key}_diff_text"] = _range_text(low, high, "+.4f", " to ") \
            if not math.isnan(low) else "none"
    slow = table[names == LARGE_SLOW]
    slow_by_c = slow["test loss − large"].groupby(level="c")
    numbers["slow_diff_text"] = _listed(
        [f"{_range_text(slow_by_c.min()[c], slow_by_c.max()[c], '.2f')} for c = {c}"
         for c in slow_by_c.groups]) if len(slow) else "not run"
    numbers["slow_ratio_min"] = float(slow["|difference| / σ"].min()) if len(slow) else math.nan
    return numbers


def _reference(prefix: str) -> float | None:
    """Differences and cosines are compared with 0, threshold ratios with 1, levels with nothing."""
    if prefix.endswith(("_diff", "_cos")):
        return 0.0
    return 1.0 if prefix.startswith("threshold_ratio") else None


def summary_markdown(numbers: dict) -> str:
    """The page's summary, from `page_numbers`: the divergences first, then the test-loss
    differences against the large batch with their size relative to what one seed resolves."""
    n = numbers
    rule = n["load_rule"]
    lead = (f"**Divergences.** {n['above_diverged']} of {n['above_n']} regularised runs with "
            f"{rule} diverged, and {n['below_diverged']} of {n['below_n']} below it (the runs at "
            f"λ = ½h′² included). Diverged (first recorded step with a non-finite loss): "
            f"{n['diverged_text']}.")
    if not math.isnan(n["trained_load_max"]) and not math.isnan(n["diverged_load_min"]):
        lead += (f" The largest λ·c(c−1) that trained to the end is {n['trained_load_max']:g}h², "
                 f"the smallest that diverged {n['diverged_load_min']:g}h².")
    sigma = _range_text(n["sigma_min"], n["sigma_max"], ".4f")
    if n["second_n"]:
        diffs = (f"The {n['second_n']} runs that trained to the end and differ from the large step "
                 f"only at second order in h (small batches, order average, regulariser) ended "
                 f"{n['second_diff_text']} from the "
                 f"large batch's final test loss "
                 f"({n['large_test_text']}). ")
    else:
        diffs = "No run that differs from the large step at second order trained to the end. "
    scale = (f"One seed and {n['eval_test_text']} resolve no difference smaller than the large "
             f"batch's own fluctuation σ = {sigma} (residual standard deviation of its test loss "
             f"about a quadratic trend over the {n['sigma_steps']} steps it recorded in the last "
             f"{n['sigma_tail']:.0%} of training, steps "
             f"{n['sigma_first_step']}–{n['sigma_last_step']}). ")
    if n["second_n"]:
        verdict = (f"The largest of these differences is {sig(n['second_ratio_max'], 2)}σ, and "
                   f"{n['second_beyond_k']} of {n['second_n']} exceed σ: "
                   + ("none of them is resolved." if n["second_beyond_k"] == 0 else
                      "those below σ are not resolved.")
                   + f" Within this run, {n['paired_beyond_k']} of them exceed the fluctuation "
                   f"of their own difference curve over the same steps, so that their sign holds "
                   f"steady at the end of training: {n['paired_beyond_text']}.")
    else:
        verdict = ""
    slow = (f" The large batch at the rate h/c ended higher by {n['slow_diff_text']} (at least "
            f"{n['slow_ratio_min']:.0f}σ)." if not math.isnan(n["slow_ratio_min"]) else "")
    return lead + "\n\n**Test loss against the large batch.** " + diffs + scale + verdict + slow


# baselines in black, grey and blues (colour-blind palette); the λ grid on a sequential ramp
_STYLE = {LARGE: ("black", "-"), LARGE_SLOW: ("0.55", "--"), SMALL: (0, "-"),
          AVERAGE: (9, (0, (1, 1.5))), NATURAL: (2, "-")}


def _style(name: str, lambdas: tuple[float, ...]):
    colour, line = _STYLE.get(name, (None, "-"))
    if colour is None:  # a λ of the paper's grid: darker for larger λ
        labels = [lambda_label(m) for m in sorted(lambdas)]
        return sns.color_palette("flare", len(labels))[labels.index(name)], "-"
    return (sns.color_palette("colorblind")[colour] if isinstance(colour, int) else colour), line


_LINEAR_BELOW = 1e-4  # the difference panel is linear within ±this, logarithmic beyond


def plot_curves(experiment: OrderAverageExperiment, results: dict, seeds=None):
    """Rows: each seed of ``seeds`` (one seed or several; default all of the experiment's) and
    within it each split c. Columns: train loss, test loss, and the test loss minus the large
    batch's on a symmetric log scale, so that differences of 1e-4 and of 0.5 both show."""
    seeds = list(experiment.seeds) if seeds is None else \
        [seeds] if isinstance(seeds, int) else list(seeds)
    unknown = [s for s in seeds if s not in experiment.seeds]
    if not seeds or unknown:
        raise ValueError(f"seeds must be among the experiment's seeds {list(experiment.seeds)}; "
                         f"got {seeds}")
    panels = [(seed, c) for seed in seeds for c in experiment.splits]
    fig, axes = plt.subplots(len(panels), 3, figsize=(13, 3.1 * len(panels)), squeeze=False)
    for row, (seed, c) in zip(axes, panels):
        names = [n for (s, cc, n) in results if s == seed and cc == c]
        reference = results[(seed, c, LARGE)]
        finite = [results[(seed, c, n)] for n in names
                  if results[(seed, c, n)]["diverged_at"] is None]
        deltas = []
        for name in names:
            r = results[(seed, c, name)]
            colour, line = _style(name, experiment.lambdas)
            label = name if r["diverged_at"] is None else \
                f"{name} (diverged by step {r['diverged_at']})"
            steps = r["recorded_steps"]
            for ax, key in zip(row[:2], ("train_loss", "test_loss")):
                ax.plot(steps, r[key], color=colour, ls=line, lw=1.1, label=label)
            n = min(len(steps), len(reference["recorded_steps"]))
            delta = np.array(r["test_loss"][:n]) - np.array(reference["test_loss"][:n])
            row[2].plot(steps[:n], delta, color=colour, ls=line, lw=1.1)
            if r["diverged_at"] is None:
                deltas.append(delta)
        titles = ("train loss", "test loss", "test loss − large batch's")
        for ax, title in zip(row, titles):
            ax.set_title(f"seed {seed}, c = {c}: {title}", fontsize=10)
            ax.set_xlabel("large batches seen (step)")
            ax.tick_params(labelsize=8)
        for ax, key in zip(row[:2], ("train_loss", "test_loss")):
            ax.set_ylabel("loss")
            low = min(r[key][-1] for r in finite)
            high = max(r[key][0] for r in finite)
            # from the finite runs only: a diverging run leaves through the top
            ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
        reach = max(float(np.abs(np.concatenate(deltas)).max()), 10 * _LINEAR_BELOW)
        row[2].set_yscale("symlog", linthresh=_LINEAR_BELOW, linscale=0.5)
        row[2].set_ylim(-1.5 * reach, 1.5 * reach)
        row[2].axhline(0, color="black", lw=0.6)
        row[2].set_ylabel("difference (symmetric log scale)")
        handles, labels = row[0].get_legend_handles_labels()
        row[2].legend(handles, labels, fontsize=7.5, loc="center left",
                      bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def curves_caption(experiment: OrderAverageExperiment, results: dict, profile: str) -> str:
    """The caption of `plot_curves` over all seeds: the paper's figures it reruns, what each
    panel draws and through which steps, on which images, the runs that diverged, the profile."""
    seeds = list(experiment.seeds)
    splits = _listed([str(c) for c in experiment.splits])
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"seeds {_listed([str(s) for s in seeds])}, one block of rows each"
    spacing = sorted({describe_steps(r["recorded_steps"]) for r in results.values()
                      if r["diverged_at"] is None})
    images = ("noise images of the data set's shape (smoke only)" if experiment.fake_data else
              f"{_subset(experiment.eval_train_size, 'training')} and "
              f"{_subset(experiment.eval_test_size, 'test')}, the same for every run")
    averaged = _listed([str(c) for c in experiment.average_splits]) \
        if experiment.average_splits else ""
    lines = ["the large batch at rate h (black)"]
    if experiment.literal_large:
        lines.append("at rate h/c (grey, dashed)")
    lines.append("the c small steps at h/c (blue)")
    if averaged:
        lines.append(f"the exact average over all c! orders (dotted; c = {averaged})")
    if experiment.natural_lambda:
        lines.append("the regulariser at λ = ½h′² (green)")
    lines.append("the paper's grid of λ (darker for larger λ)")
    gone = [f"{name} for c = {c}" + (f" (seed {s})" if len(seeds) > 1 else "")
            + f" by step {r['diverged_at']}"
            for (s, c, name), r in results.items() if r["diverged_at"] is not None]
    parts = [f"The paper's Figures 14–19 (train and test loss for c = 2, 3 and 4, one figure "
             f"each), rerun here in one figure at the {profile} profile ({seed_text}; rows c = "
             f"{splits}).",
             f"Columns: train loss, test loss, and the test loss minus the large batch's on a "
             f"symmetric log scale (linear within ±{_LINEAR_BELOW:g}); losses on "
             f"{images}, drawn through {' or '.join(spacing)} (step 0 included).",
             f"Lines: {_listed(lines)}."]
    if gone:
        parts.append("Diverged, stopping at the first recorded step with a non-finite loss and "
                     "leaving through the top of the panels: " + "; ".join(gone) + ".")
    return " ".join(parts)


def page_setup(values: dict) -> OrderAverageExperiment:
    """The experiment of the Appendix D page, from the template's parameter values."""
    names = {f.name for f in dataclasses.fields(OrderAverageExperiment)}
    return OrderAverageExperiment(**{k: v for k, v in values.items() if k in names})


def page_loads(experiment: OrderAverageExperiment, runtime: Runtime) -> list:
    return trajectory_loads(experiment.configs().values(), runtime)
