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
and `run_many` serve them as they serve SGD, and the maps compose in any order. Each also has the
batched engine's grouped path (`maps`), on SGD's stacked state: ``small`` takes its c micro-batch
steps as c group steps; ``average`` runs the same recursion over stacked trajectories (one
vmapped small step per branch); ``regularised`` is the same update written with torch.func
(grad of a function of the micro-batch grads), vmapped over trajectories.

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

The experiment of Figures 14–19 (its config, table and figure) is the page's study, in
`iteration_order.book.order_average`: the trajectory runner builds its maps from this module, and the study runs
them through the runner.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .families import MapFamily, register_update
from .maps import SGDMaps, State, _TrainingMaps, initial_state, sgd_maps

__all__ = ["UPDATES", "MAX_AVERAGE_MICRO_BATCHES", "closest_multiple", "micro_batch_rows",
           "gradients_and_correction", "SmallBatchMaps", "RegularisedMaps", "OrderAverageMaps",
           "update_maps"]

UPDATES = ("sgd", "small", "regularised", "average")  # "sgd" is the core family (`families`)
MAX_AVERAGE_MICRO_BATCHES = 5  # the exact average costs Σ_k c!/(c−k)! small steps: 325 at c = 5


def closest_multiple(batch_size: int, micro_batches: int) -> int:
    """The multiple of c nearest to |B| (the paper's rule: 2049 for |B| = 2048 and c = 3)."""
    return micro_batches * max(1, math.floor(batch_size / micro_batches + 0.5))


def _check_split(batch_size: int, micro_batches: int) -> None:
    if batch_size % micro_batches:
        raise ValueError(f"batch_size={batch_size} is not divisible by micro_batches="
                         f"{micro_batches}; use {closest_multiple(batch_size, micro_batches)}")


def micro_batch_rows(rows: torch.Tensor, micro_batches: int) -> torch.Tensor:
    """A schedule row [|B|] as ``[c, |B|/c]``: micro-batch i is the i-th consecutive slice."""
    _check_split(len(rows), micro_batches)
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
        _check_split(self.rows.shape[1], micro_batches)
        self.micro_batches = micro_batches
        self.lr = lr

    @cached_property
    def inner(self) -> SGDMaps:
        """SGD of lr h′ over the micro-batch schedule; built on first use (the regularised update,
        which takes one large step, never needs it)."""
        return SGDMaps(self.model, self.loss_fn, self.inputs, self.targets,
                       self.rows.reshape(-1, self.rows.shape[1] // self.micro_batches), self.lr)

    def micro_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return micro_batch_rows(rows, self.micro_batches)

    # -- the grouped path (batched engine): the state is SGD's, so SGD's stacking serves ------
    def grouping_problem(self) -> str | None:
        return self.inner.grouping_problem()

    def examples_per_step(self) -> int:
        return self.rows.shape[1] // self.micro_batches

    def stack(self, state: State, width: int) -> dict:
        return self.inner.stack(state, width)

    def unstack(self, stacked: dict, j: int, applied: int) -> State:
        return self.inner.unstack(stacked, j, applied)


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

    def group_step(self, m: int, stacked: dict, active: int) -> None:
        # the c micro-batch steps of T_m, B_1 first, for every active trajectory
        for micro in self.micro_rows(self.rows[m - 1]):
            self.inner.step_rows(micro, stacked, active)


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
        return self._average(state, list(self.micro_rows(rows)), self.inner.pure_step)

    def _average(self, state: State, remaining: list[torch.Tensor], step) -> State:
        """The mean over orders of ``remaining``; ``step(rows, state)`` is one small step (of one
        state, or of stacked trajectories: the recursion is the same)."""
        if not remaining:
            return state
        branches = [self._average(step(first, state), remaining[:j] + remaining[j + 1:], step)
                    for j, first in enumerate(remaining)]
        return {k: sum(b[k] for b in branches) / len(branches) for k in state}

    def trajectory_copies(self) -> int:
        # the recursion holds up to c + (c-1) + ... + 1 branch states at once
        return 3 + self.micro_batches * (self.micro_batches + 1) // 2

    def group_step(self, m: int, stacked: dict, active: int) -> None:
        live = {k: v[:active] for k, v in stacked["params"].items()}
        averaged = self._average(live, list(self.micro_rows(self.rows[m - 1])),
                                 self.inner.stepped)
        with torch.no_grad():
            torch._foreach_copy_(list(live.values()), [averaged[k] for k in live])


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

    # -- the grouped path: the same update with torch.func, vmapped over trajectories ---------
    def trajectory_copies(self) -> int:
        return 5 + self.micro_batches  # the c micro-batch gradients, their sum, the correction

    def examples_per_step(self) -> int:
        return 2 * self.rows.shape[1]  # every micro-batch's graph is kept for the double backward

    @cached_property
    def _batched_update(self):
        """θ ↦ θ − h·mean_i g_i + λ·∇Σ_{i<j}⟨g_i, g_j⟩ for stacked θ: `gradients_and_correction`
        written with torch.func (grad of a function of grads), so vmap can batch it."""
        c = self.micro_batches

        def micro_loss(params, x, y):
            return self.loss_fn(functional_call(self.model, params, (x,)), y)

        def alignment(params, xs, ys):
            grads = [grad(micro_loss)(params, xs[i], ys[i]) for i in range(c)]
            total = {k: sum(g[k] for g in grads) for k in params}
            value = 0.5 * (sum((t * t).sum() for t in total.values())
                           - sum((g[k] * g[k]).sum() for g in grads for k in g))
            return value, grads

        def update(params, xs, ys):
            correction, grads = grad(alignment, has_aux=True)(params, xs, ys)
            return {k: p - self.lr * sum(g[k] for g in grads) / c
                    + self.reg_lambda * correction[k] for k, p in params.items()}

        return vmap(update, in_dims=(0, None, None))

    def group_step(self, m: int, stacked: dict, active: int) -> None:
        live = {k: v[:active] for k, v in stacked["params"].items()}
        micro = self.micro_rows(self.rows[m - 1])
        new = self._batched_update(live, self.inputs[micro], self.targets[micro])
        with torch.no_grad():
            torch._foreach_copy_(list(live.values()), [new[k] for k in live])


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
# The runner's plug-in: TrajectoryConfig(update="small" | "regularised" | "average")
# ------------------------------------------------------------------------------------------------

def _check_config(config) -> None:
    """The fields of Appendix D's updates, checked before any data is loaded."""
    c = config.micro_batches
    if c < 2:
        raise ValueError(f"update={config.update!r} with micro_batches={c}: this update splits "
                         f"each batch into micro_batches >= 2 ('sgd' takes one step on the whole "
                         f"batch)")
    if config.batch_size % c:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by micro_batches={c}; "
                         f"use {closest_multiple(config.batch_size, c)} (the closest multiple)")
    if config.update == "average" and c > MAX_AVERAGE_MICRO_BATCHES:
        raise ValueError(f"update='average' enumerates all {c}! orders; micro_batches must be "
                         f"<= {MAX_AVERAGE_MICRO_BATCHES}; got {c}")
    if config.reg_lambda and config.update != "regularised":
        raise ValueError(f"reg_lambda={config.reg_lambda} is used by update='regularised' only; "
                         f"got update={config.update!r}")
    if config.optimizer != "sgd":
        raise ValueError(f"update={config.update!r} is built from SGD steps: optimizer must be "
                         f"'sgd'; got {config.optimizer!r}")


def _build(config, model, loss_fn, inputs, targets, schedule):
    maps = update_maps(config.update, model, loss_fn, inputs, targets, schedule, config.lr,
                       config.micro_batches, config.reg_lambda)
    return maps, initial_state(model)


for _name in UPDATES[1:]:
    register_update(_name, MapFamily(_check_config, _build))
