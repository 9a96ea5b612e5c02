"""Second-order quantities of a batch loss without ever forming a Hessian.

Everything here works on a parameter state ``{name: tensor}`` (the states of `sgd_maps`) and a
set of example rows, and evaluates the network through ``torch.func.functional_call``, so the
caller's module, its tensors and the global random generators are never touched.

* `BatchLoss` — L(θ) = mean of the loss over the given rows (duplicates count twice), evaluated in
  chunks. Each chunk contributes its *sum*-reduced loss divided by the number of target elements of
  all rows, so gradients and Hessian-vector products are exact whatever the chunk size (as in
  locuslab/edge-of-stability). Sum reduction also avoids pytorch/pytorch#123996: forward-over-
  reverse through ``F.mse_loss(reduction="mean")`` raises "ZeroTensors are immutable" in torch 2.14.
* `BatchLoss.grad`, `BatchLoss.hvp` — ∇L(θ) and ∇²L(θ)·v. The product is forward-over-reverse,
  ``torch.func.jvp(torch.func.grad(L), (θ,), (v,))``: one reverse pass with a forward-mode tangent,
  no retained double-backward graph, about the cost of two gradients (the pattern torch.func's
  documentation recommends for Hessian-vector products).
* `top_eigenpairs` — the largest algebraic eigenvalues of ∇²L(θ) and their eigenvectors by Lanczos
  (``scipy.sparse.linalg.eigsh(which="LA")`` on a ``LinearOperator`` of Hessian-vector products),
  with the starting vector drawn from an explicit generator.

Models with buffers (BatchNorm) are rejected: a training-mode forward pass updates running
statistics in place, which the function transforms cannot do without side effects.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

__all__ = ["BatchLoss", "flatten", "unflatten", "top_eigenpairs"]

State = dict[str, torch.Tensor]


def flatten(state: State) -> torch.Tensor:
    """One vector of all tensors of a state, in the state's key order."""
    return torch.cat([t.reshape(-1) for t in state.values()])


def unflatten(vector: torch.Tensor, like: State) -> State:
    """The inverse of `flatten` for states shaped like ``like``."""
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vector[start:start + t.numel()].view_as(t)
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries; the state has {start}")
    return out


def _sum_states(states) -> State:
    total: State = {}
    for state in states:
        for k, v in state.items():
            total[k] = v.detach() if k not in total else total[k] + v.detach()
    return total


@dataclass(frozen=True)
class BatchLoss:
    """The mean loss of ``model`` over ``inputs[rows]`` as a function of a parameter state.

    ``loss_fn(outputs, targets)`` is the mean-reduced loss of `sgd_maps` (``F.cross_entropy`` with
    class-index targets, ``F.mse_loss``); it must accept ``reduction="sum"`` and its mean must be
    that sum over the number of target elements, as for those two. ``chunk`` bounds how many
    examples one pass holds.
    """

    model: nn.Module
    loss_fn: Callable
    inputs: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    chunk: int = 4096

    def __post_init__(self):
        if any(True for _ in self.model.buffers()):
            raise ValueError("second-order quantities need a model without buffers (no BatchNorm): "
                             "a training-mode pass would update running statistics in place")
        if self.rows.ndim != 1 or len(self.rows) == 0:
            raise ValueError(f"rows must be a non-empty 1-D index tensor; got shape "
                             f"{list(self.rows.shape)}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1; got {self.chunk!r}")
        object.__setattr__(self, "rows", self.rows.to(self.inputs.device))

    def _chunk_losses(self):
        """Per chunk, the function θ -> (sum of its losses) / (target elements of all rows)."""
        elements = len(self.rows) * self.targets[:1].numel()
        for start in range(0, len(self.rows), self.chunk):
            idx = self.rows[start:start + self.chunk]
            x, y = self.inputs[idx], self.targets[idx]
            yield lambda params, x=x, y=y: self.loss_fn(
                functional_call(self.model, params, (x,)), y, reduction="sum") / elements

    def value(self, params: State) -> float:
        with torch.no_grad():
            return float(sum(f(params) for f in self._chunk_losses()))

    def grad(self, params: State) -> State:
        """∇L(θ) as a state."""
        return _sum_states(grad(f)(params) for f in self._chunk_losses())

    def hvp(self, params: State, vector: State) -> State:
        """∇²L(θ)·v as a state (forward-over-reverse, never a Hessian)."""
        return _sum_states(jvp(grad(f), (params,), (vector,))[1] for f in self._chunk_losses())


def top_eigenpairs(loss: BatchLoss, params: State, k: int = 1, generator: torch.Generator | None = None,
                   tol: float = 1e-4, maxiter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest algebraic eigenvalues of ∇²L(θ) (descending) and unit eigenvectors
    (columns of a ``[dim, k]`` array, flattened in the state's key order), by Lanczos.

    The Lanczos start vector is drawn from ``generator`` (a CPU generator; a fixed one by
    default), so the result is reproducible and no global random stream moves.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = {name: t.detach() for name, t in params.items()}
    dim = sum(t.numel() for t in params.values())
    if not isinstance(k, int) or not 1 <= k < dim:
        raise ValueError(f"k must be an integer in 1..{dim - 1} (the dimension minus one); got {k!r}")
    first = next(iter(params.values()))

    def matvec(v: np.ndarray) -> np.ndarray:
        tangent = unflatten(torch.as_tensor(np.ravel(v), dtype=first.dtype, device=first.device),
                            params)
        return flatten(loss.hvp(params, tangent)).cpu().double().numpy()

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v0 = torch.randn(dim, generator=g, dtype=torch.float64).numpy()
    operator = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    values, vectors = eigsh(operator, k=k, which="LA", v0=v0, tol=tol, maxiter=maxiter)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]
