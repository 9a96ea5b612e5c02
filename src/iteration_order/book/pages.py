"""The experiment behind the figure pages: forward against another order, seed by seed.

A page's notebook builds one frozen `OrdersExperiment` from its parameters cell and calls `run`;
every (seed, order) pair is one cached trajectory, so pages share runs and resume after an
interruption.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from ..orders import as_order
from ..parallel import run_many
from ..stability import stability_row
from ..trajectory import MLP_FIELDS, Runtime, TrajectoryConfig
from ..validation import check_list, check_number

__all__ = ["OrdersExperiment", "stability_table"]


@dataclass(frozen=True)
class OrdersExperiment:
    dataset: str
    model: str
    lr: float
    batch_size: int
    steps: int
    seeds: tuple[int, ...]
    orders: tuple[str, ...] = ("forward", "backward")  # the first is the reference
    depth: int = 5
    width: int = 500
    init: str = "torch"
    optimizer: str = "sgd"
    fake_data: bool = False
    record: str = "every:1"
    record_forward: str = "every:1"
    eval_train_size: int = 0
    eval_test_size: int = 0
    tail: float = 0.25  # the window of the stability statistics: last quarter of training

    def __post_init__(self):
        object.__setattr__(self, "seeds", check_list("seeds", self.seeds, [0, 1]))
        orders = check_list("orders", self.orders, ["forward", "backward"])
        object.__setattr__(self, "orders", tuple(as_order(o).spec() for o in orders))
        if len(self.orders) < 2:
            raise ValueError(f"an experiment compares at least two orders; got {list(orders)}")
        if not self.seeds:
            raise ValueError("an experiment needs at least one seed; got seeds=[]")
        check_number("tail", self.tail, 0, 1, low_open=True)
        self.configs()  # every other field is validated once, by TrajectoryConfig
        _no_repeats("seeds", self.seeds)
        _no_repeats("orders", self.orders)

    @classmethod
    def from_parameters(cls, params: dict) -> "OrdersExperiment":
        """The experiment a page of the ``orders`` template runs, from its registry parameters
        (the runtime ones, ``jobs``, ``profile`` and ``engine``, are not part of the science)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - fields - {"jobs", "profile", "engine"}
        if unknown:
            raise ValueError(f"not parameters of an orders page: {sorted(unknown)}; allowed: "
                             f"{sorted(fields)} and jobs, profile, engine")
        return cls(**{k: v for k, v in params.items() if k in fields})

    def config(self, seed: int, order: str) -> TrajectoryConfig:
        """One run's config. The MLP's fields go to the MLP only: every page of the template
        inherits its ``depth``, ``width`` and ``init`` defaults, which a ResNet page does not use
        and `TrajectoryConfig` would refuse away from their defaults."""
        fields = {f.name for f in dataclasses.fields(TrajectoryConfig)}
        if self.model != "mlp":
            fields -= set(MLP_FIELDS)
        shared = {k: v for k, v in dataclasses.asdict(self).items() if k in fields}
        return TrajectoryConfig(**{**shared, "seed": seed, "order": order})

    def configs(self) -> list[TrajectoryConfig]:
        return [self.config(s, o) for s in self.seeds for o in self.orders]

    def run(self, jobs: int = 1, runtime: Runtime = Runtime()) -> dict[tuple[int, str], dict]:
        results = run_many(self.configs(), runtime, jobs=jobs)
        return {(c.seed, c.order): r for c, r in zip(self.configs(), results)}


def stability_table(experiment: OrdersExperiment, results: dict) -> pd.DataFrame:
    """One row per (seed, compared order): `stability.stability_row` of forward against that
    order — fluctuation (detrended spread, total variation) over the shared tail steps, levels,
    displacement decay, and which run diverged at which step (column ``diverged``; that row's
    statistics are NaN). Column meanings and units: `stability.GLOSSARY`."""
    reference = experiment.orders[0]
    rows = []
    for seed in experiment.seeds:
        for order in experiment.orders[1:]:
            row = stability_row(results[(seed, reference)], results[(seed, order)],
                                experiment.tail)
            rows.append({"seed": seed, "order": order, **row})
    return pd.DataFrame(rows).set_index(["seed", "order"])


def _no_repeats(name: str, values: tuple) -> None:
    """A repeated seed or order would be one cached run shown twice."""
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise ValueError(f"{name} must not repeat a value; got {list(values)} ({repeated[0]!r} "
                         f"more than once)")
