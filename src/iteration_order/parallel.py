"""Independent runs (page, seed, order) in parallel, each cached on its own; backward runs can be
cut into shards, and the work can go to local processes or to a Ray cluster.

On a small CPU the best throughput comes from one single-thread process per core: at batch 1–8
a step is too small for two threads to help (measured by ``python -m iteration_order.bench``).
Every job writes its own result file atomically, so an interrupted batch of runs resumes where it
stopped: finished jobs load from the cache, unfinished ones start again.

**Shards.** Every backward iterate θ^B_n depends only on θ_0 and batches 1..n, so a backward-type
run splits into shards of its recorded steps that share nothing (`trajectory.shard_plan` cuts
them at about equal cost; `run_shard` computes and caches one; `merge_shards` joins them into the
result the unsharded run stores, bit for bit on the CPU). With ``shards=K`` every backward-type
config that has to be computed becomes up to K jobs; forward runs stay whole. A run's shard files
are removed once its merged result is stored (they hold nothing the merged file does not).

**Executors.** ``local`` (the default): a pool of spawned processes on this machine. ``ray``: one
Ray task per job, on a Ray cluster (``ray_address`` or ``$RAY_ADDRESS``) or on a Ray instance
started here with ``jobs`` CPUs (and shut down at the end); each task asks for one GPU (or
``gpus_per_task`` of one) when the runs are on CUDA, else one CPU. Ray does the scheduling; this
module only cuts shards and merges them.

**Which device's results.** A result is stored per device (``<hash>-cpu.json``,
``<hash>-cuda.json``). ``Runtime(device="auto")`` means ``$ITERATION_ORDER_DEVICE`` when it is set
(``cpu``, ``cuda`` or ``cuda:N``), else CUDA when present. Results of a device this machine cannot
compute on (CUDA results on a CPU-only machine) are read, never computed: that is how a page at
the paper profile renders here from trajectories computed on a GPU elsewhere. A stored result
whose recorded device is not the one its file name says is refused (`DeviceMismatchError`).

Failures: a job that raises is reported and the others run on; a local worker killed by the
operating system (out of memory, say) breaks the whole process pool, so the jobs it took down are
retried once in a fresh pool (Ray retries a task whose worker died once, by ``max_retries=1``). At
the end one `RunsFailed` lists every config that failed, with its error (for a sharded run, every
failed shard). Local workers watch their parent and exit when it dies, so a killed notebook or
runner leaves no orphan computing for nobody; a Ray cluster ends a dead driver's tasks itself.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path


# DeviceMismatchError: a stored result computed on another device than the one its file name
# says (a page would show runs of another device than it claims); the cache's read refuses it.
from .cache import (DeviceMismatchError, MissingResultError, cache_mode, check_writable,
                    jsonable, read_valid, store_result)
from .cost import (ALLOW_LONG_ENV, LONG_RUN_HOURS, LongRunError, check_consent, cost_table,
                   estimate_costs, format_seconds)
from .devices import DEVICE_ENV, computable_here, device_type, requested_device
from .orders import planned_applications
from .validation import choice_or_env
from .trajectory import (Runtime, Shard, TrajectoryConfig, describe_config, merge_shards,
                         recorded_steps, result_path, run_shard, run_trajectory, shard_path,
                         shard_plan, stored_trajectory, trajectory_fingerprint)
# The one check of a stored trajectory and its decoding (null -> NaN) live in `trajectory`, which
# names files by the device of *this* machine only; reading another device's file needs both.
from .trajectory import _check_curves, _decoded  # noqa: PLC2701 - see `stored_result`

__all__ = ["run_many", "RunsFailed", "ShardsFailed", "DeviceMismatchError", "stored_result",
           "run_device", "executor_choice", "shard_count", "gpu_share", "EXECUTORS",
           "EXECUTOR_ENV", "SHARDS_ENV", "DEVICE_ENV", "RAY_GPUS_ENV", "ALLOW_LONG_ENV",
           "LONG_RUN_HOURS", "LongRunError", "RAY_CONNECT_TIMEOUT_S"]

EXECUTORS = ("local", "ray")
# Environment variables that set run_many's defaults where the caller cannot reach its arguments
# (each book page calls run_many from its own notebook; `book run` sets them for the kernels).
# They say where and how runs execute, never what is computed: no cache key contains them.
EXECUTOR_ENV = "ITERATION_ORDER_EXECUTOR"   # local | ray
SHARDS_ENV = "ITERATION_ORDER_SHARDS"       # integer >= 1
RAY_GPUS_ENV = "ITERATION_ORDER_RAY_GPUS"   # GPUs per Ray task on CUDA: a fraction, or 1, 2, ...
# How long run_many waits for a Ray cluster at $RAY_ADDRESS to answer before giving up.
RAY_CONNECT_TIMEOUT_S = 10.0

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


class ShardsFailed(RuntimeError):
    """Shards of one run failed (the run is not merged); ``errors`` maps each failed `Shard` to
    its error. The shards that finished are cached and load when the run is tried again."""

    def __init__(self, errors: dict[Shard, BaseException], shards: int):
        self.errors = errors
        super().__init__(f"{len(errors)} of its {shards} shards failed: " + "; ".join(
            f"shard {s.first}:{s.stop}: {type(e).__name__}: {e}" for s, e in errors.items()))



# ------------------------------------------------------------------------------------------------
# Settings from arguments or the environment, checked
# ------------------------------------------------------------------------------------------------

def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def executor_choice(executor: str | None = None) -> str:
    """``executor`` checked, or (None) the one ``$ITERATION_ORDER_EXECUTOR`` names, else local."""
    return choice_or_env(executor, EXECUTOR_ENV, EXECUTORS, "local", "executor", "an")


def shard_count(shards: int | None = None) -> int:
    """``shards`` checked, or (None) the integer ``$ITERATION_ORDER_SHARDS`` holds, else 1."""
    if shards is None:
        value = _env(SHARDS_ENV)
        if value is None:
            return 1
        if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
            raise ValueError(f"${SHARDS_ENV}={value!r} is not a number of shards; it must be an "
                             f"integer >= 1 (1: runs are not cut)")
        return int(value)
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ValueError(f"shards must be an integer >= 1 (1: runs are not cut); got {shards!r}")
    return shards


def gpu_share(gpus: float | None = None) -> float:
    """GPUs each Ray task asks for on CUDA: ``gpus``, or (None) ``$ITERATION_ORDER_RAY_GPUS``,
    else 1. A fraction in (0, 1) lets several runs share a GPU; above 1 it must be whole."""
    source = "gpus_per_task"
    if gpus is None:
        value = _env(RAY_GPUS_ENV)
        if value is None:
            return 1.0
        source = f"${RAY_GPUS_ENV}"
        try:
            gpus = float(value)
        except ValueError:
            gpus = value  # reported below
    if (isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus)
            or gpus <= 0 or (gpus > 1 and gpus != int(gpus))):
        raise ValueError(f"{source} must be a number in (0, 1] or a whole number of GPUs; got "
                         f"{gpus!r}")
    return float(gpus)


def run_device(runtime: Runtime) -> str:
    """The device type whose results a run reads and writes (`devices.device_type`): it does not
    require CUDA to be here, so results of a device this machine lacks can still be read."""
    return device_type(runtime.device)


def device_runtime(runtime: Runtime) -> Runtime:
    """``runtime`` with its device made explicit (auto resolved as `run_device` says), so workers
    elsewhere compute on, and name files by, the device the caller means. Every page template
    builds its runtime through this, so that ``book run --device cpu`` (``$ITERATION_ORDER_DEVICE``)
    reaches every page kind, not only those that train through `run_many`."""
    return dataclasses.replace(runtime, device=requested_device(runtime.device))


# ------------------------------------------------------------------------------------------------
# Reading stored results (of any device)
# ------------------------------------------------------------------------------------------------

def _path_on(config: TrajectoryConfig, runtime: Runtime, device_type: str) -> Path:
    """Where ``config``'s result for ``device_type`` is stored: `trajectory.result_path`'s name
    with that device's suffix (result_path itself only names files of devices present here)."""
    cpu = result_path(config, dataclasses.replace(runtime, device="cpu"))
    return cpu.with_name(cpu.name[:-len("-cpu.json")] + f"-{device_type}.json")


def stored_result(config: TrajectoryConfig, runtime: Runtime = Runtime()) -> dict | None:
    """The valid stored result of ``config`` on the device `run_device` names, or None where it
    is not stored (with one warning for an invalid file; ``cache='only'`` raises instead).

    On a device present here this is `trajectory.stored_trajectory`. For another device (CUDA
    results on a CPU-only machine) the file is checked the same way (config, code fingerprint,
    curves), and a missing or invalid file is None: it cannot be computed here. Either way a
    result whose recorded device differs from its file's raises `DeviceMismatchError`."""
    device = run_device(runtime)
    if computable_here(device):
        found = stored_trajectory(config, device_runtime(runtime))
    else:
        path = _path_on(config, runtime, device)
        found = read_valid(path, jsonable(config), trajectory_fingerprint(config),
                           lambda r: _check_curves(config, r), runtime.cache,
                           describe_config(config))
        found = None if found is None else _decoded({**found, "from_cache": True})
    if found is not None:
        recorded = str(found.get("runtime", {}).get("device", "unknown")).split(":")[0]
        if recorded != device:
            raise DeviceMismatchError(
                f"{_path_on(config, runtime, device)} is named as a {device} result but holds a "
                f"run computed on {recorded!r} ({describe_config(config)}); a page shows the runs "
                f"of one device: remove the file or store it under its own device's name")
    return found


def _stored(configs: list[TrajectoryConfig], runtime: Runtime) -> dict:
    """The valid cached results; with ``cache='only'``, one error naming every one not stored."""
    results, missing = {}, []
    for config in configs:
        try:
            found = stored_result(config, runtime)
        except MissingResultError as err:
            missing.append(str(err))
            continue
        if found is not None:
            results[config] = found
    if missing:
        raise MissingResultError(f"{len(missing)} of {len(configs)} runs have no valid stored "
                                 f"result:\n" + "\n".join(missing))
    return results


def _not_computable(pending: list, runtime: Runtime, device: str, total: int) -> Exception:
    lines = [f"  {describe_config(c)} [{_path_on(c, runtime, device).name}]" for c in pending]
    return MissingResultError(
        f"{len(pending)} of {total} runs have no valid stored {device} result in "
        f"{str(runtime.results_dir)!r}, and {device} results cannot be computed here (no CUDA): "
        f"compute them on a machine with a GPU (python -m iteration_order.book run --profile "
        f"paper there) and copy its results/*-{device}.json here. Missing:\n" + "\n".join(lines))


# ------------------------------------------------------------------------------------------------
# Jobs: whole runs and shards
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Job:
    config: TrajectoryConfig
    shard: Shard | None = None   # None: the whole run
    of: int = 1                  # shards of this run
    index: int = 0               # this shard's place among them (0-based)

    def describe(self) -> str:
        what = f"{self.config.order} seed {self.config.seed}"
        return what if self.shard is None else f"{what}, shard {self.index + 1} of {self.of}"


def _jobs(pending: list[TrajectoryConfig], shards: int) -> list[_Job]:
    jobs = []
    for config in pending:
        plan = shard_plan(config, shards) if shards > 1 else [None]
        if len(plan) == 1:
            jobs.append(_Job(config))
        else:
            jobs += [_Job(config, s, len(plan), i) for i, s in enumerate(plan)]
    return jobs


def _shard_weights(config: TrajectoryConfig, plan: list[Shard]) -> list[float]:
    """Each shard's share of the run's cost, priced as `shard_plan` prices it."""
    steps = [0] + recorded_steps(config)
    cost = [1] + [planned_applications(config.order, config.steps, [n]) + 1 for n in steps[1:]]
    total = sum(cost)
    return [sum(cost[s.first:s.stop]) / total for s in plan]


def _compute(config: TrajectoryConfig, shard: Shard | None, runtime: Runtime) -> dict:
    """One job, in whichever process or Ray worker it lands."""
    return run_trajectory(config, runtime) if shard is None else run_shard(config, runtime, shard)


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
    """One line per finished or failed job (a run or a shard of one), counting both, with the
    time left by the cost model."""

    def __init__(self, total: int, estimated: dict, jobs: int, announce: bool):
        self.total, self.estimated, self.jobs, self.announce = total, estimated, jobs, announce
        self.done = self.failed = 0
        self.start, self.left = time.perf_counter(), sum(estimated.values())

    def _line(self, job: _Job, what: str) -> None:
        self.left -= self.estimated.get(job, 0.0)
        if self.announce:
            failed = f", {self.failed} failed" if self.failed else ""
            print(f"[{self.done + self.failed}/{self.total}{failed}] {what} after "
                  f"{format_seconds(time.perf_counter() - self.start)}; about "
                  f"{format_seconds(max(self.left, 0) / self.jobs)} left", flush=True)

    def finished(self, job: _Job) -> None:
        self.done += 1
        self._line(job, f"{job.describe()} done")

    def failure(self, job: _Job, error: BaseException) -> None:
        self.failed += 1
        self._line(job, f"{job.describe()} FAILED ({describe_config(job.config)}: "
                        f"{type(error).__name__}: {error})")

    def note(self, text: str) -> None:
        if self.announce:
            print(text, flush=True)


# ------------------------------------------------------------------------------------------------
# Collecting finished jobs: shards merged as soon as a run's last one is in
# ------------------------------------------------------------------------------------------------

class _Collector:
    """Receives each job's outcome, keeps whole results, merges a run once all its shards are in
    (in this process, which stores the merged result), and gathers failures per run."""

    def __init__(self, jobs: list[_Job], runtime: Runtime, results: dict, log: _Log,
                 store_returned: bool):
        self.runtime, self.results, self.log = runtime, results, log
        self.store_returned = store_returned  # Ray: a worker's files may be on another machine
        self.parts: dict[TrajectoryConfig, dict] = {}
        self.expected = {j.config: j.of for j in jobs}
        self.errors: dict[TrajectoryConfig, dict] = {}

    def done(self, job: _Job, result: dict) -> None:
        expected = trajectory_fingerprint(job.config)
        if result.get("code_fingerprint") != expected:
            # a worker that imported other code (another checkout on a cluster node, or files
            # edited while the runs started): its numbers would be stored under this code's name
            self.failed(job, RuntimeError(
                f"computed by other code (fingerprint {result.get('code_fingerprint')!r}, here "
                f"{expected!r}): every worker must run the same commit of the package"))
            return
        self.log.finished(job)
        if job.shard is None:
            if self.store_returned:
                self._store(job.config, result)
            self.results[job.config] = result
            return
        parts = self.parts.setdefault(job.config, {})
        parts[job.shard] = result
        if len(parts) == self.expected[job.config] and job.config not in self.errors:
            self._merge(job.config, list(parts.values()))

    def failed(self, job: _Job, error: BaseException) -> None:
        self.errors.setdefault(job.config, {})[job.shard] = error
        self.log.failure(job, error)

    def _store(self, config: TrajectoryConfig, result: dict) -> None:
        """A result computed elsewhere, stored here too unless a shared folder already has it."""
        path = result_path(config, self.runtime)
        if not path.is_file():
            store_result(path, {k: v for k, v in result.items() if k != "from_cache"})

    def _merge(self, config: TrajectoryConfig, parts: list[dict]) -> None:
        try:
            merged = merge_shards(config, self.runtime, parts)
        except Exception as err:  # reported with the run's other failures
            self.errors.setdefault(config, {})[None] = err
            self.log.note(f"{config.order} seed {config.seed}: merging its shards FAILED "
                          f"({type(err).__name__}: {err})")
            return
        self.results[config] = merged
        for shard in shard_plan(config, self.expected[config]):
            # the merged result holds everything its shards held
            shard_path(config, self.runtime, shard).unlink(missing_ok=True)
        self.log.note(f"{config.order} seed {config.seed}: {len(parts)} shards merged into "
                      f"{result_path(config, self.runtime).name}")

    def failures(self, order: list[TrajectoryConfig]) -> list:
        """(config, error) per failed run, in the order of ``order``: a whole run's own error, a
        sharded run's `ShardsFailed` (or its merge's error)."""
        out = []
        for config in order:
            errors = self.errors.get(config)
            if not errors:
                continue
            if list(errors) == [None]:
                out.append((config, errors[None]))
            else:
                shards = {s: e for s, e in errors.items() if s is not None}
                out.append((config, ShardsFailed(shards, self.expected[config]) if shards
                            else errors[None]))
        return out


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------

def run_many(configs: Sequence[TrajectoryConfig], runtime: Runtime = Runtime(), jobs: int = 1,
             announce: bool = True, *, shards: int | None = None, executor: str | None = None,
             ray_address: str | None = None, gpus_per_task: float | None = None,
             allow_long: bool | None = None) -> list[dict]:
    """Run every config (loading valid cached ones), ``jobs`` at a time; results in the order of
    ``configs``.

    With ``jobs > 1`` each local worker is a fresh (spawned) process with ``runtime.threads``
    threads (0 is taken as 1 there, so workers do not fight over cores). With ``shards=K``
    (default ``$ITERATION_ORDER_SHARDS``, else 1) each backward-type run to compute is cut into up
    to K shards of about equal cost, run as separate jobs and merged into the result the
    unsharded run stores. ``executor`` (default ``$ITERATION_ORDER_EXECUTOR``, else ``local``):
    ``local`` processes, or ``ray`` tasks on the cluster at ``ray_address`` (else
    ``$RAY_ADDRESS``, else a Ray instance started here with ``jobs`` CPUs), each asking for
    ``gpus_per_task`` GPUs on CUDA (default ``$ITERATION_ORDER_RAY_GPUS``, else 1).

    With ``announce``, the cost of what remains to run is printed first (map applications per
    order, an ETA from a timed warm-up), then one line per finished or failed job with the time
    left by the same cost model; runs estimated above `LONG_RUN_HOURS` of wall time are refused
    (`LongRunError`) unless ``allow_long`` (default ``$ITERATION_ORDER_ALLOW_LONG``). A Ray
    address where nothing answers fails within `RAY_CONNECT_TIMEOUT_S`. The results folder is
    checked to be writable before anything runs. A failing job does not stop the others (``jobs=1`` included); at the end `RunsFailed`
    lists every failed config. Only results that pass the cache's check count as cached
    (`stored_result`); ``runtime.cache='only'`` raises `cache.MissingResultError` listing every
    result not stored, and so does a run whose device is not here (CUDA results on a CPU-only
    machine are read, never computed).
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1; got {jobs!r}")
    cache_mode(runtime.cache)  # a bad mode fails here, before anything is read or run
    shards, executor = shard_count(shards), executor_choice(executor)
    gpus = gpu_share(gpus_per_task)
    device = run_device(runtime)
    unique = list(dict.fromkeys(configs))
    results = _stored(unique, runtime)
    pending = [c for c in unique if c not in results]
    if pending:
        if not computable_here(device):
            raise _not_computable(pending, runtime, device, len(unique))
        check_writable(runtime.results_dir)
        here = device_runtime(runtime)
        # Each pending config was just found missing or invalid (and warned about): compute it,
        # without checking the cache (and warning) again in the job. Shards of it may be stored
        # from an interrupted run: those load under the caller's own mode.
        computing = dataclasses.replace(here, cache="refresh")
        # workers run single-threaded unless told otherwise; time the warm-up the way they will run
        worker = dataclasses.replace(computing, threads=runtime.threads or 1, progress=False)
        work = _jobs(pending, shards)
        remote = executor == "ray"
        parallel = remote or (jobs > 1 and len(work) > 1)
        timing = worker if parallel else dataclasses.replace(computing, progress=False)
        estimated = _announce(unique, pending, work, timing, jobs) if announce else {}
        _check_consent(estimated, jobs, allow_long)
        if estimated:  # consent was asked once for all: the runs do not ask again
            worker, computing = (dataclasses.replace(r, allow_long=True)
                                 for r in (worker, computing))
        log = _Log(len(work), estimated, jobs, announce)
        collector = _Collector(work, computing, results, log, store_returned=remote)
        base = worker if parallel else computing
        runtimes = {j: base if j.shard is None else
                    dataclasses.replace(base, cache=cache_mode(runtime.cache)) for j in work}
        if remote:
            _run_ray(work, runtimes, jobs, collector, log, ray_address, gpus, device)
        elif parallel:
            _run_parallel(work, runtimes, jobs, collector, log)
        else:
            _run_serial(work, runtimes, collector)
        failures = collector.failures(pending)
        if failures:
            raise RunsFailed(failures, len(unique), computing) from failures[0][1]
    return [dict(results[c]) for c in configs]


def _check_consent(estimated: dict, jobs: int, allow_long: bool | None) -> None:
    """Refuse (`LongRunError`) runs whose estimated wall time exceeds `LONG_RUN_HOURS` unless
    ``allow_long`` (`cost.check_consent`). Needs the estimate, made when run_many announces its
    runs (the default); ``announce=False`` makes none and checks nothing here (each run then
    prices itself, as a direct `run_trajectory` does)."""
    if estimated:
        check_consent(sum(estimated.values()), jobs, allow_long)


def _check_ray_address(address: str, timeout: float | None = None) -> None:
    """Fail fast, naming the address, when nothing answers at a Ray address (``host:port`` or
    ``ray://host:port``): ray.init would otherwise wait without end. 'auto' and 'local' are Ray's
    own lookups and are not probed."""
    import socket

    timeout = RAY_CONNECT_TIMEOUT_S if timeout is None else timeout
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Ray address {address!r} (ray_address or $RAY_ADDRESS) is not "
                         f"host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"no Ray cluster answers at {address!r} (ray_address or $RAY_ADDRESS) within "
            f"{timeout:g} s: {err.strerror or err}. Start the cluster (ray start --head) or "
            f"unset $RAY_ADDRESS to run on a local Ray instance") from None


def _announce(unique: list, pending: list, work: list[_Job], runtime: Runtime, jobs: int) -> dict:
    """Print what is cached and the cost of the rest; the estimated seconds per job."""
    print(f"{len(unique) - len(pending)} of {len(unique)} runs cached; to run:")
    cut = {j.config: j.of for j in work if j.shard is not None}
    if cut:
        print(f"{len(cut)} backward-type run(s) cut into shards ({len(work)} jobs in all)")
    try:
        estimates = estimate_costs(pending, runtime)
    except Exception as err:  # e.g. one config's data is missing: that job will fail and say so
        print(f"(no cost estimate: {type(err).__name__}: {err})", flush=True)
        return {}
    print(cost_table(estimates, jobs), flush=True)
    seconds = {e.config: e.seconds for e in estimates}
    out = {}
    for config in dict.fromkeys(j.config for j in work):
        mine = [j for j in work if j.config == config]
        weights = ([1.0] if mine[0].shard is None else
                   _shard_weights(config, [j.shard for j in mine]))
        out.update({j: seconds.get(config, 0.0) * w for j, w in zip(mine, weights)})
    return out


def _run_serial(work: list[_Job], runtimes: dict, collector: _Collector) -> None:
    for job in work:
        try:
            result = _compute(job.config, job.shard, runtimes[job])
        except Exception as err:  # reported at the end; the other runs go on
            collector.failed(job, err)
        else:
            collector.done(job, result)


class MissingMainGuard(RuntimeError):
    """`run_many` with local worker processes, called from a script's top level without
    ``if __name__ == "__main__":`` around it."""


def _main_guard_problem() -> str | None:
    """Why spawned workers would fail here, or None. A spawned worker re-imports the script that
    started it; a `run_many` call at the script's top level, outside the ``__main__`` guard, would
    then run again in every worker, which Python refuses (every job fails with BrokenProcessPool).
    Found from the calling frame of the script's top level and the script's own syntax tree."""
    import ast
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not os.path.isfile(path):
        return None  # a notebook, an interactive session or `python -c`: nothing is re-imported
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>"
                                     and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None

    def guard(node) -> bool:
        test = node.test if isinstance(node, ast.If) else None
        return (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Eq)
                and {ast.dump(test.left), ast.dump(test.comparators[0])}
                == {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))})

    guarded = any(guard(node) and node.lineno <= line <= node.end_lineno
                  for node in ast.walk(tree))
    if guarded:
        return None
    return (f"run_many starts worker processes, which re-import {path}; its call at line {line} "
            f"is not inside `if __name__ == \"__main__\":`, so every worker would run it again. "
            f"Put the script's top-level code under that guard (see the README, Using the "
            f"package), or pass jobs=1.")


def _run_parallel(work: list[_Job], runtimes: dict, jobs: int, collector: _Collector,
                  log: _Log) -> None:
    """The jobs in a pool of spawned workers; those a dying worker took down, once more in a
    fresh pool."""
    problem = _main_guard_problem()
    if problem:
        raise MissingMainGuard(problem)
    lost = _run_pool(work, runtimes, jobs, collector, retry=True)
    if lost:
        what = "run(s)" if all(j.shard is None for j in lost) else "job(s) (runs or shards)"
        log.note(f"a worker process died, which ends its whole pool: retrying the {len(lost)} "
                 f"unfinished {what} once in a fresh pool")
        _run_pool(lost, runtimes, jobs, collector, retry=False)


def _run_pool(work: list[_Job], runtimes: dict, jobs: int, collector: _Collector,
              retry: bool) -> list:
    """Run ``work`` in one pool; returns the jobs lost to a broken pool when ``retry``, else
    counts them as failed."""
    lost = []
    # spawn, not fork: forking after torch has started its thread pools is unsafe
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(work)),
                               mp_context=mp.get_context("spawn"), initializer=_watch_parent,
                               initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_compute, j.config, j.shard, runtimes[j]): j for j in work}
        for future in as_completed(futures):
            job, error = futures[future], future.exception()
            if error is None:
                collector.done(job, future.result())
            elif retry and isinstance(error, BrokenProcessPool):
                lost.append(job)
            else:
                collector.failed(job, error)
    except BaseException:
        # interrupted: start nothing more (jobs already running finish and are stored)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return sorted(lost, key=work.index)


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray, which is not installed: pip install "
                          "'iteration-order[ray]' (or pip install 'ray>=2.9')") from None
    return ray


def _run_ray(work: list[_Job], runtimes: dict, jobs: int, collector: _Collector, log: _Log,
             address: str | None, gpus: float, device: str) -> None:
    """One Ray task per job; Ray schedules them. A Ray instance this call started (no address
    given, none in ``$RAY_ADDRESS``, none initialised by the caller) is shut down at the end."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        address = address or _env("RAY_ADDRESS")
        if address:
            _check_ray_address(address)
            ray.init(address=address, logging_level="warning")
        else:
            # "local": a new instance of exactly `jobs` CPUs, never a cluster found on the machine
            ray.init(address="local", num_cpus=jobs, include_dashboard=False,
                     logging_level="warning")
        started = True
    try:
        where = ray.cluster_resources()
        log.note(f"Ray: {len(work)} task(s) on {'the cluster at ' + address if address else 'Ray'}"
                 f" ({where.get('CPU', 0):g} CPUs, {where.get('GPU', 0):g} GPUs)")
        if device == "cuda":
            options = {"num_gpus": gpus, "num_cpus": 1}
            # Ray makes a task's GPUs the only visible ones: the run uses the first of them
            runtimes = {j: dataclasses.replace(r, device="cuda") for j, r in runtimes.items()}
        else:
            options = {"num_cpus": 1}
        task = ray.remote(_compute).options(max_retries=1, retry_exceptions=False, **options)
        refs = {task.remote(j.config, j.shard, runtimes[j]): j for j in work}
        waiting = list(refs)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                job = refs[ready[0]]
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as err:  # the run's own error, unwrapped
                    collector.failed(job, _cause(err))
                except ray.exceptions.RayError as err:  # a lost worker or node, after its retry
                    collector.failed(job, err)
                else:
                    collector.done(job, result)
        except BaseException:
            for ref in waiting:  # interrupted: start nothing more
                ray.cancel(ref)
            raise
    finally:
        if started:
            ray.shutdown()


def _cause(err) -> BaseException:
    """The exception a Ray task raised (Ray keeps the original as ``cause``), else Ray's own."""
    return getattr(err, "cause", None) or err
