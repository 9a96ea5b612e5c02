"""The Appendix D page's study (Figures 14–19): every update of `order_average` on the same batches.

`OrderAverageExperiment` is the page's frozen config: per split c and seed, one cached trajectory
per variant (large batch, large batch at h/c, small batches, exact order average, regularised at
each λ). From its results:

* `correction_at_start` — the size and direction of the correction at θ_0 on the first batch;
* `summary_table` — where each run ended, against the large batch;
* `plot_curves` — the page's figure: train and test loss, and the test loss minus the large
  batch's on a symmetric log scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..hessian import flatten
from ..order_average import closest_multiple, gradients_and_correction, micro_batch_rows
from ..parallel import run_many
from ..trajectory import Runtime, TrajectoryConfig, prepare
from ..validation import check_bool, check_int, check_list, check_number

__all__ = ["OrderAverageExperiment", "correction_at_start", "summary_table", "plot_curves",
           "lambda_label"]

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


def plot_curves(experiment: OrderAverageExperiment, results: dict, seed: int):
    """Rows: the splits c. Columns: train loss, test loss, and the test loss minus the large
    batch's on a symmetric log scale, so that differences of 1e-4 and of 0.5 both show."""
    splits = experiment.splits
    fig, axes = plt.subplots(len(splits), 3, figsize=(13, 3.1 * len(splits)), squeeze=False)
    for row, c in zip(axes, splits):
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
        span = max(float(np.abs(np.concatenate(deltas)).max()), 10 * _LINEAR_BELOW)
        row[2].set_yscale("symlog", linthresh=_LINEAR_BELOW, linscale=0.5)
        row[2].set_ylim(-1.5 * span, 1.5 * span)
        row[2].axhline(0, color="black", lw=0.6)
        row[2].set_ylabel("difference (symmetric log scale)")
        handles, labels = row[0].get_legend_handles_labels()
        row[2].legend(handles, labels, fontsize=7.5, loc="center left",
                      bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return fig
