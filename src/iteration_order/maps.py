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
* grouped (SGD on models without buffers): K compositions T_{r+1}∘…∘T_{n_k} that share a base run
  side by side with ``torch.func.vmap`` over stacked parameters. Aligned on their *last* map (all
  end with T_{r+1}), the trajectories active at map index m all apply the same T_m, so one batch
  of inputs serves all K parameter copies.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

__all__ = ["initial_state", "sgd_maps", "optimizer_maps", "initial_optimizer_state",
           "SGDMaps", "OptimizerMaps", "supports_grouping", "check_schedule"]

State = dict[str, torch.Tensor]


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


def supports_grouping(model: nn.Module) -> bool:
    """Whether the vmap path applies: it cannot carry in-place buffer updates (BatchNorm)."""
    return not any(True for _ in model.buffers())


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


class _TrainingMaps(Sequence):
    """Shared plumbing: ``self[i - 1]`` is the pure map T_i; the workspace is a private model."""

    def __init__(self, model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                 targets: torch.Tensor, schedule: torch.Tensor):
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets
        self.rows = check_schedule(inputs, targets, schedule)
        self.param_names = tuple(name for name, _ in model.named_parameters())
        self._workspace_model: nn.Module | None = None
        self._workspace_params: list[torch.Tensor] = []

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


class SGDMaps(_TrainingMaps):
    """T_i(θ) = θ − lr·∇L_{B_i}(θ) over ``{name: tensor}`` states (see `sgd_maps`)."""

    def __init__(self, model, loss_fn, inputs, targets, schedule, lr: float):
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"learning rate must be > 0; got {lr!r}")
        super().__init__(model, loss_fn, inputs, targets, schedule)
        self.lr = lr
        self._vgrad = None

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

    # -- the grouped (vmap) path ---------------------------------------------------------------
    def compose_group(self, r: int, ns: list[int], x_r: State) -> list[State]:
        if not supports_grouping(self.model):
            raise ValueError("the grouped (vmap) engine needs a model without buffers "
                             "(no BatchNorm); use the sequential engine for this model")
        if self._vgrad is None:
            def loss_at(params, x, y):
                return self.loss_fn(functional_call(self.model, params, (x,)), y)
            self._vgrad = vmap(grad(loss_at), in_dims=(0, None, None))
        self.model.train()
        descending = sorted(ns, reverse=True)
        stacked = {k: x_r[k].unsqueeze(0).repeat(len(ns), *([1] * x_r[k].ndim))
                   for k in self.param_names}
        active = 0
        for m in range(descending[0], r, -1):
            # trajectory j (the j-th longest) starts with T_{n_j}; the longest start first
            while active < len(ns) and descending[active] >= m:
                active += 1
            rows = self.rows[m - 1]
            live = {k: v[:active] for k, v in stacked.items()}
            grads = self._vgrad(live, self.inputs[rows], self.targets[rows])
            with torch.no_grad():
                torch._foreach_add_(list(live.values()), [grads[k] for k in live],
                                    alpha=-self.lr)
        by_n = {n: j for j, n in enumerate(descending)}
        return [{k: v[by_n[n]].clone() for k, v in stacked.items()} for n in ns]


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


def optimizer_maps(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                   targets: torch.Tensor, schedule: torch.Tensor,
                   make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
                   ) -> OptimizerMaps:
    """One step of any torch.optim optimiser per schedule row, as maps over the full training state
    (see `initial_optimizer_state`). ``make_optimizer(params)`` builds the optimiser, e.g.
    ``lambda p: torch.optim.Adam(p, lr=1e-3)``.
    """
    return OptimizerMaps(model, loss_fn, inputs, targets, schedule, make_optimizer)
