"""run_many under faults: a failing job, a worker killed by the system, a parent killed with -9.

The process tests find workers through /proc (Linux), by parent PID, and end whatever they started
by its PID.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from iteration_order import Runtime, TrajectoryConfig, run_trajectory
from iteration_order.parallel import RunsFailed, run_many
from iteration_order.trajectory import result_path

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, lr=0.01, steps=6,
                        order="backward", record="every:2")
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def runtime(folder, **kw):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False, **kw)


def _bad_and_good():
    """Two runs that work and, between them, one whose data set is missing."""
    bad = TINY.replace(dataset="npz:absent")
    return [TINY, bad, TINY.replace(seed=1)], bad


# ------------------------------------------------------------------------------------------------
# /proc helpers
# ------------------------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm)": state, ppid, ...


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == parent and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _workers(parent: int) -> list[int]:
    """The spawned multiprocessing workers of ``parent``."""
    found = []
    for pid in _children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has stopped; its reaper is elsewhere


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s for {what}")


# ------------------------------------------------------------------------------------------------
# A failing job
# ------------------------------------------------------------------------------------------------

def test_one_failing_job_with_jobs_1_lets_the_others_finish(tmp_path, capsys):
    configs, bad = _bad_and_good()
    with pytest.raises(RunsFailed) as failed:
        run_many(configs, runtime(tmp_path / "results", data_root=str(tmp_path)), jobs=1)
    assert [c for c, _ in failed.value.failures] == [bad]
    message = str(failed.value)
    assert message.startswith("1 of 3 runs failed")
    assert "dataset='npz:absent'" in message and "DataNotFoundError" in message
    log = capsys.readouterr().out
    assert "[2/3, 1 failed] backward seed 0 FAILED" in log and "[3/3, 1 failed]" in log
    for config in (configs[0], configs[2]):  # both finished and were stored
        assert run_trajectory(config, runtime(tmp_path / "results"))["from_cache"]


@linux_only
def test_a_killed_worker_loses_no_run_and_every_failure_is_reported(tmp_path, capsys):
    configs, bad = _bad_and_good()
    killed = []

    def kill_one_worker():
        # as soon as both workers exist, before either can have finished (they are still
        # importing torch): the pool breaks and every job it held must be retried
        workers = _wait_for(lambda: len(_workers(os.getpid())) >= 2 and _workers(os.getpid()),
                            120, "two workers")
        time.sleep(0.3)  # let the executor finish handing the worker its start-up data
        os.kill(workers[0], signal.SIGKILL)
        killed.append(workers[0])

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    with pytest.raises(RunsFailed) as failed:
        run_many(configs, runtime(tmp_path / "results", data_root=str(tmp_path)), jobs=2)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert [c for c, _ in failed.value.failures] == [bad]  # the lost good runs were retried
    log = capsys.readouterr().out
    assert "a worker process died" in log and "retrying the 3 unfinished run(s)" in log
    assert "[3/3, 1 failed]" in log
    for config in (configs[0], configs[2]):
        assert run_trajectory(config, runtime(tmp_path / "results"))["from_cache"]


# ------------------------------------------------------------------------------------------------
# A killed parent
# ------------------------------------------------------------------------------------------------

_PARENT = textwrap.dedent("""
    import sys
    from iteration_order import Runtime, TrajectoryConfig
    from iteration_order.parallel import run_many

    slow = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, lr=0.01, steps=5000,
                            order="backward", record="every:1")
    run_many([slow, slow.replace(seed=1)], Runtime(device="cpu", threads=1,
             results_dir=sys.argv[1], progress=False), jobs=2, announce=False)
""")


@linux_only
def test_killing_the_parent_with_sigkill_leaves_no_process_behind(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path / "results")],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    started = []
    try:
        workers = _wait_for(lambda: len(_workers(parent.pid)) >= 2 and _workers(parent.pid), 120,
                            "two workers")
        started = _children(parent.pid)  # the workers and multiprocessing's resource tracker
        # past start-up and computing (importing the package and torch takes 2-4 CPU seconds)
        _wait_for(lambda: all(_cpu_seconds(w) > 5 for w in workers), 180, "the workers to compute")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in started):
            time.sleep(0.1)
        assert not [p for p in started if _alive(p)], "processes outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in started:  # whatever the code under test failed to end, by PID
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not list((tmp_path / "results").glob("*.json"))  # nothing half-written either
