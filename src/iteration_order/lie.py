"""Appendix C: backward SGD approximated by forward SGD plus a Lie-bracket correction.

For the SGD maps T_i(θ) = θ − h∇L_i(θ), Theorem C.2 says that composing the first n maps backward
instead of forward moves the n-th iterate, to second order in h, by a sum of Lie brackets of the
batch gradients at the starting point θ_0:

    θ^B_n = θ_n + h² C_n + O(h³),      C_n = Σ_{1≤i<j≤n} [∇L_i, ∇L_j](θ_0),
    [∇L_i, ∇L_j](θ) = ∇²L_i(θ) ∇L_j(θ) − ∇²L_j(θ) ∇L_i(θ).

θ̃_n = θ_n + h² C_n is Definition C.3's approximate backward iterate. Every term of C_n is taken at
θ_0, so C_n does not depend on h: one C_n serves every learning rate (`corrections`), and
`approximate_backward` adds h² C_n to forward iterates computed once by the order engine (or
passed in).

Computing C_n without a Hessian
-------------------------------
Corollary C.4 accumulates sums over the *earlier* batches 1..n−1, all at θ_0:
g_n = Σ_{i<n} ∇L_i(θ_0) and H_n = Σ_{i<n} ∇²L_i(θ_0) (so g_1 = 0, H_1 = 0), then
C_n = C_{n−1} + H_n ∇L_n(θ_0) − ∇²L_n(θ_0) g_n. Applied matrix-free, H_n·v is the Hessian-vector
product at θ_0 of Σ_{i<n} L_i, which is (n−1) times the mean loss over the union of the rows of
batches 1..n−1 (a row drawn in two batches counts twice; every batch of a schedule has the same
size): one `BatchLoss` over the concatenated rows. That product touches n−1 batches, so this
literal recursion (``method="corollary"``) costs O(N²) batch passes up to step N, as much as
backward SGD itself. It is kept as the reference the tests check.

The default, ``method="running-sum"``, regroups the same double sum. With G_n = Σ_{i≤n} ∇L_i(θ_0)
and H_{≤n} = Σ_{i≤n} ∇²L_i(θ_0),

    C_n = H_{≤n} G_n − S_n,      S_n = Σ_{i≤n} ∇²L_i(θ_0) (G_i + G_{i−1}),

because Σ_{i<j≤n} ∇²L_i ∇L_j = Σ_i ∇²L_i (G_n − G_i) and Σ_{i<j≤n} ∇²L_j ∇L_i = Σ_j ∇²L_j G_{j−1}.
G and S are running sums of one gradient and one single-batch Hessian-vector product per step;
H_{≤n} G_n is one product over n batches, needed only at the requested steps n. Up to step N this
costs N gradients, N single-batch products and one n-batch product per requested step. Both forms
subtract sums that grow like n² while their difference grows more slowly, so in float32 a few
digits are lost late in training; the page computes in float64.

Libraries. Gradients and products come from `hessian.BatchLoss`: forward-over-reverse
``torch.func.jvp(torch.func.grad(L))`` gives the exact product in one reverse pass carrying a
forward tangent (about two gradients of work, no double-backward graph kept in memory), summed over
chunks so the result does not depend on the chunk size; torch.func documents this composition as
its Hessian-vector product. Models with buffers (BatchNorm) are rejected by `BatchLoss`.

The book page's study of these quantities (its config, cached runner, tables and figures) is in
`iteration_order.book.lie_bracket`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from .hessian import BatchLoss
from .maps import check_schedule
from .maps import initial_state, sgd_maps
from .orders import iterates, steps_to_record

__all__ = ["METHODS", "lie_bracket", "corrections", "approximate_backward"]

State = dict[str, torch.Tensor]
METHODS = ("running-sum", "corollary")


# ------------------------------------------------------------------------------------------------
# The mathematics: brackets, C_n, θ̃_n
# ------------------------------------------------------------------------------------------------

def _combine(a: State, b: State, alpha: float = 1.0, beta: float = 1.0) -> State:
    """alpha·a + beta·b, entry by entry."""
    return {k: alpha * a[k] + beta * b[k] for k in a}


def _zeros(like: State) -> State:
    return {k: torch.zeros_like(v) for k, v in like.items()}


def _corrected(theta: State, C: State, lr: float) -> State:
    """θ + lr²·C: Definition C.3's approximate backward iterate from a forward one."""
    return _combine(theta, C, 1.0, lr ** 2)


def lie_bracket(first: BatchLoss, second: BatchLoss, params: State) -> State:
    """[∇L_i, ∇L_j](θ) = ∇²L_i(θ)∇L_j(θ) − ∇²L_j(θ)∇L_i(θ) for L_i = ``first``, L_j = ``second``.

    Two gradients and two Hessian-vector products; no Hessian is formed. Antisymmetric in its
    two losses, and equal to the bracket of the SGD fields −∇L_i, −∇L_j (the signs cancel).
    """
    params = {k: v.detach() for k, v in params.items()}
    return _combine(first.hvp(params, second.grad(params)),
                    second.hvp(params, first.grad(params)), 1.0, -1.0)


def _check_lr(lr: float) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a finite number > 0; got {lr!r}")


def corrections(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor,
                schedule: torch.Tensor, at: Iterable[int], method: str = "running-sum",
                chunk: int = 4096) -> dict[int, State]:
    """C_n = Σ_{1≤i<j≤n} [∇L_i, ∇L_j](θ_0) at the steps ``at``, θ_0 = the model's parameters.

    ``loss_fn`` and the schedule are those of `sgd_maps`; C_n does not depend on the learning rate.
    ``method`` is ``"running-sum"`` (linear cost, the default) or ``"corollary"`` (Corollary C.4
    literally, quadratic cost); see the module docstring.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    rows = check_schedule(inputs, targets, schedule)
    steps = steps_to_record(len(rows), at)
    theta0 = initial_state(model)

    def batches(first: int, last: int) -> BatchLoss:
        """The mean loss over the rows of batches first..last (1-based, inclusive)."""
        return BatchLoss(model, loss_fn, inputs, targets, rows[first - 1:last].reshape(-1), chunk)

    wanted, out = set(steps), {}
    if method == "running-sum":
        G_prev, S = _zeros(theta0), _zeros(theta0)
        for i in range(1, steps[-1] + 1):
            batch = batches(i, i)
            G = _combine(G_prev, batch.grad(theta0))
            S = _combine(S, batch.hvp(theta0, _combine(G, G_prev)))
            if i in wanted:  # H_{≤i} G_i: i times the mean loss over batches 1..i
                out[i] = _combine(batches(1, i).hvp(theta0, G), S, float(i), -1.0)
            G_prev = G
    else:
        g, C = _zeros(theta0), _zeros(theta0)
        for n in range(1, steps[-1] + 1):
            batch = batches(n, n)
            grad_n = batch.grad(theta0)
            if n > 1:  # H_n ∇L_n − ∇²L_n g_n, with H_n = (n−1)·∇² of the mean over batches 1..n−1
                C = _combine(C, _combine(batches(1, n - 1).hvp(theta0, grad_n),
                                         batch.hvp(theta0, g), float(n - 1), -1.0))
            if n in wanted:
                out[n] = dict(C)
            g = _combine(g, grad_n)
    return out


def approximate_backward(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                         targets: torch.Tensor, schedule: torch.Tensor, lr: float,
                         at: Iterable[int], forward: Mapping[int, State] | None = None,
                         method: str = "running-sum", chunk: int = 4096) -> dict[int, State]:
    """θ̃_n = θ_n + lr²·C_n (Definition C.3) at the steps ``at``, as ``{n: state}``.

    Takes the ingredients of `sgd_maps`. The forward iterates θ_n are computed once by the order
    engine, ``iterates(sgd_maps(...), initial_state(model), "forward", at=at)``, unless they are
    passed as ``forward`` (``{n: state}`` holding at least the steps ``at``, e.g. from a run that
    needs them anyway).
    """
    _check_lr(lr)
    steps = steps_to_record(len(schedule), at)
    if forward is not None:
        missing = [n for n in steps if n not in forward]
        if missing:
            raise ValueError(f"the forward iterates passed lack steps {missing[:5]}; they hold "
                             f"{sorted(forward)[:10]}")
    # First: its BatchLoss rejects a model with buffers before the forward run is spent.
    C = corrections(model, loss_fn, inputs, targets, schedule, steps, method, chunk)
    if forward is None:
        maps = sgd_maps(model, loss_fn, inputs, targets, schedule, lr)
        forward = dict(iterates(maps, initial_state(model), "forward", at=steps))
    return {n: _corrected(forward[n], C[n], lr) for n in steps}
