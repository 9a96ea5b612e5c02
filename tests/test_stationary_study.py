"""Theorem 2.6 page's study: determinism, cache, record grid, bad input."""
import dataclasses
import json

import pytest

from iteration_order.book import stationary_study as st

SMALL = dict(chains=20, steps=24, early_step=2, grid_points=6, trace_chains=2, wrong_scale=1.2,
             alpha=0.05, seed=0, quadratic_h=0.1, quadratic_noise=1.0, quadratic_theta0=3.0,
             regression_points=64, regression_dim=3, regression_batch=16, regression_h=0.1,
             network_points=32, network_span=2.0, network_teacher=(1.0, 0.5, 1.0),
             network_noise=0.05, network_batch=8, network_h=0.5, network_theta0=(2.0, 0.0, 0.5))


def small_study(**changes) -> st.StationaryStudy:
    return st.StationaryStudy(**{**SMALL, **changes})


# ---- the study: determinism, cache, bad input ----------------------------------------------------

def test_two_runs_give_identical_results_and_the_cache_is_reused(tmp_path, monkeypatch):
    study = small_study()
    first = st.run_study(study, results=tmp_path / "a")
    second = st.run_study(study, results=tmp_path / "b")

    def numbers(result):  # everything but the wall time
        return json.dumps({name: {k: v for k, v in r.items() if k != "compute_seconds"}
                           for name, r in result.items()}, sort_keys=True)
    assert numbers(first) == numbers(second)
    assert set(first) == set(st.PROBLEMS)

    def fail(*_):
        raise AssertionError("recomputed despite the cache")
    monkeypatch.setattr(st, "_run_problem", fail)
    assert st.run_study(study, results=tmp_path / "a") == first
    other = dataclasses.replace(study, seed=1)
    with pytest.raises(AssertionError, match="recomputed"):
        st.run_study(other, results=tmp_path / "a")


def test_record_grid_is_sorted_and_leaves_room_for_the_next_step():
    grid = st.record_grid(1000, 40)
    assert grid == sorted(set(grid)) and grid[0] == 1 and grid[-1] == 999


@pytest.mark.parametrize("change, message", [
    ({"quadratic_h": 0.0}, "quadratic_h"), ({"quadratic_h": 2.0}, "quadratic_h"),
    ({"quadratic_h": -0.5}, "quadratic_h"), ({"chains": 5}, "chains"),
    ({"steps": 0}, "steps"), ({"steps": -3}, "steps"), ({"early_step": 12}, "early_step"),
    ({"early_step": 0}, "early_step"), ({"trace_chains": 21}, "trace_chains"),
    ({"wrong_scale": 1.0}, "wrong_scale"), ({"alpha": 1.5}, "alpha"),
    ({"network_theta0": (1.0, 2.0)}, "network_theta0"),
    ({"regression_batch": 2}, "regression_batch"),
])
def test_bad_parameters_raise_value_errors_that_name_them(change, message):
    with pytest.raises(ValueError, match=message):
        small_study(**change)
