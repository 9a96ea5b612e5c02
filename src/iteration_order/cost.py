"""What a run will cost, known before it starts.

The counts are exact: producing step n from base step r costs n − r map applications
(`orders.planned_applications`), plus one evaluation per recorded step. The time is an estimate
from a short timed warm-up on the real model and data, multiplied out per engine:

* sequential: applications × the median time of one in-place map application;
* batched: the engine advances a group of trajectories one map at a time, and a group step's price
  depends on how many trajectories are active. A dry run of the order engine over stand-in maps
  gives, for the run's exact plan, how many group steps run at each width w; group steps are timed
  at a few widths up to the widest the run uses (interpolated between them), and trajectories that
  run alone are priced at the sequential rate. (An earlier version timed the batched engine at
  width 8 and divided by the applications, which overestimated a width-256 GPU run ten times.)
* evaluations: the time per example of one evaluation chunk, times the examples evaluated.

Configs that differ only in order, seed or learning rate share one prepared model and one warm-up
per engine. With ``stand_in=True`` a data set missing here is replaced by fake data of the same
shapes (the time per step and per example does not depend on pixel values) and evaluations are
priced at the official set sizes; the estimates say so (``stand_in``).
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data import TORCHVISION, DataNotFoundError
from .evaluation import Evaluator
from .orders import Forward, InPlaceMaps, as_order, iterates, planned_applications
from .trajectory import (Prepared, Runtime, TrajectoryConfig, choose_engine, prepare,
                         recorded_steps)

__all__ = ["CostEstimate", "estimate_costs", "cost_table", "format_seconds", "group_widths"]

_WARMUP = 2            # untimed applications first (allocator, autograd caches)
_TIMED = (3, 9)        # at least / at most this many timed repetitions ...
_TIMING_BUDGET = 3.0   # ... stopping after the minimum once this many seconds are spent
_CPU_EVAL_EXAMPLES = 256  # examples timed for the per-example evaluation cost on a CPU

ALLOW_LONG_ENV = "ITERATION_ORDER_ALLOW_LONG"  # 1: consent to runs estimated over LONG_RUN_HOURS
# A run (or run_many's runs together) estimated at more than this many hours of wall time is
# refused unless allowed (allow_long=True, Runtime(allow_long=True), $ITERATION_ORDER_ALLOW_LONG=1
# or `book run --allow-long`): a mistyped step count must not start days of computing unasked.
LONG_RUN_HOURS = 24.0


class LongRunError(RuntimeError):
    """The runs to compute are estimated above `LONG_RUN_HOURS` and no consent was given."""


def check_consent(seconds: float, jobs: int, allow_long: bool | None) -> None:
    """Refuse (`LongRunError`) work estimated at ``seconds`` of compute, run ``jobs`` at a time,
    above `LONG_RUN_HOURS` of wall time unless ``allow_long`` (None: ``$ITERATION_ORDER_ALLOW_LONG``
    is 1, true or yes)."""
    hours = seconds / max(jobs, 1) / 3600
    if hours <= LONG_RUN_HOURS:
        return
    if allow_long is None:
        allow_long = os.environ.get(ALLOW_LONG_ENV, "").strip().lower() in ("1", "true", "yes")
    if not allow_long:
        raise LongRunError(
            f"the runs to compute are estimated at {format_seconds(hours * 3600)} of wall time "
            f"with {jobs} job(s), above the {LONG_RUN_HOURS:g} h a run may take without consent; "
            f"if that is meant, pass allow_long=True (Runtime(allow_long=True) for one run), set "
            f"${ALLOW_LONG_ENV}=1 or run `python -m iteration_order.book run --allow-long ...`; "
            f"otherwise check the step counts")


@dataclass(frozen=True)
class CostEstimate:
    config: TrajectoryConfig
    applications: int
    evaluations: int
    map_seconds: float            # all map applications of the run
    seconds_per_evaluation: float
    engine: str
    group_size: int = 0
    stand_in: bool = False        # timed on fake data of the real shapes (the data is not here)

    @property
    def seconds_per_application(self) -> float:
        """The run's average; on the batched engine it depends on the group widths."""
        return self.map_seconds / self.applications if self.applications else 0.0

    @property
    def seconds(self) -> float:
        return self.map_seconds + self.evaluations * self.seconds_per_evaluation


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device: torch.device) -> float:
    """Median seconds of ``fn()``: at least 3 repetitions, at most 9, stopping after the minimum
    once the budget is spent (a ResNet step on a CPU takes seconds). The median ignores the few
    repetitions disturbed by other work on a shared machine."""
    times: list[float] = []
    while len(times) < _TIMED[1] and (len(times) < _TIMED[0] or sum(times) < _TIMING_BUDGET):
        _sync(device)
        start = time.perf_counter()
        fn(len(times))
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _sequential_seconds(run: Prepared) -> float:
    """Seconds per map application on the sequential engine (in place, or pure maps)."""
    maps, n = run.maps, len(run.maps)
    if not isinstance(maps, InPlaceMaps):  # pure maps only (App. D's regularised, average)
        state = run.state0
        for i in range(1, min(_WARMUP, n) + 1):
            state = maps[i - 1](state)
        return _median_time(lambda k: maps[k % n](run.state0), run.device)
    workspace = maps.load(run.state0)
    for i in range(1, min(_WARMUP, n) + 1):
        maps.apply_(i, workspace)
    return _median_time(lambda k: maps.apply_(k % n + 1, workspace), run.device)


def _group_step_seconds(run: Prepared, width: int) -> float:
    """Seconds of one group step of the batched engine with ``width`` active trajectories."""
    maps, n = run.maps, len(run.maps)
    maps.model.train()
    stacked = maps.stack(run.state0, width)
    maps.group_step(1, stacked, width)  # warm-up
    return _median_time(lambda k: maps.group_step(k % n + 1, stacked, width), run.device)


class _DryRun(Sequence):
    """Stand-in maps for the order engine: they apply nothing and record, for the plan the engine
    forms, the group steps at each width and the applications made outside groups."""

    def __init__(self, length: int):
        self.length = length
        self.widths: Counter = Counter()
        self.alone = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        return self._apply

    def _apply(self, state):
        self.alone += 1
        return state

    def compose_group(self, r: int, ns: list[int], x_r):
        ends = sorted(ns, reverse=True) + [r]
        for k in range(len(ns)):  # between the k-th and (k+1)-th longest, k+1 are active
            self.widths[k + 1] += ends[k] - ends[k + 1]
        return [x_r] * len(ns)


def group_widths(order, steps: int, at: Iterable[int] | None, group_size: int
                 ) -> tuple[Counter, int]:
    """For a run of the batched engine: {width: group steps at that width}, and the map
    applications made outside groups (trajectories that run alone, e.g. forward steps)."""
    dry = _DryRun(steps)
    for _ in iterates(dry, object(), order, at=at, group_size=group_size):
        pass
    return dry.widths, dry.alone


def _width_grid(widest: int) -> list[int]:
    return sorted({1, max(1, widest // 4), max(1, widest // 2), widest})


def _evaluation_seconds(run: Prepared, examples: int) -> float:
    """Seconds of one evaluation of ``examples`` examples: the time per example of one chunk
    (a capped subset on a CPU, where the time per example does not depend on the chunk)."""
    evaluator = run.evaluate
    cap = evaluator.chunk if run.device.type == "cuda" else min(evaluator.chunk,
                                                                _CPU_EVAL_EXAMPLES)
    if evaluator.examples > cap:
        train = max(1, min(len(evaluator.train_rows), cap // 2))
        evaluator = Evaluator(run.model, run.data, run.config.seed, train,
                              max(1, min(len(evaluator.test_rows), cap - train)))
    evaluator(run.state0)  # warm-up
    per_example = _median_time(lambda k: evaluator(run.state0), run.device) / evaluator.examples
    return per_example * examples


def _shape_key(config: TrajectoryConfig) -> tuple:
    """Configs with equal keys cost the same per map application and per evaluation."""
    return (config.dataset, config.fake_data, config.model, config.depth, config.width,
            config.optimizer, config.batch_size, config.eval_train_size, config.eval_test_size,
            config.update, config.micro_batches)


def _evaluated_examples(config: TrajectoryConfig, run: Prepared, stand_in: bool) -> int:
    """Examples per evaluation in the real run (the official set sizes for stand-in data)."""
    if not stand_in:
        return run.evaluate.examples
    train, test = TORCHVISION[config.dataset][1]
    return ((min(config.eval_train_size, train) or train)
            + (min(config.eval_test_size, test) or test))


def _prepare(config: TrajectoryConfig, runtime: Runtime, stand_in: bool) -> tuple[Prepared, bool]:
    try:
        return prepare(config, runtime), False
    except DataNotFoundError:
        if not (stand_in and config.dataset in TORCHVISION):
            raise
        return prepare(config.replace(fake_data=True), runtime), True


def estimate_costs(configs: Iterable[TrajectoryConfig], runtime: Runtime = Runtime(),
                   stand_in: bool = False, evaluations: bool = True) -> list[CostEstimate]:
    """Exact counts and warm-up-timed seconds for each config, in order, on the engine and
    group width each run will use. ``stand_in``: time a missing torchvision data set on fake data
    of its shapes (see the module docstring) instead of raising `DataNotFoundError`.
    ``evaluations=False`` prices the map applications only (``seconds_per_evaluation`` = 0), for
    callers that time training alone (the benchmark)."""
    prepared: dict[tuple, tuple[Prepared, bool]] = {}
    timings: dict[tuple, float] = {}
    estimates = []
    for config in configs:
        key = _shape_key(config)
        if key not in prepared:
            prepared[key] = _prepare(config, runtime, stand_in)
        run, fake = prepared[key]
        engine, group_size = choose_engine(runtime, run.device, config, run.maps, run.model)
        steps = recorded_steps(config)
        applications = planned_applications(config.order, config.steps, steps)

        def timed(what, measure):
            if (key, what) not in timings:
                timings[(key, what)] = measure()
            return timings[(key, what)]

        sequential = lambda: timed("sequential", lambda: _sequential_seconds(run))  # noqa: E731
        if engine == "sequential" or as_order(config.order) == Forward():
            map_seconds = applications * sequential()
        else:
            widths, alone = group_widths(config.order, config.steps, steps, group_size)
            map_seconds = alone * sequential() if alone else 0.0
            if widths:
                grid = _width_grid(max(widths))
                prices = [timed(("group", w), lambda w=w: _group_step_seconds(run, w))
                          for w in grid]
                map_seconds += sum(count * float(np.interp(w, grid, prices))
                                   for w, count in widths.items())
        per_evaluation = timed("evaluation", lambda: _evaluation_seconds(
            run, _evaluated_examples(config, run, fake))) if evaluations else 0.0
        estimates.append(CostEstimate(config, applications, len(steps) + 1, map_seconds,
                                      per_evaluation, engine, group_size, fake))
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
