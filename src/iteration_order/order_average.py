"""Appendix D: small batches, the average over iteration orders, and its explicit regulariser.

One update consumes one large batch B (one row of the schedule), split into c equal micro-batches
B_1..B_c (consecutive slices of the row, which is already in random order). With g_i = ∇L_{B_i},
H_i = ∇²L_{B_i} and V_i = −g_i, so that V_i′V_j = H_i g_j:

* ``"sgd"`` — T_large(θ) = θ − h·∇L_B(θ), one step on B (`maps.SGDMaps`);
* ``"small"`` — T_small = (1 + h′V_c)∘…∘(1 + h′V_1): c SGD steps of lr h′ on B_1, …, B_c in turn;
* ``"average"`` — T_perm, the mean over all c! orders of those c steps (Eq. 9), exact;
* ``"regularised"`` — T_large(θ) + λ Σ_{i≠j} V_i′V_j(θ), the order-average correction with a free
  weight λ.

Every update is one pure map per schedule row, so the order engine, the cache, the cost estimate
and `run_many` serve them as they serve SGD, and the maps compose in any order.

The correction never forms a Hessian. Since Σ_{i≠j} ⟨g_i, g_j⟩ = ‖Σ_i g_i‖² − Σ_i ‖g_i‖²,

    Σ_{i≠j} H_i g_j = ½ ∇(‖Σ_i g_i‖² − Σ_i ‖g_i‖²) = ∇ Σ_{i<j} ⟨g_i, g_j⟩,

i.e. the regularised update *ascends* the pairwise alignment of the micro-batch gradients.
Library choice: one double backward with ``torch.autograd.grad(create_graph=True)``. The c
micro-batch gradients are built with their graphs, and a single reverse pass through all of them
returns the sum of the c Hessian-vector products; ``torch.func``'s forward-over-reverse product
(`hessian.BatchLoss.hvp`, which the tests use as the independent reference) would need c separate
products after a first pass for the gradients. Maps that need second derivatives or averages of
states (``regularised``, ``average``) reject models with buffers (BatchNorm), as `hessian` does.

Lemma C.1 gives, up to O(h′³) with h = c·h′:

    T_small = T_large + h′² Σ_{i<j} V_j′V_i          (later micro-batch's Jacobian, earlier field)
    T_perm  = T_large + ½h′² Σ_{i≠j} V_i′V_j

The first line is Appendix D.1's expansion with the indices as Lemma C.1 assigns them when B_1 is
applied first (D.1 prints V_i′V_j for i<j); the symmetric sum of the second is unaffected.

The module ends with the experiment of Figures 14–19 (`OrderAverageExperiment`), its table and
figure. Those import the trajectory runner inside their functions: the runner builds its maps from
this module, so importing it here at the top would be circular.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .maps import SGDMaps, State, _TrainingMaps, sgd_maps

__all__ = ["UPDATES", "MAX_AVERAGE_MICRO_BATCHES", "closest_multiple", "micro_batch_rows",
           "gradients_and_correction", "SmallBatchMaps", "RegularisedMaps", "OrderAverageMaps",
           "update_maps", "OrderAverageExperiment", "correction_at_start", "summary_table",
           "plot_curves", "lambda_label"]

UPDATES = ("sgd", "small", "regularised", "average")
MAX_AVERAGE_MICRO_BATCHES = 5  # the exact average costs Σ_k c!/(c−k)! small steps: 325 at c = 5


def closest_multiple(batch_size: int, micro_batches: int) -> int:
    """The multiple of c nearest to |B| (the paper's rule: 2049 for |B| = 2048 and c = 3)."""
    return micro_batches * max(1, math.floor(batch_size / micro_batches + 0.5))


def micro_batch_rows(rows: torch.Tensor, micro_batches: int) -> torch.Tensor:
    """A schedule row [|B|] as ``[c, |B|/c]``: micro-batch i is the i-th consecutive slice."""
    if len(rows) % micro_batches:
        raise ValueError(f"a batch of {len(rows)} examples cannot be split into {micro_batches} "
                         f"equal micro-batches; use {closest_multiple(len(rows), micro_batches)}")
    return rows.reshape(micro_batches, -1)


def _no_buffers(model: nn.Module, what: str) -> None:
    if any(True for _ in model.buffers()):
        raise ValueError(f"the {what} update needs a model without buffers (no BatchNorm): "
                         f"its running statistics cannot be differentiated twice or averaged")


def gradients_and_correction(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                             targets: torch.Tensor, micro_rows: torch.Tensor, params: State
                             ) -> tuple[list[State], State]:
    """The micro-batch gradients g_i and the correction Σ_{i≠j} H_i g_j at ``params``.

    ``micro_rows`` is ``[c, m]``; each g_i is the gradient of the mean loss on its m examples.
    The correction is ∇ of Σ_{i<j} ⟨g_i, g_j⟩ = ½(‖Σ g_i‖² − Σ‖g_i‖²), by one double backward.
    """
    names = list(params)
    leaves = [params[k].detach().requires_grad_() for k in names]
    tensors = dict(zip(names, leaves))
    grads = []
    for rows in micro_rows:
        loss = loss_fn(functional_call(model, tensors, (inputs[rows],)), targets[rows])
        grads.append(torch.autograd.grad(loss, leaves, create_graph=True))
    total = [sum(parts) for parts in zip(*grads)]
    alignment = 0.5 * (sum((t * t).sum() for t in total)
                       - sum((g * g).sum() for gi in grads for g in gi))
    correction = torch.autograd.grad(alignment, leaves)
    return ([{k: g.detach() for k, g in zip(names, gi)} for gi in grads],
            {k: c.detach() for k, c in zip(names, correction)})


# ------------------------------------------------------------------------------------------------
# The updates as maps, one per schedule row
# ------------------------------------------------------------------------------------------------

class _MicroBatchMaps(_TrainingMaps):
    """Shared checks; ``inner`` is SGD of lr h′ over the micro-batch schedule [steps·c, |B|/c]."""

    def __init__(self, model, loss_fn, inputs, targets, schedule, lr: float, micro_batches: int):
        if not isinstance(micro_batches, int) or isinstance(micro_batches, bool) \
                or micro_batches < 2:
            raise ValueError(f"micro_batches must be an integer >= 2; got {micro_batches!r}")
        super().__init__(model, loss_fn, inputs, targets, schedule)
        if self.rows.shape[1] % micro_batches:
            raise ValueError(
                f"batch_size={self.rows.shape[1]} is not divisible by micro_batches="
                f"{micro_batches}; use {closest_multiple(self.rows.shape[1], micro_batches)}")
        self.micro_batches = micro_batches
        self.inner = SGDMaps(model, loss_fn, inputs, targets,
                             schedule.reshape(-1, schedule.shape[1] // micro_batches), lr)
        self.lr = lr

    def micro_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return micro_batch_rows(rows, self.micro_batches)


class SmallBatchMaps(_MicroBatchMaps):
    """T_small: SGD steps of lr h′ on B_1, then B_2, …, then B_c — ordinary small-batch SGD,
    grouped by large batch so that one map sees the same examples as the other updates."""

    def pure_step(self, rows: torch.Tensor, state: State) -> State:
        for micro in self.micro_rows(rows):
            state = self.inner.pure_step(micro, state)
        return state

    # the in-place path of SGDMaps, c micro-steps per map (the cost of a hand-written loop)
    def load(self, state: State):
        return self.inner.load(state)

    def apply_(self, i: int, workspace) -> None:
        c = self.micro_batches
        for k in range(c * (i - 1) + 1, c * i + 1):
            self.inner.apply_(k, workspace)

    def export(self, workspace) -> State:
        return self.inner.export(workspace)


class OrderAverageMaps(_MicroBatchMaps):
    """T_perm (Eq. 9): the mean over all c! orders of the c small steps, computed exactly.

    Orders sharing a prefix share its steps: the mean over orders is, recursively, the mean over
    the first micro-batch j of the mean over orders of the rest, started from the step on B_j.
    """

    def __init__(self, model, loss_fn, inputs, targets, schedule, lr: float, micro_batches: int):
        _no_buffers(model, "order-average")
        if isinstance(micro_batches, int) and micro_batches > MAX_AVERAGE_MICRO_BATCHES:
            raise ValueError(f"the exact order average over {micro_batches}! orders is too costly; "
                             f"micro_batches must be <= {MAX_AVERAGE_MICRO_BATCHES}")
        super().__init__(model, loss_fn, inputs, targets, schedule, lr, micro_batches)

    def pure_step(self, rows: torch.Tensor, state: State) -> State:
        return self._average(state, list(self.micro_rows(rows)))

    def _average(self, state: State, remaining: list[torch.Tensor]) -> State:
        if not remaining:
            return state
        branches = [self._average(self.inner.pure_step(first, state),
                                  remaining[:j] + remaining[j + 1:])
                    for j, first in enumerate(remaining)]
        return {k: sum(b[k] for b in branches) / len(branches) for k in state}


class RegularisedMaps(_MicroBatchMaps):
    """θ ↦ θ − h·∇L_B(θ) + λ·Σ_{i≠j} H_i g_j(θ): one large-batch step plus the weighted
    order-average correction. ∇L_B is the mean of the c micro-batch gradients (equal sizes)."""

    def __init__(self, model, loss_fn, inputs, targets, schedule, lr: float, micro_batches: int,
                 reg_lambda: float):
        _no_buffers(model, "regularised")
        if not (isinstance(reg_lambda, (int, float)) and math.isfinite(reg_lambda)
                and reg_lambda >= 0):
            raise ValueError(f"reg_lambda must be a finite number >= 0; got {reg_lambda!r}")
        super().__init__(model, loss_fn, inputs, targets, schedule, lr, micro_batches)
        self.reg_lambda = reg_lambda

    def pure_step(self, rows: torch.Tensor, state: State) -> State:
        params = {k: state[k] for k in self.param_names}
        self.model.train()
        grads, correction = gradients_and_correction(self.model, self.loss_fn, self.inputs,
                                                     self.targets, self.micro_rows(rows), params)
        c = self.micro_batches
        with torch.no_grad():
            return {k: p.detach() - self.lr * sum(g[k] for g in grads) / c
                    + self.reg_lambda * correction[k] for k, p in params.items()}


def update_maps(update: str, model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                targets: torch.Tensor, schedule: torch.Tensor, lr: float, micro_batches: int = 1,
                reg_lambda: float = 0.0):
    """The maps of one of `UPDATES`, one per row of ``schedule``; ``lr`` is the learning rate of
    every SGD step the update takes (h for ``sgd`` and ``regularised``, h′ for the others)."""
    if update not in UPDATES:
        raise ValueError(f"unknown update {update!r}; allowed: {', '.join(UPDATES)}")
    if update != "regularised" and reg_lambda:
        raise ValueError(f"reg_lambda={reg_lambda!r} is used by update='regularised' only; "
                         f"got update={update!r}")
    if update == "sgd":
        if micro_batches != 1:
            raise ValueError(f"update='sgd' takes one step on the whole batch: micro_batches must "
                             f"be 1; got {micro_batches!r}")
        return sgd_maps(model, loss_fn, inputs, targets, schedule, lr)
    args = (model, loss_fn, inputs, targets, schedule, lr, micro_batches)
    if update == "small":
        return SmallBatchMaps(*args)
    if update == "average":
        return OrderAverageMaps(*args)
    return RegularisedMaps(*args, reg_lambda)


# ------------------------------------------------------------------------------------------------
# The experiment of Figures 14–19: every update on the same batches, one cached run each
# ------------------------------------------------------------------------------------------------

LARGE, LARGE_SLOW, SMALL, AVERAGE, NATURAL = "large", "large, lr h/c", "small", "average", \
    "λ = ½h′²"


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
        for name in ("splits", "lambdas", "seeds", "average_splits"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.splits or not self.seeds:
            raise ValueError(f"need at least one split and one seed; got splits={self.splits}, "
                             f"seeds={self.seeds}")
        extra = set(self.average_splits) - set(self.splits)
        if extra:
            raise ValueError(f"average_splits {sorted(extra)} are not among splits {self.splits}")
        self.configs()  # every field is validated once, here

    def variants(self, c: int) -> dict[str, Any]:
        """Variant name -> TrajectoryConfig for one split c and seed 0."""
        from .trajectory import TrajectoryConfig  # trajectory builds its maps from this module

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

    def configs(self) -> dict[tuple[int, int, str], Any]:
        """(seed, c, variant) -> TrajectoryConfig."""
        return {(seed, c, name): config.replace(seed=seed)
                for seed in self.seeds for c in self.splits
                for name, config in self.variants(c).items()}

    def run(self, jobs: int = 1, runtime=None) -> dict[tuple[int, int, str], dict]:
        from .parallel import run_many
        from .trajectory import Runtime

        configs = self.configs()
        results = run_many(list(configs.values()), runtime or Runtime(), jobs=jobs)
        return dict(zip(configs, results))


def correction_at_start(experiment: OrderAverageExperiment, seed: int, runtime=None):
    """Per split c, on the first batch at θ_0: the large step h‖∇L_B‖, the correction at λ = h²,
    h²‖Σ_{i≠j} H_i g_j‖, their ratio, and the cosine between the correction and ∇L_B (> 0: the
    correction points uphill, against the step)."""
    import pandas as pd

    from .trajectory import Runtime, prepare

    rows = []
    for c in experiment.splits:
        run = prepare(experiment.configs()[(seed, c, LARGE)], runtime or Runtime())
        params = {k: run.state0[k] for k in run.maps.param_names}
        loss_fn = run.maps.loss_fn
        grads, correction = gradients_and_correction(
            run.model, loss_fn, run.data.x_train, run.data.y_train,
            micro_batch_rows(run.schedule[0].to(run.data.x_train.device), c), params)
        g = torch.cat([sum(gi[k] for gi in grads).flatten() / c for k in params])
        C = torch.cat([correction[k].flatten() for k in params])
        step, term = experiment.lr * float(g.norm()), experiment.lr ** 2 * float(C.norm())
        rows.append({"c": c, "h‖∇L_B‖": step, "h²‖correction‖": term, "ratio": term / step,
                     "cos(correction, ∇L_B)": float(g @ C / (g.norm() * C.norm()))})
    return pd.DataFrame(rows).set_index("c")


def summary_table(experiment: OrderAverageExperiment, results: dict):
    """One row per (seed, c, variant): its settings and where the run ended."""
    import pandas as pd

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
    import seaborn as sns

    colour, line = _STYLE.get(name, (None, "-"))
    if colour is None:  # a λ of the paper's grid: darker for larger λ
        labels = [lambda_label(m) for m in sorted(lambdas)]
        return sns.color_palette("flare", len(labels))[labels.index(name)], "-"
    return (sns.color_palette("colorblind")[colour] if isinstance(colour, int) else colour), line


_LINEAR_BELOW = 1e-4  # the difference panel is linear within ±this, logarithmic beyond


def plot_curves(experiment: OrderAverageExperiment, results: dict, seed: int):
    """Rows: the splits c. Columns: train loss, test loss, and the test loss minus the large
    batch's on a symmetric log scale, so that differences of 1e-4 and of 0.5 both show."""
    import matplotlib.pyplot as plt

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
            ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))  # diverging
            # runs leave through the top
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
