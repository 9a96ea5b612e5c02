"""Independent runs (page, seed, order) in parallel processes, each cached on its own.

On a small CPU the best throughput comes from one single-thread process per core: at batch 1–8
a step is too small for two threads to help (measured by ``python -m iteration_order.bench``).
Every job writes its own result file atomically, so an interrupted batch of runs resumes where it
stopped: finished jobs load from the cache, unfinished ones start again.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from .cost import cost_table, estimate_costs, format_seconds
from .trajectory import Runtime, TrajectoryConfig, result_path, run_trajectory

__all__ = ["run_many"]


def run_many(configs: Sequence[TrajectoryConfig], runtime: Runtime = Runtime(), jobs: int = 1,
             announce: bool = True) -> list[dict]:
    """Run every config (loading cached ones), ``jobs`` processes at a time; results in order.

    With ``jobs > 1`` each worker is a fresh (spawned) process with ``runtime.threads`` threads
    (0 is taken as 1 there, so workers do not fight over cores). With ``announce``, the cost of
    what remains to run is printed first (map applications per order, an ETA from a timed
    warm-up), then one line per finished run with the time left by the same cost model.
    A failing job does not stop the others; the first error is raised at the end.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1; got {jobs!r}")
    unique = list(dict.fromkeys(configs))
    pending = [c for c in unique if not result_path(c, runtime).is_file()]
    parallel = jobs > 1 and len(pending) > 1
    # workers run single-threaded unless told otherwise; time the warm-up the way they will run
    worker = dataclasses.replace(runtime, threads=runtime.threads or 1, progress=False)
    estimated = {}
    if pending and announce:
        estimates = estimate_costs(pending, worker if parallel else
                                   dataclasses.replace(runtime, progress=False))
        estimated = {e.config: e.seconds for e in estimates}
        print(f"{len(unique) - len(pending)} of {len(unique)} runs cached; to run:")
        print(cost_table(estimates, jobs), flush=True)
    start, left = time.perf_counter(), sum(estimated.values())

    def report(config: TrajectoryConfig, done: int) -> None:
        nonlocal left
        left -= estimated.get(config, 0.0)
        if announce:
            print(f"[{done}/{len(pending)}] {config.order} seed {config.seed} done after "
                  f"{format_seconds(time.perf_counter() - start)}; about "
                  f"{format_seconds(max(left, 0) / jobs)} left", flush=True)

    if parallel:
        errors = []
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_trajectory, c, worker): c for c in pending}
            for done, future in enumerate(as_completed(futures), start=1):
                if future.exception() is not None:
                    errors.append(future.exception())
                report(futures[future], done)
        if errors:
            raise errors[0]
    else:
        for done, config in enumerate(pending, start=1):
            run_trajectory(config, runtime)
            report(config, done)
    return [run_trajectory(c, runtime) for c in configs]
