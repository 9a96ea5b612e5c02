"""Training steps as pure maps T_i over a state dictionary, one map per row of the schedule.

``iterates(sgd_maps(...), state0, "backward")`` *is* backward SGD: the order engine composes the
maps, and each map evaluates the network at the state it is given through
``torch.func.functional_call``, so the caller's module and tensors are never written.

States:

* `sgd_maps`: ``{name: tensor}`` with the names of ``model.named_parameters()`` — plus
  ``model.named_buffers()`` for models that have buffers (BatchNorm running statistics, which a
  training step updates, so that a backward iterate carries the statistics of its own batches).
* `optimizer_maps`: ``{"params": {...}, "buffers": {...}, "optimizer": state_dict}`` for any
  ``torch.optim`` optimiser; a backward run restarts the optimiser's state (momentum, Adam's
  moments) together with the parameters, because it restarts from the whole initial state.

Both return a sequence of maps that also offers the engine two faster, equivalent paths
(see `orders.InPlaceMaps` and `orders.GroupedMaps`):

* in place: a private copy of the model is the workspace; a composition loads the base state into
  it once, then steps it in place (forward, backward, ``p -= lr·g``), exactly like a hand-written
  restart loop;
* grouped (the batched engine): K compositions T_{r+1}∘…∘T_{n_k} that share a base run side by
  side with ``torch.func.vmap`` over a stacked state — every tensor of the state gets a leading
  trajectory axis: parameters, BatchNorm buffers (each trajectory's running statistics, updated in
  place under vmap by its own batch statistics) and optimiser state (`functional_optim`, one step
  count per trajectory). Aligned on their *last* map (all end with T_{r+1}), the trajectories
  active at map index m all apply the same T_m, so one batch of inputs serves all K of them.

A family's grouped path is three methods — ``stack`` (K copies of a state), ``group_step`` (T_m on
the first ``active`` trajectories, in place) and ``unstack`` (one trajectory as an ordinary
state) — and ``compose_group`` (here, shared) drives them; ``grouping_problem`` says why a given
model or optimiser cannot take that path (None when it can). Appendix D's updates reuse the SGD
pieces (`order_average`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import cached_property

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .functional_optim import optimizer_state_dict, stack_optimizer_state, stacked_optimizer

__all__ = ["initial_state", "sgd_maps", "optimizer_maps", "initial_optimizer_state",
           "SGDMaps", "OptimizerMaps", "supports_grouping", "grouping_problem", "check_schedule",
           "stack_tensors"]

State = dict[str, torch.Tensor]
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


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


def grouping_problem(model: nn.Module) -> str | None:
    """Why the batched engine cannot carry this model's buffers, or None if it can.

    BatchNorm's running statistics are stacked per trajectory and updated in place under vmap;
    with ``momentum=None`` (a cumulative average) BatchNorm reads its batch count as a Python
    number, which vmap cannot batch. Buffers of any other module are refused rather than guessed.
    """
    for name, module in model.named_modules():
        own = [b for b, _ in module.named_buffers(recurse=False)]
        if not own:
            continue
        if not isinstance(module, _BATCH_NORMS):
            return (f"module {name or type(model).__name__!r} ({type(module).__name__}) has "
                    f"buffers {own}; the batched engine carries BatchNorm buffers only")
        if module.momentum is None:
            return (f"BatchNorm {name!r} has momentum=None (a cumulative average of its batch "
                    f"count), which vmap cannot batch")
    return None


def supports_grouping(model: nn.Module) -> bool:
    """Whether the batched (vmap) path can carry the model's buffers (see `grouping_problem`)."""
    return grouping_problem(model) is None


def check_schedule(inputs: torch.Tensor, targets: torch.Tensor,
                   schedule: torch.Tensor) -> torch.Tensor:
    """The schedule on the inputs' device, after checking it indexes the examples it is given."""
    if schedule.ndim != 2 or schedule.dtype != torch.int64:
        raise ValueError(f"schedule must be a [steps, batch] int64 tensor; got {schedule.dtype} "
                         f"{list(schedule.shape)}")
    if len(inputs) != len(targets):
        raise ValueError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
    if schedule.numel() and (schedule.min() < 0 or schedule.max() >= len(inputs)):
        raise ValueError(f"schedule indexes outside 0..{len(inputs) - 1}")
    return schedule.to(inputs.device)


def stack_tensors(tensors: State, width: int) -> State:
    """``width`` copies of every tensor, along a new leading trajectory axis."""
    return {k: v.detach().unsqueeze(0).repeat(width, *([1] * v.ndim)) for k, v in tensors.items()}


def _rows_of(stacked: State, active: int) -> State:
    """The first ``active`` trajectories: views, so in-place updates reach the stack."""
    return {k: v[:active] for k, v in stacked.items()}


def _row(stacked: State, j: int) -> State:
    return {k: v[j].clone() for k, v in stacked.items()}


class _TrainingMaps(Sequence):
    """Shared plumbing: ``self[i - 1]`` is the pure map T_i; the workspace is a private model;
    ``compose_group`` drives a family's grouped path (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                 targets: torch.Tensor, schedule: torch.Tensor):
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets
        self.rows = check_schedule(inputs, targets, schedule)
        self.param_names = tuple(name for name, _ in model.named_parameters())
        self._workspace_model: nn.Module | None = None
        self._workspace_params: list[torch.Tensor] = []
        self._vgrad = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"map index {index} outside 0..{len(self) - 1}")
        return lambda state: self.pure_step(self.rows[index], state)

    def batch_loss(self, model: nn.Module, rows: torch.Tensor, tensors: State | None = None):
        if not model.training:  # training maps always use batch statistics
            model.train()
        x = self.inputs[rows]
        out = model(x) if tensors is None else functional_call(model, tensors, (x,))
        return self.loss_fn(out, self.targets[rows])

    def workspace_model(self) -> nn.Module:
        """A private copy of the model, created once, so the caller's module is never written."""
        if self._workspace_model is None:
            self._workspace_model = copy.deepcopy(self.model).train()
            # listed once: walking the module tree costs as much as a small model's step
            self._workspace_params = list(self._workspace_model.parameters())
        return self._workspace_model

    def pure_step(self, rows: torch.Tensor, state):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the grouped (batched) path ------------------------------------------------------------
    def grouping_problem(self) -> str | None:
        """Why these maps cannot run on the batched engine, or None if they can."""
        return f"{type(self).__name__} has no batched path"

    def trajectory_copies(self) -> int:
        """Parameter-sized tensors one trajectory of the batched path holds (memory sizing)."""
        return 3  # parameters, gradients, the update's temporaries

    def examples_per_step(self) -> int:
        """Examples whose activations one trajectory's group step keeps alive at once."""
        return self.rows.shape[1]

    def batched_grad(self):
        """∇ of the batch loss for stacked parameters and buffers: vmap(grad) over trajectories,
        one shared input batch. BatchNorm updates each trajectory's (stacked) running statistics
        in place, as it would in a training step; the gradient is taken w.r.t. parameters only."""
        if self._vgrad is None:
            def loss_at(params, buffers, x, y):
                return self.loss_fn(functional_call(self.model, (params, buffers), (x,)), y)
            self._vgrad = vmap(grad(loss_at), in_dims=(0, 0, None, None))
        return self._vgrad

    def compose_group(self, r: int, ns: list[int], x_r) -> list:
        """For each n in ``ns`` (all > r), T_{r+1} ∘ … ∘ T_n (x_r), computed side by side."""
        problem = self.grouping_problem()
        if problem is not None:
            raise ValueError(f"the batched engine cannot run these maps: {problem}; use the "
                             f"sequential engine")
        self.model.train()
        descending = sorted(ns, reverse=True)
        stacked = self.stack(x_r, len(ns))
        active = 0
        for m in range(descending[0], r, -1):
            # trajectory j (the j-th longest) starts with T_{n_j}; the longest start first
            while active < len(ns) and descending[active] >= m:
                active += 1
            self.group_step(m, stacked, active)
        row = {n: j for j, n in enumerate(descending)}
        return [self.unstack(stacked, row[n], n - r) for n in ns]

    def stack(self, state, width: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def group_step(self, m: int, stacked, active: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def unstack(self, stacked, j: int, applied: int):  # pragma: no cover - abstract
        raise NotImplementedError


class SGDMaps(_TrainingMaps):
    """T_i(θ) = θ − lr·∇L_{B_i}(θ) over ``{name: tensor}`` states (see `sgd_maps`)."""

    def __init__(self, model, loss_fn, inputs, targets, schedule, lr: float):
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"learning rate must be > 0; got {lr!r}")
        super().__init__(model, loss_fn, inputs, targets, schedule)
        self.lr = lr

    # -- the pure map --------------------------------------------------------------------------
    def pure_step(self, rows: torch.Tensor, state: State) -> State:
        params = {k: state[k].detach().requires_grad_() for k in self.param_names}
        # BatchNorm updates running statistics in place: give it copies, never the caller's.
        buffers = {k: v.clone() for k, v in state.items() if k not in params}
        loss = self.batch_loss(self.model, rows, {**params, **buffers})
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            new = {k: p.detach() - self.lr * g for (k, p), g in zip(params.items(), grads)}
        return {**new, **buffers}

    # -- the in-place path ---------------------------------------------------------------------
    def load(self, state: State) -> nn.Module:
        model = self.workspace_model()
        with torch.no_grad():
            for name, tensor in (*model.named_parameters(), *model.named_buffers()):
                tensor.copy_(state[name])
        return model

    def apply_(self, i: int, model: nn.Module) -> None:
        params = self._workspace_params
        loss = self.batch_loss(model, self.rows[i - 1])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-self.lr)

    def export(self, model: nn.Module) -> State:
        return initial_state(model)

    # -- the grouped path ----------------------------------------------------------------------
    def grouping_problem(self) -> str | None:
        return grouping_problem(self.model)

    def stack(self, state: State, width: int) -> dict:
        return {"params": stack_tensors({k: state[k] for k in self.param_names}, width),
                "buffers": stack_tensors({k: v for k, v in state.items()
                                          if k not in self.param_names}, width)}

    def group_step(self, m: int, stacked: dict, active: int) -> None:
        self.step_rows(self.rows[m - 1], stacked, active)

    def step_rows(self, rows: torch.Tensor, stacked: dict, active: int) -> None:
        """One SGD step on the examples ``rows`` for the first ``active`` trajectories."""
        params = _rows_of(stacked["params"], active)
        buffers = _rows_of(stacked["buffers"], active)
        grads = self.batched_grad()(params, buffers, self.inputs[rows], self.targets[rows])
        with torch.no_grad():
            torch._foreach_add_(list(params.values()), [grads[k] for k in params],
                                alpha=-self.lr)

    def stepped(self, rows: torch.Tensor, params: State) -> State:
        """Stacked parameters after one SGD step on ``rows``, out of place (no buffers): the
        batched twin of `pure_step` for Appendix D's order average."""
        grads = self.batched_grad()(params, {}, self.inputs[rows], self.targets[rows])
        with torch.no_grad():
            return {k: p - self.lr * grads[k] for k, p in params.items()}

    def unstack(self, stacked: dict, j: int, applied: int) -> State:
        return {**_row(stacked["params"], j), **_row(stacked["buffers"], j)}


def sgd_maps(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor,
             schedule: torch.Tensor, lr: float) -> SGDMaps:
    """The SGD maps T_i(θ) = θ − lr·∇ loss_fn(model_θ(inputs[schedule[i]]), targets[schedule[i]]).

    ``maps[i]`` uses row i of the schedule (so ``maps[0]`` is the paper's T_1). Each map takes and
    returns a state as made by `initial_state`, and never mutates its argument.
    """
    return SGDMaps(model, loss_fn, inputs, targets, schedule, lr)


class OptimizerMaps(_TrainingMaps):
    """One step of a torch.optim optimiser per map, over the full training state."""

    def __init__(self, model, loss_fn, inputs, targets, schedule,
                 make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer]):
        super().__init__(model, loss_fn, inputs, targets, schedule)
        self.make_optimizer = make_optimizer
        self._workspace_optimizer: torch.optim.Optimizer | None = None

    def pure_step(self, rows: torch.Tensor, state: dict) -> dict:
        params = {k: v.detach().clone().requires_grad_() for k, v in state["params"].items()}
        buffers = {k: v.clone() for k, v in state["buffers"].items()}
        optimizer = self.make_optimizer(list(params.values()))
        if state["optimizer"]:
            # load_state_dict keeps the given tensors and step() updates them in place: copy.
            optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.batch_loss(self.model, rows, {**params, **buffers}).backward()
        optimizer.step()
        return {"params": {k: p.detach() for k, p in params.items()}, "buffers": buffers,
                "optimizer": optimizer.state_dict()}

    def load(self, state: dict):
        model = self.workspace_model()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(state["params"][name])
            for name, b in model.named_buffers():
                b.copy_(state["buffers"][name])
        # A fresh optimiser per restart: its state is exactly the one being loaded.
        optimizer = self.make_optimizer(list(model.parameters()))
        if state["optimizer"]:
            optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        return model, optimizer

    def apply_(self, i: int, workspace) -> None:
        model, optimizer = workspace
        optimizer.zero_grad(set_to_none=True)
        self.batch_loss(model, self.rows[i - 1]).backward()
        optimizer.step()

    def export(self, workspace) -> dict:
        model, optimizer = workspace
        state = initial_optimizer_state(model)
        state["optimizer"] = copy.deepcopy(optimizer.state_dict())
        return state

    # -- the grouped path: the optimiser's formulas on stacked state (`functional_optim`) ------
    @cached_property
    def _stacked_format(self):
        """The stacked update reproducing the optimiser, its ``param_groups`` as torch saves
        them, and a step tensor of torch's own (dtype, device) — read off optimisers built by
        ``make_optimizer`` on the private model and on a one-element probe."""
        params = list(self.workspace_model().parameters())
        optimizer = self.make_optimizer(params)
        update = stacked_optimizer(optimizer)  # ValueError naming what it cannot reproduce
        probe = torch.zeros(1, dtype=params[0].dtype, device=params[0].device,
                            requires_grad=True)
        probe_optimizer = self.make_optimizer([probe])
        probe.grad = torch.zeros_like(probe)
        probe_optimizer.step()
        step_like = probe_optimizer.state[probe].get("step")
        return update, optimizer.state_dict()["param_groups"], step_like

    def grouping_problem(self) -> str | None:
        problem = grouping_problem(self.model)
        if problem is not None:
            return problem
        try:
            self._stacked_format
        except ValueError as err:
            return str(err)
        return None

    def trajectory_copies(self) -> int:
        update = self._stacked_format[0]
        # Adam's square roots and ratios are two more temporaries per parameter
        return 3 + len(update.state_keys) + (2 if len(update.state_keys) == 2 else 0)

    def stack(self, state: dict, width: int) -> dict:
        update = self._stacked_format[0]
        params = [state["params"][k] for k in self.param_names]
        optimizer, steps = stack_optimizer_state(update, state["optimizer"], params, width)
        return {"params": stack_tensors({k: state["params"][k] for k in self.param_names}, width),
                "buffers": stack_tensors(state["buffers"], width), "optimizer": optimizer,
                "step0": steps,
                "steps": torch.full((width,), steps, dtype=torch.float64,
                                    device=params[0].device)}

    def group_step(self, m: int, stacked: dict, active: int) -> None:
        rows = self.rows[m - 1]
        params = _rows_of(stacked["params"], active)
        buffers = _rows_of(stacked["buffers"], active)
        grads = self.batched_grad()(params, buffers, self.inputs[rows], self.targets[rows])
        with torch.no_grad():
            steps = stacked["steps"][:active]
            steps += 1
            state = {key: [t[:active] for t in tensors]
                     for key, tensors in stacked["optimizer"].items()}
            self._stacked_format[0].update_(list(params.values()), [grads[k] for k in params],
                                            state, steps)

    def unstack(self, stacked: dict, j: int, applied: int) -> dict:
        update, param_groups, step_like = self._stacked_format
        return {"params": _row(stacked["params"], j), "buffers": _row(stacked["buffers"], j),
                "optimizer": optimizer_state_dict(update, stacked["optimizer"], j,
                                                  stacked["step0"] + applied, param_groups,
                                                  step_like)}


def optimizer_maps(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                   targets: torch.Tensor, schedule: torch.Tensor,
                   make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
                   ) -> OptimizerMaps:
    """One step of any torch.optim optimiser per schedule row, as maps over the full training state
    (see `initial_optimizer_state`). ``make_optimizer(params)`` builds the optimiser, e.g.
    ``lambda p: torch.optim.Adam(p, lr=1e-3)``.
    """
    return OptimizerMaps(model, loss_fn, inputs, targets, schedule, make_optimizer)
