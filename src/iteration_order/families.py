"""Map families: how the trajectory runner turns a config's ``update`` into maps and a start state.

The runner knows no family by name. A family registers itself under the names of the updates it
provides (``register_update``), with a check of the config fields it uses and a builder of its
maps; the runner looks the config's ``update`` up here. This module provides the core family,
``"sgd"``: one step of plain SGD (`maps.sgd_maps`) or of a ``torch.optim`` optimiser
(`maps.optimizer_maps`, for ``optimizer`` = momentum or adam) per mini-batch. Appendix D's
micro-batch updates register themselves in `order_average`, which the package imports, so the
core never imports an appendix.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .maps import initial_optimizer_state, initial_state, optimizer_maps, sgd_maps

__all__ = ["MapFamily", "register_update", "update_family", "updates"]


@dataclass(frozen=True)
class MapFamily:
    """``check(config)`` raises ValueError naming a field the family cannot run with;
    ``build(config, model, loss_fn, inputs, targets, schedule)`` returns ``(maps, state0)``."""

    check: Callable[[Any], None]
    build: Callable[..., tuple[Any, Any]]


_FAMILIES: dict[str, MapFamily] = {}


def register_update(name: str, family: MapFamily) -> None:
    """Make ``TrajectoryConfig(update=name)`` run with this family's maps."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"an update name must be an identifier; got {name!r}")
    if name in _FAMILIES and _FAMILIES[name] is not family:
        raise ValueError(f"update {name!r} is already registered")
    _FAMILIES[name] = family


def updates() -> tuple[str, ...]:
    """The registered update names, core first."""
    return tuple(_FAMILIES)


def update_family(name: str) -> MapFamily:
    if name not in _FAMILIES:
        raise ValueError(f"unknown update {name!r}; allowed: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


# ------------------------------------------------------------------------------------------------
# The core family: SGD or a torch.optim optimiser, one step on the whole mini-batch
# ------------------------------------------------------------------------------------------------

def _check_sgd(config) -> None:
    if config.micro_batches != 1:
        raise ValueError(f"update='sgd' with micro_batches={config.micro_batches}: 'sgd' takes one "
                         f"step on the whole batch (micro_batches=1); the other updates split it")
    if config.reg_lambda:
        raise ValueError(f"reg_lambda={config.reg_lambda} is used by update='regularised' only; "
                         f"got update='sgd'")


def _build_sgd(config, model, loss_fn, inputs, targets, schedule):
    args = (model, loss_fn, inputs, targets, schedule)
    if config.optimizer == "sgd":
        return sgd_maps(*args, lr=config.lr), initial_state(model)
    if config.optimizer == "momentum":
        make = lambda p: torch.optim.SGD(p, lr=config.lr, momentum=config.momentum)  # noqa: E731
    else:
        make = lambda p: torch.optim.Adam(p, lr=config.lr)  # noqa: E731
    return optimizer_maps(*args, make_optimizer=make), initial_optimizer_state(model)


register_update("sgd", MapFamily(_check_sgd, _build_sgd))
