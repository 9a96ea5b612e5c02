"""Independent runs (page, seed, order) in parallel processes, each cached on its own.

On a small CPU the best throughput comes from one single-thread process per core: at batch 1–8
a step is too small for two threads to help (measured by ``python -m iteration_order.bench``).
Every job writes its own result file atomically, so an interrupted batch of runs resumes where it
stopped: finished jobs load from the cache, unfinished ones start again.

Failures: a job that raises is reported and the others run on; a worker killed by the operating
system (out of memory, say) breaks the whole process pool, so the jobs it took down are retried
once in a fresh pool. At the end one `RunsFailed` lists every config that failed, with its error.
Workers watch their parent and exit when it dies, so a killed notebook or runner leaves no orphan
computing for nobody.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from .cache import MissingResultError, cache_mode, check_writable
from .cost import cost_table, estimate_costs, format_seconds
from .trajectory import (Runtime, TrajectoryConfig, describe_config, result_path, run_trajectory,
                         stored_trajectory)

__all__ = ["run_many", "RunsFailed"]

# How often a worker checks that its parent is alive: the longest an orphan computes on.
_PARENT_CHECK_SECONDS = 0.5


class RunsFailed(RuntimeError):
    """Some runs of a `run_many` failed; ``failures`` holds (config, error) for each of them."""

    def __init__(self, failures: list[tuple[TrajectoryConfig, BaseException]], total: int,
                 runtime: Runtime):
        self.failures = failures
        lines = [f"  {describe_config(c)} [{result_path(c, runtime).name}]: "
                 f"{type(e).__name__}: {e}" for c, e in failures]
        super().__init__(f"{len(failures)} of {total} runs failed (the others are stored in "
                         f"{str(runtime.results_dir)!r}):\n" + "\n".join(lines))


# ------------------------------------------------------------------------------------------------
# Workers that end with their parent
# ------------------------------------------------------------------------------------------------

def _watch_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the process that started the pool is gone.

    A thread polls ``os.getppid()``, which changes when the parent dies and the worker is adopted.
    Chosen over Linux's ``prctl(PR_SET_PDEATHSIG)``, which is Linux-only and fires when the
    *thread* that spawned the worker exits, not the process (the executor may spawn from a
    helper thread). The parent may already be gone while the worker was still importing torch,
    hence the first check here."""
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True,
                     name="exit-when-parent-dies").start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_SECONDS)
    # Nobody is left to collect the result: stop now. A result file is only ever replaced
    # atomically, so no half-written result can remain.
    os._exit(1)


# ------------------------------------------------------------------------------------------------
# The progress log
# ------------------------------------------------------------------------------------------------

class _Log:
    """One line per finished or failed run, counting both, with the time left by the cost model."""

    def __init__(self, total: int, estimated: dict, jobs: int, announce: bool):
        self.total, self.estimated, self.jobs, self.announce = total, estimated, jobs, announce
        self.done = self.failed = 0
        self.start, self.left = time.perf_counter(), sum(estimated.values())

    def _line(self, config: TrajectoryConfig, what: str) -> None:
        self.left -= self.estimated.get(config, 0.0)
        if self.announce:
            failed = f", {self.failed} failed" if self.failed else ""
            print(f"[{self.done + self.failed}/{self.total}{failed}] {what} after "
                  f"{format_seconds(time.perf_counter() - self.start)}; about "
                  f"{format_seconds(max(self.left, 0) / self.jobs)} left", flush=True)

    def finished(self, config: TrajectoryConfig) -> None:
        self.done += 1
        self._line(config, f"{config.order} seed {config.seed} done")

    def failure(self, config: TrajectoryConfig, error: BaseException) -> None:
        self.failed += 1
        self._line(config, f"{config.order} seed {config.seed} FAILED "
                           f"({describe_config(config)}: {type(error).__name__}: {error})")

    def note(self, text: str) -> None:
        if self.announce:
            print(text, flush=True)


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------

def run_many(configs: Sequence[TrajectoryConfig], runtime: Runtime = Runtime(), jobs: int = 1,
             announce: bool = True) -> list[dict]:
    """Run every config (loading valid cached ones), ``jobs`` processes at a time; results in
    the order of ``configs``.

    With ``jobs > 1`` each worker is a fresh (spawned) process with ``runtime.threads`` threads
    (0 is taken as 1 there, so workers do not fight over cores). With ``announce``, the cost of
    what remains to run is printed first (map applications per order, an ETA from a timed
    warm-up), then one line per finished or failed run with the time left by the same cost model.
    The results folder is checked to be writable before anything runs. A failing job does not
    stop the others (``jobs=1`` included); at the end `RunsFailed` lists every failed config.
    Only results that pass the cache's check count as cached (`trajectory.stored_trajectory`);
    ``runtime.cache='only'`` raises `cache.MissingResultError` listing every result not stored.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1; got {jobs!r}")
    cache_mode(runtime.cache)  # a bad mode fails here, before anything is read or run
    unique = list(dict.fromkeys(configs))
    results = _stored(unique, runtime)
    pending = [c for c in unique if c not in results]
    if pending:
        check_writable(runtime.results_dir)
        # Each pending config was just found missing or invalid (and warned about): compute it,
        # without checking the cache (and warning) again in the job.
        computing = dataclasses.replace(runtime, cache="refresh")
        # workers run single-threaded unless told otherwise; time the warm-up the way they will run
        worker = dataclasses.replace(computing, threads=runtime.threads or 1, progress=False)
        parallel = jobs > 1 and len(pending) > 1
        estimated = _announce(unique, pending, worker if parallel else
                              dataclasses.replace(computing, progress=False), jobs) \
            if announce else {}
        log = _Log(len(pending), estimated, jobs, announce)
        failures = (_run_parallel(pending, worker, jobs, results, log) if parallel else
                    _run_serial(pending, computing, results, log))
        if failures:
            raise RunsFailed(failures, len(unique), runtime) from failures[0][1]
    return [dict(results[c]) for c in configs]


def _stored(configs: list[TrajectoryConfig], runtime: Runtime) -> dict:
    """The valid cached results; with ``cache='only'``, one error naming every one not stored."""
    results, missing = {}, []
    for config in configs:
        try:
            found = stored_trajectory(config, runtime)
        except MissingResultError as err:
            missing.append(str(err))
            continue
        if found is not None:
            results[config] = found
    if missing:
        raise MissingResultError(f"{len(missing)} of {len(configs)} runs have no valid stored "
                                 f"result:\n" + "\n".join(missing))
    return results


def _announce(unique: list, pending: list, runtime: Runtime, jobs: int) -> dict:
    """Print what is cached and the cost of the rest; the estimated seconds per config."""
    print(f"{len(unique) - len(pending)} of {len(unique)} runs cached; to run:")
    try:
        estimates = estimate_costs(pending, runtime)
    except Exception as err:  # e.g. one config's data is missing: that job will fail and say so
        print(f"(no cost estimate: {type(err).__name__}: {err})", flush=True)
        return {}
    print(cost_table(estimates, jobs), flush=True)
    return {e.config: e.seconds for e in estimates}


def _run_serial(pending: list, runtime: Runtime, results: dict, log: _Log) -> list:
    failures = []
    for config in pending:
        try:
            results[config] = run_trajectory(config, runtime)
        except Exception as err:  # reported at the end; the other runs go on
            failures.append((config, err))
            log.failure(config, err)
        else:
            log.finished(config)
    return failures


def _run_parallel(pending: list, worker: Runtime, jobs: int, results: dict, log: _Log) -> list:
    """The jobs in a pool of spawned workers; those a dying worker took down, once more in a
    fresh pool."""
    failures: list = []
    lost = _run_pool(pending, worker, jobs, results, failures, log, retry=True)
    if lost:
        log.note(f"a worker process died, which ends its whole pool: retrying the {len(lost)} "
                 f"unfinished run(s) once in a fresh pool")
        _run_pool(lost, worker, jobs, results, failures, log, retry=False)
    return failures


def _run_pool(configs: list, worker: Runtime, jobs: int, results: dict, failures: list, log: _Log,
              retry: bool) -> list:
    """Run ``configs`` in one pool; returns those lost to a broken pool when ``retry``, else
    counts them as failed."""
    lost = []
    # spawn, not fork: forking after torch has started its thread pools is unsafe
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(configs)),
                               mp_context=mp.get_context("spawn"), initializer=_watch_parent,
                               initargs=(os.getpid(),))
    try:
        futures = {pool.submit(run_trajectory, c, worker): c for c in configs}
        for future in as_completed(futures):
            config, error = futures[future], future.exception()
            if error is None:
                results[config] = future.result()
                log.finished(config)
            elif retry and isinstance(error, BrokenProcessPool):
                lost.append(config)
            else:
                failures.append((config, error))
                log.failure(config, error)
    except BaseException:
        # interrupted: start nothing more (jobs already running finish and are stored)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return sorted(lost, key=configs.index)
