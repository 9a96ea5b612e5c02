"""Appendix C's page study: slopes and crossovers, hidden-unit signs, the cached study."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from iteration_order import Runtime, initial_state
from iteration_order.book.lie_study import (LieStudy, _first_sign_change, _hidden_signs, _problem,
                                       crossover, fitted_slope, run_study, useful_limit)


def test_slope_and_crossover_on_closed_forms():
    lrs = np.array([1e-3, 1e-2, 1e-1])
    assert fitted_slope(lrs, 5 * lrs ** 3) == pytest.approx(3, abs=1e-12)
    assert fitted_slope(lrs, [2e-6, 0.0, 2e-2]) == pytest.approx(2, abs=1e-12)  # zero skipped
    assert math.isnan(fitted_slope(lrs, [0.0, 0.0, 1.0]))
    assert crossover(lrs, [1.0, 1.0, 1.0], [0.1, 1.0, 0.1]) == 1e-2  # first h no longer better
    assert crossover(lrs, [1.0, math.nan, 1.0], [0.1, 0.1, 0.1]) == 1e-2  # diverged counts
    assert math.isnan(crossover(lrs, [1.0, 1.0, 1.0], [0.1, 0.2, 0.3]))
    assert useful_limit(lrs, [1.0, 1.0, 1.0], [0.1, 0.5, 0.7]) == 1e-2  # ratio 1/2 still counts
    assert useful_limit(lrs, [1.0, 1.0, 1.0], [0.1, 0.6, 0.1]) == 1e-3  # stops at the first miss
    assert math.isnan(useful_limit(lrs, [1.0, 1.0, 1.0], [0.9, 0.1, 0.1]))
    assert _first_sign_change(lrs, [0, 3, math.nan]) == 1e-2  # a diverged run is no sign change
    assert math.isnan(_first_sign_change(lrs, [0, 0, math.nan]))


def test_hidden_signs_are_those_of_the_layers(tiny_problem):
    model, x, _, _ = tiny_problem
    state = initial_state(model)
    first = model[1](model[0](x))           # Linear of the first hidden layer
    second = model[3](model[2](first))      # Linear of the second
    expected = torch.cat([(first > 0).reshape(-1), (second > 0).reshape(-1)])
    assert torch.equal(_hidden_signs(model, state, x), expected)


def _study(**changes):
    fields = dict(trajectory={"dataset": "synthetic-x2", "depth": 1, "width": 8, "lr": 0.01,
                              "batch_size": 4, "steps": 5, "record": "at:1,3,5"},
                  lr_factors=[0.01, 0.02, 0.04, 1.0], sweep_at=[5], fit_points=3)
    return LieStudy(**{**fields, **changes})


def test_study_measures_theorem_c2_and_is_cached(tmp_path):
    runtime = Runtime(device="cpu", threads=1, progress=False, results_dir=tmp_path)
    fresh = run_study(_study(), runtime)
    sweep = fresh["sweep"]["5"]
    assert sweep["forward_slope"] == pytest.approx(2, abs=0.1)
    assert sweep["approx_slope"] == pytest.approx(3, abs=0.1)
    assert fresh["along"]["step"] == [1, 3, 5]
    assert fresh["along"]["forward_error"][0] == 0 and fresh["along"]["approx_error"][0] == 0
    assert math.isnan(fresh["along"]["ratio"][0])
    assert sweep["sign_changes"][0] == 0
    cached = run_study(_study(), runtime)
    assert cached["from_cache"] and not fresh["from_cache"]
    assert cached["sweep"] == fresh["sweep"] and cached["along"].keys() == fresh["along"].keys()
    assert len(list((tmp_path / "lie").glob("*.json"))) == 1


def test_tanh_swaps_every_relu_of_the_mlp():
    problem = _problem(_study(activation="tanh"), Runtime(device="cpu", threads=1))
    kinds = {type(m) for m in problem.model}
    assert nn.Tanh in kinds and nn.ReLU not in kinds
    assert problem.model[1].weight.dtype == torch.float64


def test_bad_studies_are_named():
    with pytest.raises(ValueError, match="sweep_at"):
        _study(sweep_at=[6])
    with pytest.raises(ValueError, match="fit_points"):
        _study(fit_points=5)
    with pytest.raises(ValueError, match="fit_points"):  # a repeated factor is one point
        _study(lr_factors=[0.01, 0.01, 0.02], fit_points=3)
    with pytest.raises(ValueError, match="activation"):
        _study(activation="gelu")
    with pytest.raises(ValueError, match="plain SGD"):
        _study(trajectory={"optimizer": "adam", "steps": 5})
    with pytest.raises(ValueError, match="lr_factors"):
        _study(lr_factors=[0.0, 1.0])
