"""Appendix C's page study: slopes and crossovers, hidden-unit signs and kinks, where the corrected
error leaves its h³ line, the page's tables and numbers, the cached study."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from iteration_order import Runtime, initial_state, sgd_maps
from iteration_order.book.lie_bracket import (RULE_MISSING, LieStudy, _first_sign_change,
                                            _hidden_signs, _problem, crossover, fitted_slope,
                                            h3_line, helps_at, leaves_h3_line, page_numbers,
                                            rule_numbers, rule_table, run_key, run_study, shown,
                                            useful_limit)
from iteration_order.evaluation import loss_function


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


# ------------------------------------------------------------------------------------------------
# Where the corrected error leaves its h³ line, and the kink rule
# ------------------------------------------------------------------------------------------------

LRS = np.geomspace(1e-4, 1e-1, 7)


def test_h3_line_and_where_the_error_leaves_it():
    on_line = 5 * LRS ** 3
    assert h3_line(LRS, on_line, 3) == pytest.approx(5, rel=1e-12)
    assert math.isnan(leaves_h3_line(LRS, on_line, 3))  # never leaves
    jumped = on_line.copy()
    jumped[4:] *= 10  # a ReLU-like jump off the line at the fifth h
    assert leaves_h3_line(LRS, jumped, 3) == LRS[4]
    bent = on_line * np.array([1, 1, 1, 1, 1.5, 1.9, 2.1])  # a smooth bend: off by > 2 only last
    assert leaves_h3_line(LRS, bent, 3) == LRS[6]
    assert leaves_h3_line(LRS, bent, 3, factor=1.2) == LRS[4]
    below = on_line * np.array([1, 1, 1, 1, 0.4, 1, 1])  # off by a factor 2.5 downwards counts
    assert leaves_h3_line(LRS, below, 3) == LRS[4]
    diverged = on_line.copy()
    diverged[5] = math.nan
    assert leaves_h3_line(LRS, diverged, 3) == LRS[5]


def test_no_h3_line_without_slope_three_on_the_smallest_h():
    roundoff = np.full(7, 2e-15)  # float64 round-off: slope 0
    assert math.isnan(h3_line(LRS, roundoff, 3)) and math.isnan(leaves_h3_line(LRS, roundoff, 3))
    assert math.isnan(h3_line(LRS, LRS ** 2, 3))
    assert not math.isnan(h3_line(LRS, LRS ** 3.05, 3))  # within the tolerance of 0.1
    assert math.isnan(h3_line(LRS, LRS ** 3.05, 3, tolerance=0.01))
    assert math.isnan(h3_line(LRS, [0.0, *LRS[1:] ** 3], 3))
    with pytest.raises(ValueError, match="factor"):
        leaves_h3_line(LRS, LRS ** 3, 3, factor=1.0)
    with pytest.raises(ValueError, match="fit_points"):
        h3_line(LRS, LRS ** 3, 8)


def _fake(activation, approx, sign_changes, kinks, forward=None):
    """A stored study's fields that the rule table reads: one sweep at n = 4."""
    forward = list(forward if forward is not None else 10 * LRS ** 2)
    return {"study": {"activation": activation, "fit_points": 3,
                      "trajectory": {"dataset": "synthetic-cos10", "depth": 1, "width": 8,
                                     "lr": 0.01, "batch_size": 4, "steps": 4}},
            "lrs": list(LRS),
            "sweep": {"4": {"forward_error": forward, "approx_error": list(approx),
                            "sign_changes": sign_changes, "kinks": kinks, "forward_slope": 2.0,
                            "approx_slope": 3.0, "crossover": math.nan}}}


def test_rule_table_tells_end_points_from_gradients():
    jumped = 5 * LRS ** 3 * np.array([1, 1, 1, 1, 10, 10, 10])  # leaves at LRS[4]
    results = {
        # a sign change at the end points first at LRS[3], a kink in a gradient first at LRS[4]
        "a": _fake("relu", jumped, [0, 0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 1, 2, 3]),
        # both first at LRS[4]
        "b": _fake("relu", jumped, [0, 0, 0, 0, 1, 2, 3], [0, 0, 0, 0, 1, 2, 3]),
        # a kink first at LRS[2], the line kept until LRS[4]
        "c": _fake("relu", jumped, [0, 0, 1, 1, 2, 3, 4], [0, 0, 1, 1, 2, 3, 4]),
        "round-off": _fake("relu", np.full(7, 2e-15), [0] * 7, [0] * 7),
        "smooth": _fake("tanh", jumped, [0, 0, 0, 1, 2, 3, 4], [0, 0, 0, 1, 2, 3, 4]),
        # never leaves, and no kink either: consistent
        "quiet": _fake("relu", 5 * LRS ** 3, [0] * 7, [0] * 7),
    }
    table = rule_table(results)
    end, grad = "rule, sign change at the end points", "rule, kink in a gradient"
    assert table.loc[("a", 4), end] == "fails (leaves later)"
    assert table.loc[("a", 4), grad] == "holds"
    assert table.loc[("b", 4), end] == table.loc[("b", 4), grad] == "holds"
    assert table.loc[("c", 4), grad] == "fails (leaves later)"
    assert table.loc[("round-off", 4), grad] == "untestable (no h³ line)"
    assert table.loc[("smooth", 4), grad] == "n/a (no kinks)"
    assert table.loc[("quiet", 4), grad] == "holds"
    numbers = rule_numbers(table)
    assert (numbers["rule_n"], numbers["rule_untestable"]) == (4, 1)
    assert (numbers["rule_endpoint_k"], numbers["rule_kink_k"]) == (2, 3)
    assert numbers["rule_kink_failures"].startswith("c, n = 4: first at h = 0.001, leaves")
    assert numbers["rule_kink_failures"].count("n = ") == 1
    shown_table = shown(table, RULE_MISSING)
    assert shown_table.loc[("round-off", 4), "h³ line c (‖θB−θ̃‖ ≈ c·h³)"] == "none (round-off)"
    assert shown_table.loc[("quiet", 4), "leaves the h³ line at h"] == "not in the sweep"


def test_shown_rounds_to_three_figures_and_names_missing_values():
    table = pd.DataFrame({"x": [1234.5678, 2.0, math.nan], "y": ["a", "b", "c"],
                          "z": [1.23456e-7, 338425.0, 0.5]})
    out = shown(table, {"x": "none"})
    assert out["x"].tolist() == ["1.23e+03", "2", "none"]
    assert out["y"].tolist() == ["a", "b", "c"]
    assert out["z"].tolist() == ["1.23e-07", "338425", "0.5"]
    assert shown(table)["x"].iloc[2] == "n/a"


def test_kinks_count_only_points_where_a_gradient_is_taken():
    study = _study(sweep_at=[1, 2, 5])
    problem = _problem(study, Runtime(device="cpu", threads=1))
    theta0 = initial_state(problem.model)
    lr = 3.0  # large enough to move units across their kinks in one step
    kinks = problem.kinks(lr, [1, 2, 5])
    # n = 1: both compositions apply T_1 at θ_0, so no kink can enter, whatever the end point does
    assert kinks[1] == 0
    maps = sgd_maps(problem.model, loss_function(problem.data.task), problem.data.x_train,
                    problem.data.y_train, problem.schedule, lr)
    assert problem.sign_changes(1, theta0, maps[0](theta0)) > 0  # ... while θ_1 has moved some

    def crossed(state, i):
        x = problem.data.x_train[problem.schedule[i]]
        return int((_hidden_signs(problem.model, state, x)
                    != _hidden_signs(problem.model, theta0, x)).sum())

    # n = 2 by hand: forward applies T_2 at θ_1 = T_1(θ_0); backward applies T_1 at T_2(θ_0)
    assert kinks[2] == crossed(maps[0](theta0), 1) + crossed(maps[1](theta0), 0)
    assert kinks[5] >= kinks[2] > 0
    assert problem.kinks(1e-9, [1, 2, 5]) == {1: 0, 2: 0, 5: 0}


def test_helps_at_and_page_numbers(tmp_path):
    runtime = Runtime(device="cpu", threads=1, progress=False, results_dir=tmp_path)
    checks = {a: run_study(_study(activation=a), runtime) for a in ("relu", "tanh")}
    run = run_study(_study(lr_factors=[0.01, 0.1, 1.0, 2.0], sweep_at=[3, 5]), runtime)
    for result in (*checks.values(), run):
        assert all(len(s["kinks"]) == len(result["lrs"]) for s in result["sweep"].values())
    helps, hurts = helps_at(run)
    assert sorted(helps + hurts) == [3, 5]  # n = 1 (ratio undefined) is in neither
    numbers = page_numbers(checks, [run])
    key = run_key(run)
    assert key == "x2"
    s = checks["relu"]["sweep"]["5"]
    assert numbers["check_relu_n5_useful"] == useful_limit(checks["relu"]["lrs"],
                                                           s["forward_error"], s["approx_error"])
    assert numbers["check_relu_n5_useful_nh"] == pytest.approx(5 * numbers["check_relu_n5_useful"])
    assert numbers["check_slope_approx_min"] == pytest.approx(3, abs=0.1)
    low, high = numbers["check_slope_forward_min"], numbers["check_slope_forward_max"]
    assert numbers["check_slope_forward_range"] == (
        f"{low:.2f}" if round(low, 2) == round(high, 2) else f"{low:.2f} to {high:.2f}")
    assert isinstance(numbers[f"{key}_sign_changes_step1"], int)
    assert numbers[f"{key}_ratio_n3"] == run["along"]["ratio"][1]
    assert numbers[f"{key}_last_step"] == 5
    assert numbers[f"{key}_lr"] == 0.01 and numbers["check_steps"] == "5"
    assert numbers["check_step_1"] == 5 and numbers[f"{key}_sweep_step_2"] == 5
    text = numbers[f"{key}_helps_text"]
    assert all(f"{run['along']['ratio'][run['along']['step'].index(n)]:.3g} at n = {n}" in text
               for n in helps) and (helps or text == "none")
    assert numbers["rule_n"] + numbers["rule_untestable"] == 3  # ReLU sweeps: check n=5, run 3, 5
    assert numbers["studies_n"] == 3
    with pytest.raises(ValueError, match="two runs share"):
        page_numbers(checks, [run, run])
