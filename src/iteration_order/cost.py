"""What a run will cost, known before it starts.

The count is exact: producing step n from base step r costs n − r map applications
(`orders.planned_applications`), plus one evaluation per recorded step. The time is an estimate:
a short timed warm-up of a few map applications and one evaluation on the real model and data,
multiplied out. Configs that differ only in order or seed share one warm-up.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .orders import Forward, InPlaceMaps, as_order, planned_applications
from .trajectory import Prepared, Runtime, TrajectoryConfig, prepare, recorded_steps

__all__ = ["CostEstimate", "estimate_costs", "cost_table", "format_seconds"]

_WARMUP, _TIMED = 2, 9


@dataclass(frozen=True)
class CostEstimate:
    config: TrajectoryConfig
    applications: int
    evaluations: int
    seconds_per_application: float
    seconds_per_evaluation: float
    engine: str

    @property
    def seconds(self) -> float:
        return (self.applications * self.seconds_per_application
                + self.evaluations * self.seconds_per_evaluation)


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _warm_up(run: Prepared) -> tuple[float, float]:
    """Seconds per map application (on the engine the run will use) and per evaluation."""
    maps = run.maps
    if run.engine == "batched":
        width = min(run.group_size, 8, len(maps))
        group = list(range(1, width + 1))
        maps.compose_group(0, group, run.state0)
        per_application = _timed(lambda: maps.compose_group(0, group, run.state0),
                                 run.device) / sum(group)
    elif not isinstance(maps, InPlaceMaps):  # pure maps only (App. D's regularised, average)
        state = run.state0
        for i in range(1, min(_WARMUP, len(maps)) + 1):
            state = maps[i - 1](state)
        per_application = float(np.median([
            _timed(lambda i=i: maps[i - 1](run.state0), run.device)
            for i in range(1, min(_TIMED, len(maps)) + 1)]))
    else:
        workspace = maps.load(run.state0)
        for i in range(1, min(_WARMUP, len(maps)) + 1):
            maps.apply_(i, workspace)
        # each application timed on its own; the median ignores a few disturbed by other work
        per_application = float(np.median([
            _timed(lambda i=i: maps.apply_(i, workspace), run.device)
            for i in range(1, min(_TIMED, len(maps)) + 1)]))
    run.evaluate(run.state0)
    per_evaluation = float(np.median([_timed(lambda: run.evaluate(run.state0), run.device)
                                      for _ in range(3)]))
    return per_application, per_evaluation


def _shape_key(config: TrajectoryConfig) -> tuple:
    """Configs with equal keys cost the same per map application."""
    return (config.dataset, config.fake_data, config.model, config.depth, config.width,
            config.optimizer, config.batch_size, config.eval_train_size, config.eval_test_size,
            config.update, config.micro_batches)


def estimate_costs(configs: Iterable[TrajectoryConfig], runtime: Runtime = Runtime()
                   ) -> list[CostEstimate]:
    """Exact application counts and warm-up-timed seconds for each config, in order."""
    timings: dict[tuple, tuple[str, float, float]] = {}
    estimates = []
    for config in configs:
        # the engine, hence the time per application, differs between forward and the others
        key = (*_shape_key(config), as_order(config.order) == Forward())
        if key not in timings:
            run = prepare(config, runtime)
            timings[key] = (run.engine, *_warm_up(run))
        engine, per_app, per_eval = timings[key]
        steps = recorded_steps(config)
        estimates.append(CostEstimate(config, planned_applications(config.order, config.steps,
                                                                   steps),
                                      len(steps) + 1, per_app, per_eval, engine))
    return estimates


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def cost_table(estimates: list[CostEstimate], jobs: int = 1) -> str:
    """A per-order summary: runs, map applications, evaluations and estimated time."""
    rows: dict[str, list] = {}
    for e in estimates:
        row = rows.setdefault(e.config.order, [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += e.applications
        row[2] += e.evaluations
        row[3] += e.seconds
    lines = [f"{'order':<22}{'runs':>6}{'map applications':>18}{'evaluations':>13}{'est. time':>11}"]
    for order, (runs, apps, evals, seconds) in rows.items():
        lines.append(f"{order:<22}{runs:>6}{apps:>18,}{evals:>13,}{format_seconds(seconds):>11}")
    total = sum(e.seconds for e in estimates)
    lines.append(f"estimated wall time with {jobs} parallel job(s): "
                 f"{format_seconds(total / max(1, min(jobs, len(estimates))))}")
    return "\n".join(lines)
