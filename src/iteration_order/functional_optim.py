"""Momentum SGD and Adam as pure tensor updates over stacked trajectories (the batched engine).

`OptimizerMaps` steps a ``torch.optim`` optimiser per map. The batched engine advances K
trajectories side by side, each with its own optimiser state, and their step counts differ
(trajectory j starts at its own map), while a ``torch.optim`` object holds one state per
parameter and one step count. So the batched engine keeps every state tensor with a leading
trajectory axis ``[K, ...]``, a step count per trajectory, and applies the optimiser's formulas
itself, as ``torch._foreach_*`` calls over all parameters at once (one kernel per operation on a
GPU, like torch's own multi-tensor optimisers).

The formulas are torch's, operation by operation (torch 2.x, ``torch/optim/sgd.py`` and
``adam.py``, single-tensor path), so the batched and sequential engines agree to rounding:

* ``SGD(lr, momentum=μ)``: b ← μ·b + g (b = g at the first step: torch clones g; here b starts at
  0 and μ·0 + g = g exactly), θ ← θ − lr·b. With μ = 0 there is no state and θ ← θ − lr·g.
* ``Adam(lr, betas=(β1, β2), eps)``: t ← t + 1; m ← m.lerp(g, 1 − β1); v ← β2·v + (1 − β2)·g²;
  θ ← θ − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps). The bias corrections are computed per
  trajectory, in float64 on the device (torch computes them as Python floats).

Other options (weight decay, dampening, Nesterov, AMSGrad, maximize, several parameter groups,
other optimisers) are refused by `stacked_optimizer` with the option named, and such maps run on
the sequential engine. Conversions to and from ``optimizer.state_dict()`` make a state computed
here interchangeable with one the sequential engine computed (`OptimizerMaps` uses both).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MomentumSGD", "Adam", "StackedOptimizer", "stacked_optimizer", "stack_optimizer_state",
           "optimizer_state_dict"]

# state key -> list over parameters of stacked tensors [K, *param.shape]
StackedState = dict[str, list[Tensor]]


def _per_trajectory(values: Tensor, like: list[Tensor]) -> list[Tensor]:
    """A [K] vector as views that broadcast against each stacked tensor [K, ...], in its dtype
    (cast once per dtype: a ResNet has a hundred and more parameter tensors)."""
    cast = {t.dtype: values.to(t.dtype) for t in like}
    return [cast[t.dtype].view(-1, *([1] * (t.ndim - 1))) for t in like]


@dataclass(frozen=True)
class MomentumSGD:
    """``torch.optim.SGD(lr, momentum)`` (momentum may be 0: plain SGD, no state)."""

    lr: float
    momentum: float = 0.0

    @property
    def state_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def update_(self, params: list[Tensor], grads: list[Tensor], state: StackedState,
                steps: Tensor) -> None:
        """One step of every trajectory in ``params`` (stacked [K, ...]), in place."""
        if not self.momentum:
            torch._foreach_add_(params, grads, alpha=-self.lr)
            return
        buffers = state["momentum_buffer"]
        torch._foreach_mul_(buffers, self.momentum)
        torch._foreach_add_(buffers, grads)
        torch._foreach_add_(params, buffers, alpha=-self.lr)


@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam(lr, betas, eps)`` without weight decay or AMSGrad."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    state_keys = ("exp_avg", "exp_avg_sq")

    def update_(self, params: list[Tensor], grads: list[Tensor], state: StackedState,
                steps: Tensor) -> None:
        """One step; ``steps`` [K] holds each trajectory's step count *after* this step."""
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        torch._foreach_lerp_(exp_avgs, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - self.beta2)
        t = steps.to(torch.float64)
        step_size = self.lr / (1 - self.beta1 ** t)
        correction2_sqrt = (1 - self.beta2 ** t) ** 0.5
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, _per_trajectory(correction2_sqrt, denominators))
        torch._foreach_add_(denominators, self.eps)
        # torch: θ.addcdiv_(m, denom, value=-step_size), i.e. θ + (−s)·(m / denom)
        updates = torch._foreach_div(exp_avgs, denominators)
        torch._foreach_mul_(updates, _per_trajectory(step_size, updates))
        torch._foreach_sub_(params, updates)


StackedOptimizer = MomentumSGD | Adam


def _refuse(optimizer: torch.optim.Optimizer, option: str, value) -> None:
    raise ValueError(f"the batched engine reproduces {type(optimizer).__name__} without "
                     f"{option} only; got {option}={value!r} (use the sequential engine)")


def stacked_optimizer(optimizer: torch.optim.Optimizer) -> StackedOptimizer:
    """The stacked update that reproduces ``optimizer``'s step; ValueError naming the option
    (or the optimiser type) that the batched engine does not reproduce."""
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"the batched engine needs one parameter group; got "
                         f"{len(optimizer.param_groups)}")
    group = optimizer.param_groups[0]
    if isinstance(group["lr"], Tensor):
        _refuse(optimizer, "a tensor learning rate", group["lr"])
    for option in ("weight_decay",):
        if group.get(option, 0):
            _refuse(optimizer, option, group[option])
    for option in ("maximize", "differentiable"):
        if group.get(option, False):
            _refuse(optimizer, option, group[option])
    if type(optimizer) is torch.optim.SGD:
        if group["dampening"]:
            _refuse(optimizer, "dampening", group["dampening"])
        if group["nesterov"]:
            _refuse(optimizer, "nesterov", group["nesterov"])
        return MomentumSGD(lr=float(group["lr"]), momentum=float(group["momentum"]))
    if type(optimizer) is torch.optim.Adam:
        if group["amsgrad"]:
            _refuse(optimizer, "amsgrad", group["amsgrad"])
        beta1, beta2 = group["betas"]
        if isinstance(beta1, Tensor) or isinstance(beta2, Tensor):
            _refuse(optimizer, "tensor betas", group["betas"])
        return Adam(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]))
    raise ValueError(f"the batched engine reproduces torch.optim.SGD and torch.optim.Adam; got "
                     f"{type(optimizer).__name__} (use the sequential engine)")


def stack_optimizer_state(update: StackedOptimizer, state_dict: dict, params: list[Tensor],
                          width: int) -> tuple[StackedState, int]:
    """``width`` copies of an ``optimizer.state_dict()`` (``{}`` = fresh: zeros, step 0) as a
    stacked state, and the step count they share. ``params`` gives shapes, dtype and device."""
    per_param = state_dict.get("state", {}) if state_dict else {}
    steps = {int(s["step"]) for s in per_param.values() if "step" in s}
    if len(steps) > 1:
        raise ValueError(f"the parameters' step counts differ ({sorted(steps)}): one optimiser "
                         f"state per trajectory needs one count")
    stacked: StackedState = {}
    for key in update.state_keys:
        tensors = []
        for i, p in enumerate(params):
            saved = per_param.get(i, {}).get(key)
            # a fresh state is zeros: what torch's Adam creates, and what makes the stacked
            # momentum's first step b = μ·0 + g equal torch's b = g
            base = torch.zeros_like(p) if saved is None else saved.to(p.device, p.dtype)
            tensors.append(base.unsqueeze(0).repeat(width, *([1] * p.ndim)))
        stacked[key] = tensors
    return stacked, steps.pop() if steps else 0


def optimizer_state_dict(update: StackedOptimizer, stacked: StackedState, row: int, steps: int,
                         param_groups: list[dict], step_like: Tensor | None) -> dict:
    """Trajectory ``row`` of a stacked state as the ``state_dict()`` torch would hold after
    ``steps`` steps; ``step_like`` is a step tensor of torch's own (its dtype and device)."""
    state: dict[int, dict] = {}
    if steps and update.state_keys:
        for i in range(len(next(iter(stacked.values())))):
            entry = {}
            if isinstance(update, Adam):
                entry["step"] = torch.tensor(float(steps), dtype=step_like.dtype,
                                             device=step_like.device)
            for key in update.state_keys:
                entry[key] = stacked[key][i][row].clone()
            state[i] = entry
    return {"state": state, "param_groups": [{**g, "params": list(g["params"])}
                                            for g in param_groups]}
