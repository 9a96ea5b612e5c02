"""The trajectory runner: determinism, caching, atomic writes, divergence and bad input."""
import json
import math

import pytest
import torch

from iteration_order import (DataNotFoundError, Runtime, TrajectoryConfig, atomic_write_json,
                             config_hash, read_json, recorded_steps, run_trajectory)
from iteration_order.trajectory import result_path

SMALL = TrajectoryConfig(dataset="synthetic-cos10", depth=2, width=16, lr=0.02, steps=30,
                         order="backward", record="every:5")


def runtime(tmp_path, **kw):
    return Runtime(device="cpu", threads=1, results_dir=tmp_path, **kw)


def test_same_config_gives_identical_results(tmp_path):
    a = run_trajectory(SMALL, runtime(tmp_path / "a"))
    b = run_trajectory(SMALL, runtime(tmp_path / "b"))
    assert not a["from_cache"] and not b["from_cache"]
    for key in ("recorded_steps", "train_loss", "test_loss", "displacement", "schedule"):
        assert a[key] == b[key]
    assert a["recorded_steps"] == [0, 5, 10, 15, 20, 25, 30]
    assert a["applications"] == a["planned_applications"] == sum(range(5, 31, 5))
    assert a["displacement"][0] == 0.0 and all(d > 0 for d in a["displacement"][1:])
    assert a["train_acc"][0] is None  # regression: no accuracy


def test_rerun_loads_from_cache(tmp_path):
    first = run_trajectory(SMALL, runtime(tmp_path))
    path = result_path(SMALL, runtime(tmp_path))
    assert path.is_file() and path.name.startswith(config_hash(SMALL.identity()))
    second = run_trajectory(SMALL, runtime(tmp_path))
    assert second["from_cache"]
    assert {k: v for k, v in second.items() if k != "from_cache"} == \
        {k: v for k, v in first.items() if k != "from_cache"}
    other = run_trajectory(SMALL.replace(order="forward"), runtime(tmp_path))
    assert not other["from_cache"] and len(list(tmp_path.glob("*.json"))) == 2
    assert other["schedule"] == first["schedule"]  # both orders of one seed see the same batches
    assert other["train_loss"][0] == first["train_loss"][0]  # ... from the same θ_0


def test_atomic_write_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"old": 1})

    def crash(obj, fh, **kw):
        fh.write('{"new": [1, 2, ')  # half a document, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"new": [1, 2, 3]})
    monkeypatch.undo()
    assert read_json(path) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_interrupted_run_leaves_no_result_and_resumes(tmp_path, monkeypatch):
    import iteration_order.cache as cache

    def crash(path, payload):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "atomic_write_json", crash)  # every cached result is written there
    with pytest.raises(KeyboardInterrupt):
        run_trajectory(SMALL, runtime(tmp_path))
    assert list(tmp_path.glob("*.json")) == []
    monkeypatch.undo()
    assert not run_trajectory(SMALL, runtime(tmp_path))["from_cache"]


def test_divergence_is_recorded_not_raised(tmp_path):
    result = run_trajectory(SMALL.replace(lr=1e4, order="forward"),
                            runtime(tmp_path))
    n = result["diverged_at"]
    assert n is not None and result["recorded_steps"][-1] == n
    assert not math.isfinite(result["train_loss"][-1])


def test_reset_switch_and_other_optimizers_run(tmp_path):
    for changes in ({"order": "reset:every=7"}, {"order": "switch:12"},
                    {"optimizer": "momentum", "order": "backward"},
                    {"optimizer": "adam", "lr": 1e-3, "order": "reset:at=10"}):
        result = run_trajectory(SMALL.replace(**changes), runtime(tmp_path))
        assert result["diverged_at"] is None
        assert result["applications"] == result["planned_applications"]


def test_convolutional_model_on_fake_images(tmp_path):
    config = TrajectoryConfig(dataset="cifar10", fake_data=True, model="resnet18", lr=0.01,
                              batch_size=2, steps=3, order="backward", eval_train_size=8,
                              eval_test_size=8)
    result = run_trajectory(config, runtime(tmp_path))
    assert result["recorded_steps"] == [0, 1, 2, 3] and "FAKE" in result["data"]
    assert all(0 <= a <= 1 for a in result["test_acc"])


def test_record_specs():
    assert recorded_steps(SMALL.replace(record="at:30,3,3")) == [3, 30]
    assert recorded_steps(SMALL.replace(record="every:7")) == [7, 14, 21, 28, 30]
    log = recorded_steps(SMALL.replace(record="log:5", steps=1000))
    assert log == [1, 6, 32, 178, 1000]
    # the forward order stays per step unless told otherwise
    assert recorded_steps(SMALL.replace(order="forward")) == list(range(1, 31))
    assert recorded_steps(SMALL.replace(order="forward", record_forward="every:10")) == [10, 20, 30]
    # sparse early, dense in the tail window: the union of the parts
    assert recorded_steps(SMALL.replace(record="every:10+range:22:30:3")) == [10, 20, 22, 25, 28, 30]
    assert recorded_steps(SMALL.replace(record="range:5:5:1")) == [5]


@pytest.mark.parametrize("changes, message", [
    ({"order": "upside-down"}, "unknown order 'upside-down'"),
    ({"model": "resnet34"}, "unknown model 'resnet34'; allowed: mlp, resnet18, resnet50, vgg19"),
    ({"dataset": "imagenet"}, "unknown data set 'imagenet'; allowed: synthetic-x2"),
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; allowed: sgd, momentum, adam"),
    ({"steps": 0}, "steps must be an integer in 1..1000000; got 0"),
    ({"steps": -5}, "steps must be an integer in 1..1000000; got -5"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"record": "at:31"}, r"bad record spec 'at:31': steps \[31\] lie outside 1..steps=30"),
    ({"record": "every:0"}, r"bad record spec 'every:0'"),
    ({"record_forward": "sometimes"}, r"unknown record spec 'sometimes'; allowed: 'every:K'"),
    ({"record": "range:20:10:2"}, r"bad record spec 'range:20:10:2': need 1 <= A <= B <= steps=30"),
    ({"record": "every:5+range:1:31:1"}, r"bad record spec 'range:1:31:1'"),
    ({"record": "range:1:2"}, r"bad record spec 'range:1:2'"),
])
def test_bad_configs_are_rejected_with_the_value_and_what_is_allowed(changes, message):
    with pytest.raises(ValueError, match=message):
        SMALL.replace(**changes)


def test_batch_larger_than_the_data_set_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="batch_size=500 is larger than the data set"):
        run_trajectory(SMALL.replace(batch_size=500), runtime(tmp_path))
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_missing_data_file_writes_nothing(tmp_path):
    config = TrajectoryConfig(dataset="fashionmnist", steps=2)
    with pytest.raises(DataNotFoundError, match="FashionMNIST/raw/train-images-idx3-ubyte"):
        run_trajectory(config, runtime(tmp_path / "results", data_root=str(tmp_path)))
    # the results folder is checked (created) before any work starts, and stays empty
    assert list((tmp_path / "results").iterdir()) == []


def test_engine_choice(tmp_path):
    from iteration_order.trajectory import prepare
    cpu = runtime(tmp_path)
    assert prepare(SMALL, cpu).engine == "sequential"  # auto on a CPU
    batched = prepare(SMALL, runtime(tmp_path, engine="batched", group_size=4))
    assert (batched.engine, batched.group_size) == ("batched", 4)
    adam = prepare(SMALL.replace(optimizer="adam"), runtime(tmp_path, engine="batched"))
    assert adam.engine == "batched"  # refusals of the batched engine: tests/test_batched.py
    forward = prepare(SMALL.replace(order="forward"), runtime(tmp_path, engine="batched"))
    assert forward.engine == "sequential"  # nothing to batch without restarts
    with pytest.raises(ValueError, match="unknown engine 'warp'"):
        runtime(tmp_path, engine="warp")


def test_batched_engine_gives_the_sequential_curves(tmp_path):
    config = SMALL.replace(record="every:3")
    a = run_trajectory(config, runtime(tmp_path / "a", engine="sequential"))
    b = run_trajectory(config, runtime(tmp_path / "b", engine="batched", group_size=4))
    assert b["runtime"]["engine"] == "batched"
    assert a["recorded_steps"] == b["recorded_steps"]
    for key in ("train_loss", "test_loss", "displacement"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)


def test_cuda_request_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        run_trajectory(SMALL, Runtime(device="cuda", results_dir=tmp_path))


def test_cost_estimate_counts_exactly_and_times_positively(tmp_path):
    from iteration_order.cost import cost_table, estimate_costs
    configs = [SMALL.replace(order=o) for o in ("forward", "backward", "reset:every=10")]
    estimates = estimate_costs(configs, runtime(tmp_path, progress=False))
    assert [e.applications for e in estimates] == [30, 5 + 10 + 15 + 20 + 25 + 30, 5 + 10 + 5 + 10 + 5 + 10]
    assert [e.evaluations for e in estimates] == [31, 7, 7]
    assert all(e.seconds_per_application > 0 and e.seconds > 0 for e in estimates)
    table = cost_table(estimates, jobs=2)
    assert "backward" in table and "105" in table and "2 parallel job(s)" in table


def test_run_many_in_two_processes_matches_one_process(tmp_path, capsys):
    from iteration_order.parallel import run_many
    configs = [SMALL.replace(seed=s, steps=12) for s in (0, 1)]
    parallel = run_many(configs, runtime(tmp_path / "p"), jobs=2)
    assert "to run:" in capsys.readouterr().out
    serial = run_many(configs, runtime(tmp_path / "s"), jobs=1, announce=False)
    for a, b in zip(parallel, serial):
        assert a["train_loss"] == b["train_loss"] and a["schedule"] == b["schedule"]
    again = run_many(configs, runtime(tmp_path / "p"), jobs=2)
    assert all(r["from_cache"] for r in again)
    with pytest.raises(ValueError, match="jobs must be an integer >= 1; got 0"):
        run_many(configs, runtime(tmp_path), jobs=0)


def test_fields_added_later_keep_old_cache_names_at_their_default():
    assert "init" not in SMALL.identity()
    assert SMALL.replace(init="he").identity()["init"] == "he"
    assert config_hash(SMALL.identity()) != config_hash(SMALL.replace(init="he").identity())
    with pytest.raises(ValueError, match="unknown init 'xavier'; allowed: torch, he"):
        SMALL.replace(init="xavier")


# ------------------------------------------------------------------------------------------------
# Appendix D's updates (update, micro_batches, reg_lambda)
# ------------------------------------------------------------------------------------------------

def test_update_fields_keep_old_cache_names_at_their_default():
    for name in ("update", "micro_batches", "reg_lambda"):
        assert name not in SMALL.identity()
    regularised = SMALL.replace(batch_size=4, update="regularised", micro_batches=2,
                                reg_lambda=1e-4)
    assert {"update", "micro_batches", "reg_lambda"} <= set(regularised.identity())
    assert config_hash(regularised.identity()) != \
        config_hash(regularised.replace(reg_lambda=2e-4).identity())


@pytest.mark.parametrize("changes, message", [
    ({"update": "lbfgs"}, "unknown update 'lbfgs'; allowed: sgd, small, regularised, average"),
    ({"update": "small"}, "update='small' with micro_batches=1"),
    ({"micro_batches": 2}, "update='sgd' with micro_batches=2"),
    ({"update": "small", "micro_batches": 0}, "micro_batches must be an integer >= 1; got 0"),
    ({"update": "small", "batch_size": 2048, "micro_batches": 3},
     "batch_size=2048 is not divisible by micro_batches=3; use 2049"),
    ({"update": "average", "batch_size": 6, "micro_batches": 6}, "micro_batches must be <= 5"),
    ({"update": "regularised", "batch_size": 4, "micro_batches": 2, "reg_lambda": float("nan")},
     "reg_lambda must be a finite number >= 0"),
    ({"reg_lambda": 0.1}, "reg_lambda=0.1 is used by update='regularised' only"),
    ({"update": "small", "batch_size": 4, "micro_batches": 2, "optimizer": "adam"},
     "optimizer must be 'sgd'; got 'adam'"),
])
def test_bad_update_fields_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        SMALL.replace(**changes)


def test_appendix_d_updates_run_and_are_costed(tmp_path):
    from iteration_order.cost import estimate_costs
    configs = [SMALL.replace(order="forward", batch_size=4, steps=6, update=u, micro_batches=2,
                             reg_lambda=r, record_forward="every:2")
               for u, r in (("small", 0.0), ("regularised", 1e-3), ("average", 0.0))]
    for config in configs:
        first = run_trajectory(config, runtime(tmp_path))
        assert first["recorded_steps"] == [0, 2, 4, 6] and first["diverged_at"] is None
        assert first["applications"] == 6
        again = run_trajectory(config, runtime(tmp_path / "again"))
        assert again["train_loss"] == first["train_loss"]  # deterministic
    estimates = estimate_costs(configs, runtime(tmp_path, progress=False))
    assert all(e.seconds_per_application > 0 for e in estimates)
    assert len({e.seconds_per_application for e in estimates}) == 3  # one warm-up per update


def test_large_schedules_are_stored_as_a_digest(tmp_path, monkeypatch):
    import iteration_order.trajectory as trajectory
    config = SMALL.replace(order="forward", steps=4, batch_size=8)
    small = run_trajectory(config, runtime(tmp_path / "a"))
    monkeypatch.setattr(trajectory, "_MAX_STORED_SCHEDULE", 16)
    large = run_trajectory(config, runtime(tmp_path / "b"))
    assert len(small["schedule"]) == 4 and large["schedule"] is None
    assert large["schedule_sha256"] == small["schedule_sha256"]
    assert large["train_loss"] == small["train_loss"]


def test_a_constant_image_channel_is_zero_not_nan(tmp_path):
    import numpy as np
    from iteration_order.data import load_dataset
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 4, 4, 3), dtype=np.uint8)
    images[..., 2] = 200  # a blank channel: no spread over the training split
    np.savez(tmp_path / "blank.npz", x_train=images[:32], y_train=rng.integers(0, 3, 32),
             x_test=images[32:], y_test=rng.integers(0, 3, 8))
    data = load_dataset("npz:blank", tmp_path)
    assert torch.isfinite(data.x_train).all() and torch.isfinite(data.x_test).all()
    assert torch.equal(data.x_train[:, 2], torch.zeros_like(data.x_train[:, 2]))
    other = data.x_train[:, :2].transpose(0, 1).reshape(2, -1)
    assert torch.allclose(other.mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(other.std(1), torch.ones(2), atol=1e-6)
    # the symptom: NaN inputs made every run "diverge" at step 0, and that was cached
    config = TrajectoryConfig(dataset="npz:blank", depth=1, width=8, lr=0.01, batch_size=4,
                              steps=4, order="forward")
    result = run_trajectory(config, runtime(tmp_path / "results", data_root=str(tmp_path)))
    assert result["diverged_at"] is None and all(map(math.isfinite, result["train_loss"]))


def test_the_fingerprint_of_a_run_covers_the_code_it_runs():
    """The convolutional architectures enter the fingerprint of their own runs only, so that a
    change to them does not throw away the MLP and synthetic results (and vice versa nothing of
    theirs is left out)."""
    from iteration_order.cache import code_fingerprint
    from iteration_order.trajectory import (CONV_MODULES, TRAJECTORY_MODULES,
                                            trajectory_fingerprint)
    mlp = TrajectoryConfig(steps=3)
    conv = TrajectoryConfig(dataset="cifar10", model="resnet18", base_channels=8, steps=3)
    assert trajectory_fingerprint(mlp) == code_fingerprint(TRAJECTORY_MODULES)
    assert trajectory_fingerprint(conv) == code_fingerprint(TRAJECTORY_MODULES + CONV_MODULES)
    assert trajectory_fingerprint(mlp) != trajectory_fingerprint(conv)
    assert "cifar_models" in CONV_MODULES and "models" in TRAJECTORY_MODULES


@pytest.mark.parametrize("changes, message", [
    ({"base_channels": 8}, "base_channels=8 is used by the convolutional models only"),
    ({"model": "resnet18", "dataset": "cifar10", "width": 16}, "width=16 is used by model='mlp'"),
    ({"model": "resnet18", "dataset": "cifar10", "base_channels": 0},
     "base_channels must be an integer >= 1; got 0"),
])
def test_each_models_width_field_is_its_own(changes, message):
    with pytest.raises(ValueError, match=message):
        TrajectoryConfig(steps=3, **changes)


def test_the_default_width_keeps_earlier_cache_names():
    config = TrajectoryConfig(dataset="cifar10", model="resnet18", steps=3)
    assert "base_channels" not in config.identity()
    assert config.replace(base_channels=8).identity()["base_channels"] == 8
