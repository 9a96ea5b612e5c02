"""Training steps as pure maps T_i over a state dictionary, one map per row of the schedule.

``iterates(sgd_maps(...), state0, "backward")`` *is* backward SGD: the order engine composes the
maps, and each map evaluates the network at the state it is given through
``torch.func.functional_call``, so the module's own tensors are never read or written.

States:

* `sgd_maps`: ``{name: tensor}`` with the names of ``model.named_parameters()`` — plus
  ``model.named_buffers()`` for models that have buffers (BatchNorm running statistics, which a
  training step updates, so that a backward iterate carries the statistics of its own batches).
* `optimizer_maps`: ``{"params": {...}, "buffers": {...}, "optimizer": state_dict}`` for any
  ``torch.optim`` optimiser; a backward run restarts the optimiser's state (momentum, Adam's
  moments) together with the parameters, because it restarts from the whole initial state.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["initial_state", "sgd_maps", "optimizer_maps", "initial_optimizer_state",
           "parameter_names"]

State = dict[str, torch.Tensor]


def parameter_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def initial_state(model: nn.Module) -> State:
    """Detached copies of the model's parameters and buffers: the x_0 of `sgd_maps`."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {name: t.detach().clone() for name, t in tensors.items()}


def initial_optimizer_state(model: nn.Module) -> dict:
    """The x_0 of `optimizer_maps`: the model's tensors and an empty (fresh) optimiser state."""
    params = dict(model.named_parameters())
    state = initial_state(model)
    return {"params": {k: v for k, v in state.items() if k in params},
            "buffers": {k: v for k, v in state.items() if k not in params},
            "optimizer": {}}


def _check_schedule(inputs: torch.Tensor, targets: torch.Tensor, schedule: torch.Tensor,
                    lr: float | None = None) -> torch.Tensor:
    if schedule.ndim != 2 or schedule.dtype != torch.int64:
        raise ValueError(f"schedule must be a [steps, batch] int64 tensor; got {schedule.dtype} "
                         f"{list(schedule.shape)}")
    if len(inputs) != len(targets):
        raise ValueError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
    if schedule.numel() and (schedule.min() < 0 or schedule.max() >= len(inputs)):
        raise ValueError(f"schedule indexes outside 0..{len(inputs) - 1}")
    if lr is not None and not lr > 0:
        raise ValueError(f"learning rate must be > 0; got {lr!r}")
    return schedule.to(inputs.device)


def _batch_loss(model, loss_fn, inputs, targets, tensors: State, rows: torch.Tensor):
    if not model.training:  # training maps always use batch statistics
        model.train()
    return loss_fn(functional_call(model, tensors, (inputs[rows],)), targets[rows])


def _sgd_step(model, loss_fn, inputs, targets, lr, param_names, rows, state: State) -> State:
    params = {k: state[k].detach().requires_grad_() for k in param_names}
    # BatchNorm updates running statistics in place: give it copies, never the caller's tensors.
    buffers = {k: v.clone() for k, v in state.items() if k not in params}
    loss = _batch_loss(model, loss_fn, inputs, targets, {**params, **buffers}, rows)
    grads = torch.autograd.grad(loss, list(params.values()))
    with torch.no_grad():
        new = {k: p.detach() - lr * g for (k, p), g in zip(params.items(), grads)}
    return {**new, **buffers}


def sgd_maps(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor,
             schedule: torch.Tensor, lr: float) -> list[Callable[[State], State]]:
    """The SGD maps T_i(θ) = θ − lr·∇ loss_fn(model_θ(inputs[schedule[i]]), targets[schedule[i]]).

    ``maps[i]`` uses row i of the schedule (so ``maps[0]`` is the paper's T_1). Each map takes and
    returns a state as made by `initial_state`, and never mutates its argument.
    """
    rows = _check_schedule(inputs, targets, schedule, lr)
    names = tuple(parameter_names(model))
    step = partial(_sgd_step, model, loss_fn, inputs, targets, lr, names)
    return [partial(step, rows[i]) for i in range(len(rows))]


def _optimizer_step(model, loss_fn, inputs, targets, make_optimizer, rows, state: dict) -> dict:
    params = {k: v.detach().clone().requires_grad_() for k, v in state["params"].items()}
    buffers = {k: v.clone() for k, v in state["buffers"].items()}
    optimizer = make_optimizer(list(params.values()))
    if state["optimizer"]:
        # load_state_dict keeps the given tensors, and step() updates them in place: copy first.
        optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    loss = _batch_loss(model, loss_fn, inputs, targets, {**params, **buffers}, rows)
    loss.backward()
    optimizer.step()
    return {"params": {k: p.detach() for k, p in params.items()}, "buffers": buffers,
            "optimizer": optimizer.state_dict()}


def optimizer_maps(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                   targets: torch.Tensor, schedule: torch.Tensor,
                   make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
                   ) -> list[Callable[[dict], dict]]:
    """One step of any torch.optim optimiser per schedule row, as maps over the full training state
    (see `initial_optimizer_state`). ``make_optimizer(params)`` builds the optimiser, e.g.
    ``lambda p: torch.optim.Adam(p, lr=1e-3)``.
    """
    rows = _check_schedule(inputs, targets, schedule)
    step = partial(_optimizer_step, model, loss_fn, inputs, targets, make_optimizer)
    return [partial(step, rows[i]) for i in range(len(rows))]
