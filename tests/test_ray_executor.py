"""The Ray executor against the local one: the same results, failures reported the same way.

Starts a Ray instance on this machine with 2 CPUs (run_many's own, shut down at the end); skipped
where Ray is not installed (pip install 'iteration-order[ray]'), deselected with -m 'not ray'.
"""
import time

import pytest

from iteration_order import Runtime, TrajectoryConfig, run_trajectory
from iteration_order.parallel import RunsFailed, run_many
from iteration_order.trajectory import CURVES

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'iteration-order[ray]'")
pytestmark = pytest.mark.ray

BACKWARD = TrajectoryConfig(dataset="synthetic-cos10", depth=2, width=16, lr=0.02, steps=30,
                            order="backward", record="every:3")
SAME = ("recorded_steps", *CURVES, "diverged_at", "schedule", "schedule_sha256", "engine", "data")


def runtime(folder, **kw):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False, **kw)


@pytest.fixture(autouse=True)
def _local_ray_only(monkeypatch):
    # never a cluster this machine may know of: run_many starts (and ends) its own instance
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name in ("ITERATION_ORDER_SHARDS", "ITERATION_ORDER_EXECUTOR", "ITERATION_ORDER_DEVICE"):
        monkeypatch.delenv(name, raising=False)


def test_ray_gives_the_local_executors_results_and_reports_failures(tmp_path, capsys):
    good = [BACKWARD, BACKWARD.replace(order="forward"), BACKWARD.replace(order="reset:at=12")]
    bad = BACKWARD.replace(dataset="npz:absent")
    local = run_many(good, runtime(tmp_path / "local"), jobs=2, shards=2, announce=False)
    start = time.perf_counter()
    with pytest.raises(RunsFailed) as failed:
        run_many(good + [bad], runtime(tmp_path / "ray", data_root=str(tmp_path)), jobs=2,
                 shards=2, executor="ray")
    seconds = time.perf_counter() - start
    assert not ray.is_initialized()  # the instance run_many started is shut down
    # the failing run is reported with its own error type; the others finished
    assert [c for c, _ in failed.value.failures] == [bad]
    assert "DataNotFoundError" in str(failed.value)
    log = capsys.readouterr().out
    assert "Ray: 7 task(s) on Ray (2 CPUs, 0 GPUs)" in log
    assert "[7/7, 2 failed]" in log  # the bad run's two shards
    remote = [run_trajectory(c, runtime(tmp_path / "ray")) for c in good]
    assert all(r["from_cache"] for r in remote)
    assert [{k: r[k] for k in SAME} for r in remote] == [{k: r[k] for k in SAME} for r in local]
    print(f"Ray executor: {seconds:.1f} s for 7 tasks, start and shutdown included")
