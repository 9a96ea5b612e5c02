"""Backward runs cut into shards of their recorded steps: each cached on its own, merged into the
unsharded result (bitwise on the CPU)."""
import pytest

from iteration_order import Runtime, TrajectoryConfig, run_trajectory
from iteration_order.orders import planned_applications
from iteration_order.trajectory import (CURVES, Shard, merge_shards, run_shard, shard_path,
                                        shard_plan)

SMALL = TrajectoryConfig(dataset="synthetic-cos10", depth=2, width=16, lr=0.02, steps=30,
                         order="backward", record="every:3")
SAME = ("recorded_steps", *CURVES, "diverged_at", "schedule", "schedule_sha256", "engine", "data")


def runtime(folder):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False)


@pytest.mark.parametrize("order", ["backward", "reset:at=12", "switch:10"])
@pytest.mark.parametrize("shards", [2, 3, 5])
def test_merged_shards_are_the_unsharded_run(tmp_path, order, shards):
    config = SMALL.replace(order=order)
    whole = run_trajectory(config, runtime(tmp_path / "whole"))
    plan = shard_plan(config, shards)
    assert len(plan) == shards
    parts = [run_shard(config, runtime(tmp_path / "sharded"), s) for s in reversed(plan)]
    merged = merge_shards(config, runtime(tmp_path / "sharded"), parts)
    assert {k: merged[k] for k in SAME} == {k: whole[k] for k in SAME}
    # each shard after the first recomputes the iterate before it: sharding costs a little more
    assert merged["applications"] >= whole["applications"]
    assert merged["runtime"]["shards"] == shards
    # the merged result is the run's cache entry: a plain rerun loads it
    assert run_trajectory(config, runtime(tmp_path / "sharded"))["from_cache"]


def test_shards_have_about_equal_cost_not_equal_ranges():
    config = SMALL.replace(steps=400, record="every:4")
    plan = shard_plan(config, 4)
    steps = [0] + list(range(4, 401, 4))
    cost = [sum(planned_applications("backward", 400, [n]) for n in steps[s.first:s.stop] if n)
            for s in plan]
    assert max(cost) / min(cost) < 1.3
    sizes = [s.stop - s.first for s in plan]
    assert sizes[0] > 2 * sizes[-1]  # backward's late steps cost more: the last shard is short
    assert plan[0].first == 0 and plan[-1].stop == len(steps)
    assert all(a.stop == b.first for a, b in zip(plan, plan[1:]))


def test_forward_and_one_shard_are_not_cut():
    assert shard_plan(SMALL.replace(order="forward"), 4) == [Shard(0, 31)]
    assert shard_plan(SMALL, 1) == [Shard(0, 11)]


def test_a_shard_is_cached_on_its_own(tmp_path):
    shard = shard_plan(SMALL, 3)[1]
    first = run_shard(SMALL, runtime(tmp_path), shard)
    assert not first["from_cache"] and shard_path(SMALL, runtime(tmp_path), shard).is_file()
    again = run_shard(SMALL, runtime(tmp_path), shard)
    assert again["from_cache"] and again["train_loss"] == first["train_loss"]


def test_merge_refuses_shards_that_do_not_cover_the_run(tmp_path):
    plan = shard_plan(SMALL, 3)
    parts = [run_shard(SMALL, runtime(tmp_path), s) for s in plan[:2]]
    with pytest.raises(ValueError, match="do not cover the run's recorded steps"):
        merge_shards(SMALL, runtime(tmp_path), parts)


def test_a_divergence_ends_the_merged_run_where_it_ends_the_whole_one(tmp_path):
    config = SMALL.replace(lr=50.0)
    whole = run_trajectory(config, runtime(tmp_path / "whole"))
    assert whole["diverged_at"] is not None
    parts = [run_shard(config, runtime(tmp_path / "s"), s) for s in shard_plan(config, 3)]
    merged = merge_shards(config, runtime(tmp_path / "s"), parts)
    assert merged["diverged_at"] == whole["diverged_at"]
    assert merged["recorded_steps"] == whole["recorded_steps"]


def test_bad_shards_are_refused():
    with pytest.raises(ValueError, match="shards must be an integer >= 1; got 0"):
        shard_plan(SMALL, 0)
    with pytest.raises(ValueError, match="stop must be an integer >= 3; got 2"):
        Shard(2, 2)
