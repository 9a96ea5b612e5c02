"""run_many with shards (bitwise the unsharded runs on the CPU, a failing shard reported, resumed),
its settings from the environment, and results read for a device this machine lacks."""
import json
import shutil

import pytest
import torch

from iteration_order import Runtime, TrajectoryConfig, run_trajectory
from iteration_order.cache import MissingResultError, store_result
from iteration_order.parallel import (DEVICE_ENV, EXECUTOR_ENV, RAY_GPUS_ENV, SHARDS_ENV,
                                      DeviceMismatchError, RunsFailed, ShardsFailed,
                                      executor_choice, gpu_share, run_device, run_many,
                                      shard_count, stored_result)
from iteration_order.trajectory import CURVES, result_path, shard_path, shard_plan

BACKWARD = TrajectoryConfig(dataset="synthetic-cos10", depth=2, width=16, lr=0.02, steps=30,
                            order="backward", record="every:3")
CONFIGS = [BACKWARD, BACKWARD.replace(order="forward"), BACKWARD.replace(order="reset:at=12"),
           BACKWARD.replace(order="switch:10", seed=1)]
SAME = ("recorded_steps", *CURVES, "diverged_at", "schedule", "schedule_sha256", "engine", "data")


def runtime(folder, **kw):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False, **kw)


def same(result):
    return {k: result[k] for k in SAME}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in (SHARDS_ENV, EXECUTOR_ENV, DEVICE_ENV, RAY_GPUS_ENV, "ITERATION_ORDER_CACHE"):
        monkeypatch.delenv(name, raising=False)


def test_sharded_runs_are_the_unsharded_ones_bit_for_bit(tmp_path, capsys):
    whole = run_many(CONFIGS, runtime(tmp_path / "whole"), jobs=1, announce=False)
    sharded = run_many(CONFIGS + [CONFIGS[0]], runtime(tmp_path / "sharded"), jobs=2, shards=3)
    assert [same(r) for r in sharded] == [same(r) for r in whole + [whole[0]]]
    log = capsys.readouterr().out
    # three backward-type runs in 3 shards each, the forward run whole: 10 jobs
    assert "3 backward-type run(s) cut into shards (10 jobs in all)" in log
    assert "backward seed 0, shard 3 of 3 done" in log and "[10/10]" in log
    assert "forward seed 0 done" in log and "forward seed 0, shard" not in log
    assert "backward seed 0: 3 shards merged into" in log
    folder = tmp_path / "sharded"
    assert not list(folder.glob("*.shard-*.json"))  # removed once merged
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(
        result_path(c, runtime(folder)).name for c in CONFIGS)
    # merged results are ordinary cache entries
    assert all(run_trajectory(c, runtime(folder))["from_cache"] for c in CONFIGS)
    assert [r["runtime"].get("shards") for r in sharded[:4]] == [3, None, 3, 3]


def test_a_failing_shard_is_reported_the_others_finish_and_a_rerun_resumes(tmp_path, capsys):
    folder = tmp_path / "results"
    configs = [BACKWARD, BACKWARD.replace(order="forward"), BACKWARD.replace(seed=1)]
    broken = shard_plan(BACKWARD, 3)[1]
    # a folder where the shard's result file belongs: its result cannot be stored
    shard_path(BACKWARD, runtime(folder), broken).mkdir(parents=True)
    with pytest.raises(RunsFailed) as failed:
        run_many(configs, runtime(folder), jobs=2, shards=3)
    assert [c for c, _ in failed.value.failures] == [BACKWARD]
    error = failed.value.failures[0][1]
    assert isinstance(error, ShardsFailed) and list(error.errors) == [broken]
    assert str(failed.value).startswith("1 of 3 runs failed")
    assert f"1 of its 3 shards failed: shard {broken.first}:{broken.stop}: " in str(failed.value)
    log = capsys.readouterr().out
    assert "backward seed 0, shard 2 of 3 FAILED" in log and "[7/7, 1 failed]" in log
    # the other runs are merged and stored; the failed run's other shards are cached
    for config in configs[1:]:
        assert run_trajectory(config, runtime(folder))["from_cache"]
    assert not result_path(BACKWARD, runtime(folder)).exists()
    done = [s for s in shard_plan(BACKWARD, 3) if s != broken]
    assert all(shard_path(BACKWARD, runtime(folder), s).is_file() for s in done)

    shard_path(BACKWARD, runtime(folder), broken).rmdir()
    again = run_many(configs, runtime(folder), jobs=1, shards=3)
    assert "2 of 3 runs cached" in capsys.readouterr().out
    whole = run_trajectory(BACKWARD, runtime(tmp_path / "whole"))
    assert same(again[0]) == same(whole)


def test_settings_come_from_the_environment_and_bad_values_are_named(monkeypatch, tmp_path,
                                                                     capsys):
    assert (shard_count(), executor_choice(), gpu_share()) == (1, "local", 1.0)
    monkeypatch.setenv(SHARDS_ENV, "2")
    monkeypatch.setenv(EXECUTOR_ENV, "local")
    monkeypatch.setenv(RAY_GPUS_ENV, "0.25")
    assert (shard_count(), executor_choice(), gpu_share()) == (2, "local", 0.25)
    run_many([BACKWARD], runtime(tmp_path), jobs=1)
    assert "1 backward-type run(s) cut into shards (2 jobs in all)" in capsys.readouterr().out
    for name, value, message in [
            (SHARDS_ENV, "two", r"\$ITERATION_ORDER_SHARDS='two' is not a number of shards; it "
                                r"must be an integer >= 1"),
            (SHARDS_ENV, "0", r"\$ITERATION_ORDER_SHARDS='0' is not a number of shards"),
            (EXECUTOR_ENV, "dask", r"\$ITERATION_ORDER_EXECUTOR='dask' is not an executor; "
                                   r"allowed: local, ray"),
            (RAY_GPUS_ENV, "1.5", r"\$ITERATION_ORDER_RAY_GPUS must be a number in \(0, 1\] or a "
                                  r"whole number of GPUs; got 1.5"),
            (DEVICE_ENV, "gpu", r"\$ITERATION_ORDER_DEVICE='gpu' is not a device; allowed: cpu, "
                                r"cuda, cuda:N")]:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ValueError, match=message):
                # nothing is read or run before the settings are checked
                run_many([BACKWARD], Runtime(threads=1, results_dir=tmp_path / "never",
                                             progress=False))
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="shards must be an integer >= 1 .*; got 0"):
        run_many([BACKWARD], runtime(tmp_path), shards=0)
    with pytest.raises(ValueError, match="unknown executor 'threads'; allowed: local, ray"):
        run_many([BACKWARD], runtime(tmp_path), executor="threads")
    with pytest.raises(ValueError, match="gpus_per_task must be a number in"):
        run_many([BACKWARD], runtime(tmp_path), gpus_per_task=0)


# ------------------------------------------------------------------------------------------------
# Results of a device that is not here
# ------------------------------------------------------------------------------------------------

def fake_cuda_results(source, target, device="cuda:0"):
    """CPU results copied under the CUDA name, their recorded device rewritten (only ever in a
    temporary folder of a test: never commit fabricated GPU results)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*-cpu.json"):
        result = json.loads(path.read_text())
        result["runtime"]["device"] = device
        # stored with the digest of its new content, as a GPU machine would have written it
        store_result(target / path.name.replace("-cpu.json", "-cuda.json"), result)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_results_are_read_on_a_cpu_only_machine_never_computed(tmp_path, monkeypatch,
                                                                    no_cuda):
    configs = CONFIGS[:2]
    computed = run_many(configs, runtime(tmp_path / "cpu"), announce=False)
    fake_cuda_results(tmp_path / "cpu", tmp_path / "cuda")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    auto = Runtime(threads=1, results_dir=tmp_path / "cuda", progress=False)
    assert run_device(auto) == "cuda"
    loaded = run_many(configs, auto, announce=False)
    assert [same(r) for r in loaded] == [same(r) for r in computed]
    assert all(r["from_cache"] and r["runtime"]["device"] == "cuda:0" for r in loaded)
    # an explicit device names the results' device too
    explicit = Runtime(device="cuda", threads=1, results_dir=tmp_path / "cuda", progress=False)
    assert same(stored_result(configs[0], explicit)) == same(computed[0])

    missing = BACKWARD.replace(seed=7)
    with pytest.raises(MissingResultError, match=r"1 of 3 runs have no valid stored cuda result "
                                                 r".*cannot be computed here \(no CUDA\)"):
        run_many(configs + [missing], auto, announce=False)
    assert not list((tmp_path / "cuda").glob("*-cpu.json"))  # nothing was computed


def test_a_result_stored_under_another_devices_name_is_refused(tmp_path, monkeypatch, no_cuda):
    run_many(CONFIGS[:2], runtime(tmp_path / "cpu"), announce=False)
    fake_cuda_results(tmp_path / "cpu", tmp_path / "cuda")
    # one file renamed to cuda but still holding a CPU run: a page would mix devices
    name = result_path(CONFIGS[1], runtime(tmp_path)).name.replace("-cpu", "-cuda")
    shutil.copy(tmp_path / "cpu" / name.replace("-cuda", "-cpu"), tmp_path / "cuda" / name)
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    auto = Runtime(threads=1, results_dir=tmp_path / "cuda", progress=False)
    with pytest.raises(DeviceMismatchError, match=f"{name} is named as a cuda result but holds a "
                                                  f"run computed on 'cpu'"):
        run_many(CONFIGS[:2], auto, announce=False)


# ------------------------------------------------------------------------------------------------
# What the Ray executor asks of a cluster (a stand-in for Ray: no GPU is needed to check it)
# ------------------------------------------------------------------------------------------------

class _FakeRay:
    """Records what run_many asks of Ray; every task fails as a task on a GPU-less node would."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            def __init__(self, cause):
                super().__init__(str(cause))
                self.cause = cause

    def __init__(self):
        self.calls, self.options, self.runtimes, self.up = [], None, [], False

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        self.up = True

    def shutdown(self):
        self.calls.append(("shutdown", {}))
        self.up = False

    def cluster_resources(self):
        return {"CPU": 32.0, "GPU": 8.0}

    def remote(self, fn):
        fake = self

        class Task:
            def options(self, **kwargs):
                fake.options = kwargs
                return self

            def remote(self, config, shard, runtime):
                fake.runtimes.append(runtime)
                return len(fake.runtimes)

        return Task()

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        raise self.exceptions.RayTaskError(ValueError(f"task {ref}: no GPU on this node"))

    def cancel(self, ref):
        self.calls.append(("cancel", {"ref": ref}))


def test_ray_tasks_ask_for_a_gpu_share_on_cuda_and_connect_to_ray_address(tmp_path, monkeypatch):
    import sys
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    # no cluster answers there: the address probe (tested in test_runs_integrity) is the fake's
    import iteration_order.parallel as parallel_module
    monkeypatch.setattr(parallel_module, "_check_ray_address", lambda address, timeout=None: None)
    monkeypatch.setenv(RAY_GPUS_ENV, "0.5")
    auto = Runtime(threads=1, results_dir=tmp_path, progress=False)
    with pytest.raises(RunsFailed) as failed:
        run_many(CONFIGS[:2], auto, jobs=3, shards=2, executor="ray", announce=False)
    # connected to the cluster (no local instance, so no CPU count), and disconnected at the end
    assert fake.calls[0] == ("init", {"address": "ray://head:10001", "logging_level": "warning"})
    assert fake.calls[-1][0] == "shutdown"
    assert fake.options == {"max_retries": 1, "retry_exceptions": False, "num_gpus": 0.5,
                            "num_cpus": 1}
    # backward in two shards, forward whole; each on the GPU Ray gives the task
    assert [r.device for r in fake.runtimes] == ["cuda"] * 3
    # a shard may be stored from an interrupted run (loaded); a pending whole run is recomputed
    assert [r.cache for r in fake.runtimes] == ["use", "use", "refresh"]
    assert [type(e) for _, e in failed.value.failures] == [ShardsFailed, ValueError]
    assert "no GPU on this node" in str(failed.value)


def test_ray_on_the_cpu_asks_for_one_cpu_per_task_and_starts_its_own_instance(tmp_path,
                                                                             monkeypatch):
    import sys
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RunsFailed):
        run_many(CONFIGS[:1], runtime(tmp_path), jobs=3, executor="ray", announce=False)
    assert fake.calls[0] == ("init", {"address": "local", "num_cpus": 3,
                                      "include_dashboard": False, "logging_level": "warning"})
    assert fake.calls[-1][0] == "shutdown"
    assert fake.options == {"max_retries": 1, "retry_exceptions": False, "num_cpus": 1}
    assert [r.device for r in fake.runtimes] == ["cpu"]
