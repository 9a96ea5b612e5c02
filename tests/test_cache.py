"""The results cache: a stored result is used only if it is provably this config's, by this code.

Every way a file can be wrong (truncated, empty, not an object, another config's, computed by
other code, a curve of the wrong length) must lead to one warning naming the file and the reason,
and a recomputation; ``cache='only'`` must refuse instead; writes are strict JSON.
"""
import json
import math
import shutil
import warnings

import pytest

import iteration_order.cache as cache
import iteration_order.trajectory as trajectory
from iteration_order import Runtime, TrajectoryConfig, run_trajectory
from iteration_order.cache import (MissingResultError, ResultsDirError, StaleResultWarning,
                                   code_fingerprint)
from iteration_order.parallel import run_many
from iteration_order.trajectory import result_path

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, lr=0.01, steps=6,
                        order="backward", record="every:2")


def runtime(folder, **kw):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False, **kw)


def _strict_loads(text):
    def refuse(token):
        raise ValueError(f"{token} is not strict JSON")
    return json.loads(text, parse_constant=refuse)


def _edit(path, change):
    """``change`` made to the stored result, with its digest made to match: a result of the wrong
    shape as a faulty writer would store it, for the checks behind the digest."""
    result = json.loads(path.read_text())
    change(result)
    result[cache.DIGEST_KEY] = cache.content_digest(result)
    path.write_text(json.dumps(result))


def _edit_by_hand(path, change):
    """``change`` made to the stored result and nothing else (its digest no longer matches)."""
    result = json.loads(path.read_text())
    change(result)
    path.write_text(json.dumps(result))


def _truncate(path, tmp_path):
    path.write_text(path.read_text()[:200])


def _empty(path, tmp_path):
    path.write_text("")


def _empty_object(path, tmp_path):
    path.write_text(json.dumps({cache.DIGEST_KEY: cache.content_digest({})}))


def _list(path, tmp_path):
    path.write_text("[1, 2]")


def _foreign(path, tmp_path):
    other = TINY.replace(seed=1)
    run_trajectory(other, runtime(tmp_path / "other"))
    shutil.copy(result_path(other, runtime(tmp_path / "other")), path)


def _stale(path, tmp_path):
    _edit(path, lambda r: r.update(code_fingerprint="0123456789abcdef"))


def _before_a_field_existed(path, tmp_path):
    """Written by older code whose config had no ``init`` field: both the config and the code
    differ, and the warning names both (not only the missing field)."""
    def older(r):
        del r["config"]["init"]
        r["code_fingerprint"] = "0123456789abcdef"
    _edit(path, older)


def _extra_element(path, tmp_path):
    _edit(path, lambda r: r["train_loss"].append(0.5))


def _missing_element(path, tmp_path):
    _edit(path, lambda r: r["displacement"].pop())


def _steps_of_another_plan(path, tmp_path):
    def change(r):
        r["recorded_steps"] = [0, 3, 6, 9]  # the same number of entries, other steps
    _edit(path, change)


def _old_format(path, tmp_path):
    _edit(path, lambda r: r.update(format=0))


def _without_fingerprint(path, tmp_path):  # a result written before fingerprints existed
    _edit(path, lambda r: r.pop("code_fingerprint"))


def _value_edited(path, tmp_path):  # issue 21: train_loss[2] = 123.456, served before digests
    _edit_by_hand(path, lambda r: r["train_loss"].__setitem__(2, 123.456))


def _digest_removed(path, tmp_path):  # a file written before digests, or not by this package
    _edit_by_hand(path, lambda r: r.pop(cache.DIGEST_KEY))


def _deeply_nested(path, tmp_path):
    path.write_text("[" * 200_000 + "]" * 200_000)


def _deeply_nested_inside(path, tmp_path):
    path.write_text('{"format": ' + "[" * 200_000 + "]" * 200_000 + "}")


def _overflowing_number(path, tmp_path):  # 1e999 parses as inf in Python
    path.write_text(path.read_text().replace('"train_loss": [', '"train_loss": [1e999, ', 1))


def _curve_of_strings(path, tmp_path):
    _edit(path, lambda r: r.update(train_loss=[str(v) for v in r["train_loss"]]))


def _null_without_divergence(path, tmp_path):
    _edit(path, lambda r: r["test_loss"].__setitem__(1, None))


def _diverged_at_zero_with_cut_curves(path, tmp_path):
    def change(r):
        r["diverged_at"] = 0
        for key in ("recorded_steps", *trajectory.CURVES):
            r[key] = r[key][:1]
    _edit(path, change)


def _schedule_not_its_digest(path, tmp_path):
    _edit(path, lambda r: r["schedule"][0].__setitem__(0, r["schedule"][0][0] + 1))


def _boolean_steps(path, tmp_path):
    _edit(path, lambda r: r["recorded_steps"].__setitem__(0, False))


@pytest.mark.parametrize("corrupt, reason", [
    (_value_edited, "does not match its content digest: it was edited or corrupted"),
    (_digest_removed, "carries no content digest (content_sha256)"),
    (_deeply_nested, "is JSON nested too deeply to be a result"),
    (_deeply_nested_inside, "is JSON nested too deeply to be a result"),
    (_overflowing_number, "is not valid JSON (1e999 is not a finite number"),
    (_curve_of_strings, "has '"),
    (_null_without_divergence, "has null at entry 1 of 'test_loss' but did not diverge"),
    (_diverged_at_zero_with_cut_curves, "has diverged_at=0 but finite losses at its last step"),
    (_schedule_not_its_digest, "has a schedule that does not match its schedule_sha256"),
    (_boolean_steps, "has recorded_steps that are not a list of step numbers"),
    (_truncate, "is not valid JSON"),
    (_empty, "is empty"),
    (_empty_object, "lacks format, config, code_fingerprint"),
    (_list, "holds a JSON list, not an object"),
    (_foreign, "holds the result of another config (seed: 1 stored, 0 wanted)"),
    (_stale, "was computed by other code (fingerprint '0123456789abcdef'"),
    (_before_a_field_existed, "holds the result of another config (init: not stored, 'torch' "
                              "wanted) and was computed by other code (fingerprint "
                              "'0123456789abcdef'"),
    (_extra_element, "has 5 entries in 'train_loss' for 4 recorded steps"),
    (_missing_element, "has 3 entries in 'displacement' for 4 recorded steps"),
    (_steps_of_another_plan, "records other steps than the 4 steps the config plans (step 3 "
                             "where 2 is planned)"),
    (_old_format, "has format 0"),
    (_without_fingerprint, "lacks code_fingerprint"),
])
def test_an_invalid_result_is_recomputed_with_one_warning(tmp_path, corrupt, reason):
    fresh = run_trajectory(TINY, runtime(tmp_path))
    path = result_path(TINY, runtime(tmp_path))
    corrupt(path, tmp_path)
    with pytest.warns(StaleResultWarning) as caught:
        again = run_trajectory(TINY, runtime(tmp_path))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(path) in message and reason in message and "recomputing" in message
    assert not again["from_cache"]
    assert again["train_loss"] == fresh["train_loss"] and again["config"]["seed"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was overwritten with a valid result
        assert run_trajectory(TINY, runtime(tmp_path))["from_cache"]


def test_a_code_change_invalidates_a_result(tmp_path, monkeypatch):
    run_trajectory(TINY, runtime(tmp_path))
    monkeypatch.setattr(trajectory, "code_fingerprint", lambda modules: "changed-code")
    with pytest.warns(StaleResultWarning, match="was computed by other code"):
        result = run_trajectory(TINY, runtime(tmp_path))
    assert not result["from_cache"] and result["code_fingerprint"] == "changed-code"


def test_every_result_carries_config_engine_fingerprint_and_format(tmp_path):
    run_trajectory(TINY, runtime(tmp_path))
    stored = json.loads(result_path(TINY, runtime(tmp_path)).read_text())
    assert stored["format"] == cache.FORMAT
    assert stored["config"] == json.loads(json.dumps(TINY.__dict__))
    assert stored["engine"] == "sequential"
    assert stored["code_fingerprint"] == code_fingerprint(trajectory.TRAJECTORY_MODULES)


_SOURCE = '''"""A module."""
import math


def step(theta, grad, lr):
    """One SGD step."""
    return theta - lr * grad  # the update
'''


@pytest.mark.parametrize("edited, same", [
    (_SOURCE.replace("# the update", "# a comment, reworded"), True),
    (_SOURCE.replace("One SGD step.", "One step of plain SGD."), True),
    (_SOURCE.replace('"""A module."""', '"""Another docstring."""'), True),
    (_SOURCE.replace("theta - lr * grad", "theta-lr*grad").replace("\n\n\n", "\n\n"), True),
    (_SOURCE.replace("theta - lr * grad", "theta - 2 * lr * grad"), False),
    (_SOURCE.replace("lr * grad", "lr * grad / math.sqrt(1)"), False),
])
def test_the_fingerprint_follows_code_not_comments_docstrings_or_layout(tmp_path, monkeypatch,
                                                                       edited, same):
    def fingerprint(source):
        (tmp_path / "maps.py").write_text(source)
        cache._fingerprint.cache_clear()
        return code_fingerprint(["maps"])

    monkeypatch.setattr(cache, "_module_file", lambda name: tmp_path / f"{name}.py")
    try:
        assert (fingerprint(edited) == fingerprint(_SOURCE)) == same
    finally:
        cache._fingerprint.cache_clear()  # the real modules' fingerprint for the other tests


def test_the_fingerprint_names_a_module_without_source():
    with pytest.raises(ValueError, match="no source file for module iteration_order.nowhere"):
        code_fingerprint(["nowhere"])


def test_refresh_recomputes_a_valid_result_without_warning(tmp_path):
    run_trajectory(TINY, runtime(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not run_trajectory(TINY, runtime(tmp_path, cache="refresh"))["from_cache"]


def test_cache_only_never_computes_and_names_file_config_and_reason(tmp_path, monkeypatch):
    def no_training(*args):
        raise AssertionError("trained despite cache='only'")
    monkeypatch.setattr(trajectory, "prepare", no_training)
    path = result_path(TINY, runtime(tmp_path))
    with pytest.raises(MissingResultError) as missing:
        run_trajectory(TINY, runtime(tmp_path, cache="only"))
    for part in (str(path), "steps=6", "order='backward'", "no result is stored"):
        assert part in str(missing.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{")
    with pytest.raises(MissingResultError, match="the file is not valid JSON"):
        run_trajectory(TINY, runtime(tmp_path, cache="only"))


def test_cache_mode_comes_from_the_environment_and_is_checked(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setenv("ITERATION_ORDER_CACHE", "only")
    with pytest.raises(MissingResultError, match="cache='only'"):
        run_trajectory(TINY, runtime(folder))  # Runtime(cache=None): the environment decides
    monkeypatch.setenv("ITERATION_ORDER_CACHE", "sometimes")
    for run in (run_trajectory, lambda c, r: run_many([c], r)):
        with pytest.raises(ValueError, match=r"\$ITERATION_ORDER_CACHE='sometimes' is not a "
                                             r"cache mode; allowed: use, refresh, only"):
            run(TINY, runtime(folder))
    monkeypatch.delenv("ITERATION_ORDER_CACHE")
    with pytest.raises(ValueError, match="unknown cache mode 'always'; allowed: use, refresh, only"):
        run_trajectory(TINY, runtime(folder, cache="always"))
    assert not folder.exists()  # refused before anything was written
    monkeypatch.setenv("ITERATION_ORDER_CACHE", "refresh")
    run_trajectory(TINY, runtime(folder))
    assert not run_trajectory(TINY, runtime(folder))["from_cache"]


def test_run_many_counts_only_valid_results_as_cached(tmp_path, capsys):
    configs = [TINY, TINY.replace(seed=1)]
    run_many(configs, runtime(tmp_path), announce=False)
    result_path(configs[1], runtime(tmp_path)).write_text('{"format": 1, "con')
    with pytest.warns(StaleResultWarning) as caught:
        results = run_many(configs, runtime(tmp_path))
    assert len(caught) == 1  # the parent warned; the job did not check (and warn) again
    assert "1 of 2 runs cached; to run:" in capsys.readouterr().out
    assert results[0]["from_cache"] and not results[1]["from_cache"]
    assert results[1]["config"]["seed"] == 1


def test_run_many_with_cache_only_lists_every_missing_result(tmp_path):
    configs = [TINY, TINY.replace(seed=1), TINY.replace(seed=2)]
    run_trajectory(TINY, runtime(tmp_path))
    with pytest.raises(MissingResultError, match="2 of 3 runs have no valid stored result") as e:
        run_many(configs, runtime(tmp_path, cache="only"))
    assert "seed=1" in str(e.value) and "seed=2" in str(e.value)


def test_a_diverged_run_is_stored_as_strict_json(tmp_path):
    config = TINY.replace(lr=1e4, order="forward")
    result = run_trajectory(config, runtime(tmp_path))
    stored = _strict_loads(result_path(config, runtime(tmp_path)).read_text())
    n = stored["diverged_at"]
    assert n is not None and stored["recorded_steps"][-1] == n
    assert stored["train_loss"][-1] is None and stored["train_loss"][:-1] == result["train_loss"][:-1]
    assert all(isinstance(v, float) for v in stored["train_loss"][:-1])
    again = run_trajectory(config, runtime(tmp_path))
    assert again["from_cache"]  # valid as stored
    # and read back as NaN, as readers of the curves (statistics, figures) have always seen it
    assert math.isnan(again["train_loss"][-1]) and math.isnan(result["train_loss"][-1])
    assert again["train_acc"] == result["train_acc"] == [None] * len(again["train_acc"])


def test_atomic_write_json_writes_non_finite_numbers_as_null(tmp_path):
    cache.atomic_write_json(tmp_path / "r.json", {"a": [1.0, float("nan")],
                                                  "b": {"c": float("-inf")}, "d": (float("inf"),)})
    assert _strict_loads((tmp_path / "r.json").read_text()) == {"a": [1.0, None],
                                                                "b": {"c": None}, "d": [None]}


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_unusable_results_dir_fails_before_any_training(tmp_path, monkeypatch, where):
    def no_training(*args):
        raise AssertionError("trained although the result could not be stored")
    monkeypatch.setattr(trajectory, "prepare", no_training)
    monkeypatch.setattr("iteration_order.parallel.estimate_costs", no_training)
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    folder = blocker if where == "a file" else blocker / "sub"
    for run in (lambda: run_trajectory(TINY, runtime(folder)),
                lambda: run_many([TINY, TINY.replace(seed=1)], runtime(folder), jobs=2)):
        with pytest.raises(ResultsDirError, match=f"cannot write results to '{folder}'"):
            run()


def test_a_read_only_results_dir_fails_before_any_training(tmp_path, monkeypatch):
    import os
    if os.geteuid() == 0:
        pytest.skip("root may write to a read-only folder")
    monkeypatch.setattr(trajectory, "prepare", lambda *a: pytest.fail("trained"))
    folder = tmp_path / "results"
    folder.mkdir(mode=0o500)
    with pytest.raises(ResultsDirError, match="Permission denied"):
        run_trajectory(TINY, runtime(folder))


# ------------------------------------------------------------------------------------------------
# The study caches: the same check, with their own modules in the fingerprint
# ------------------------------------------------------------------------------------------------

def _sharpness(folder, mode=None):
    from iteration_order.sharpness import Probe, SharpnessRun, run_probes, sharpness_path
    run = SharpnessRun(TINY.replace(batch_size=4, steps=8), Probe(every=4, batch=16, eigenpairs=1))
    return run_probes(run, runtime(folder, cache=mode)), sharpness_path(run, runtime(folder))


def _lie(folder, mode=None):
    from iteration_order.book.lie_bracket import LieStudy, run_study
    study = LieStudy(trajectory={"dataset": "synthetic-x2", "depth": 1, "width": 8, "lr": 0.01,
                                 "batch_size": 4, "steps": 3, "record": "at:1,3"},
                     lr_factors=[0.5, 1.0], sweep_at=[3], fit_points=2)
    result = run_study(study, runtime(folder, cache=mode))
    return result, next((folder / "lie").glob("*.json"))


def _stationary(folder, mode=None):
    from iteration_order.book import stationary as st
    study = st.StationaryStudy(
        chains=20, steps=8, early_step=2, grid_points=4, trace_chains=2, wrong_scale=1.2,
        alpha=0.05, seed=0, quadratic_h=0.1, quadratic_noise=1.0, quadratic_theta0=3.0,
        regression_points=16, regression_dim=2, regression_batch=4, regression_h=0.1,
        network_points=16, network_span=2.0, network_teacher=(1.0, 0.5, 1.0), network_noise=0.05,
        network_batch=4, network_h=0.5, network_theta0=(2.0, 0.0, 0.5))
    result = st.run_study(study, runtime(folder, cache=mode))
    return {**result, "from_cache": None}, next(folder.glob("stationary-*.json"))


@pytest.mark.parametrize("study", [_sharpness, _lie, _stationary])
def test_a_study_cache_recomputes_a_stale_or_truncated_file_and_can_refuse(tmp_path, study):
    _, path = study(tmp_path)
    fingerprint = json.loads(path.read_text())["code_fingerprint"]
    for corrupt, reason in ((_stale, "was computed by other code"),
                            (_truncate, "is not valid JSON")):
        corrupt(path, tmp_path)
        with pytest.warns(StaleResultWarning, match=reason):
            again, _ = study(tmp_path)
        assert again["from_cache"] in (False, None)  # None: the stationary study does not say
        stored = _strict_loads(path.read_text())  # overwritten with a valid result
        assert stored["format"] == cache.FORMAT and stored["code_fingerprint"] == fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert study(tmp_path)[0]["from_cache"] in (True, None)  # valid: loaded, no warning
    _truncate(path, tmp_path)
    with pytest.raises(MissingResultError, match="is not valid JSON"):
        study(tmp_path, "only")


def test_a_diverging_probe_run_is_strict_json_and_reads_back_nan(tmp_path):
    from iteration_order.sharpness import Probe, SharpnessRun, run_probes, sharpness_path
    run = SharpnessRun(TINY.replace(lr=50.0, batch_size=4, steps=12, order="forward"),
                       Probe(every=4, batch=16, eigenpairs=1))
    fresh = run_probes(run, runtime(tmp_path))
    stored = _strict_loads(sharpness_path(run, runtime(tmp_path)).read_text())
    assert stored["probe_loss"][-1] is None  # the loss overflowed by the last probe
    again = run_probes(run, runtime(tmp_path))
    assert again["from_cache"] and math.isnan(again["probe_loss"][-1])
    assert math.isnan(fresh["probe_loss"][-1]) and fresh["overlap"][0] is None  # nothing before
