"""Stability statistics on curves whose answers are known."""
import math

import numpy as np
import pytest

from iteration_order.stability import (MIN_TAIL_STEPS, GLOSSARY, common_tail, detrended_spread,
                                       displacement_decay, final_value, fluctuation_undefined,
                                       ratio, stability_row, tail_median, tail_std,
                                       total_variation)


def result(steps, values, total=100, acc=None, moves=None, order="forward", diverged_at=None):
    return {"config": {"steps": total, "order": order}, "recorded_steps": list(steps),
            "train_loss": list(values), "test_loss": list(values),
            "test_acc": acc or [None] * len(steps),
            "displacement": moves or [0.0] + [1.0] * (len(steps) - 1),
            "diverged_at": diverged_at}


def test_common_tail_keeps_shared_steps_in_the_last_fraction():
    a = result(list(range(0, 101)), [1.0] * 101)
    b = result(list(range(0, 101, 10)), [1.0] * 11)
    assert common_tail(a, b, 0.25) == [80, 90, 100]
    with pytest.raises(ValueError, match=r"tail must be in \(0, 1\]"):
        common_tail(a, b, 0)


# A loss still descending through the tail window, ln L(n) = ln(0.05 + 2 e^{-n/200}) (it falls by
# 0.55 in ln over steps 600-800), times log-normal noise: forward's σ = 0.05, the other order's
# σ = 0.015, a noise ratio of 0.3. Forward is recorded at every step, the other at every 5th, so
# they share the 41 steps 600, 605, ..., 800.
TOTAL, SIGMA_FWD, SIGMA_OTHER = 800, 0.05, 0.015


def trend(steps):
    return np.log(0.05 + 2 * np.exp(-np.asarray(steps, dtype=float) / 200))


def noisy(steps, sigma, rng, order):
    return result(steps, np.exp(trend(steps) + sigma * rng.standard_normal(len(steps))),
                  total=TOTAL, order=order)


def test_spread_recovers_the_noise_ratio_where_raw_std_measures_the_trend():
    spreads, raw = [], []
    for noise_seed in range(5):
        rng = np.random.default_rng(noise_seed)
        forward = noisy(range(TOTAL + 1), SIGMA_FWD, rng, "forward")
        other = noisy(range(0, TOTAL + 1, 5), SIGMA_OTHER, rng, "backward")
        steps = common_tail(forward, other, 0.25)
        assert len(steps) == 41
        f, o = detrended_spread(forward, "train_loss", steps), detrended_spread(other, "train_loss", steps)
        # each spread estimates its σ; with 38 degrees of freedom its relative standard error is
        # 1/√76 ≈ 11.5%, so 35% is three standard errors
        assert f == pytest.approx(SIGMA_FWD, rel=0.35) and o == pytest.approx(SIGMA_OTHER, rel=0.35)
        spreads.append(o / f)
        raw.append(tail_std(other, "train_loss", steps) / tail_std(forward, "train_loss", steps))
    # the log of a ratio of two such estimates has a standard error of about 0.16, so the
    # geometric mean of five has one of about 0.07: 20% is close to three of them
    assert math.exp(np.mean(np.log(spreads))) == pytest.approx(0.3, rel=0.2)
    # the plain standard deviation sees mostly the shared descent: its ratio is near 1, not 0.3
    assert min(raw) > 0.8


def test_a_pure_trend_has_next_to_no_spread_and_only_its_net_change_as_variation():
    steps = list(range(600, 801, 5))
    smooth = result(steps, np.exp(trend(steps)), total=TOTAL)
    # the quadratic follows the curve to 1e-4 in ln: under 1% of the smaller noise above
    assert detrended_spread(smooth, "train_loss", steps) < 0.01 * SIGMA_OTHER
    # a monotone curve's total variation is its net change over the steps covered
    net = (trend(steps)[0] - trend(steps)[-1]) / 200
    assert total_variation(smooth, "train_loss", steps) == pytest.approx(net)
    assert tail_std(smooth, "train_loss", steps) > 0.01  # what the plain std would call noise


def test_fluctuation_needs_thirty_shared_tail_steps_and_says_why():
    rng = np.random.default_rng(0)
    curve = result(range(100), np.exp(0.1 * rng.standard_normal(100)))
    assert MIN_TAIL_STEPS == 30
    few, enough = list(range(29)), list(range(30))
    assert math.isnan(detrended_spread(curve, "train_loss", few))
    assert math.isnan(total_variation(curve, "train_loss", few))
    assert detrended_spread(curve, "train_loss", enough) > 0
    assert fluctuation_undefined(few) == "only 29 shared tail steps, 30 needed"
    assert fluctuation_undefined(enough) == ""


def test_alternating_curve_statistics_on_the_log_scale():
    steps = list(range(40))
    r = result(steps, [1.0, math.e] * 20)  # ln alternates 0, 1
    assert total_variation(r, "train_loss", steps) == pytest.approx(39 / 39)
    # about its fit (the fitted quadratic is close to the mean 0.5) every residual is ≈ ±0.5
    assert detrended_spread(r, "train_loss", steps) == pytest.approx(0.5, rel=0.05)
    assert tail_median(r, "train_loss", steps) == pytest.approx((1 + math.e) / 2)
    assert math.isnan(tail_std(r, "train_loss", [2]))
    # a non-positive loss has no logarithm: no statistic rather than a wrong one
    assert math.isnan(detrended_spread(result(steps, [0.0] * 40), "train_loss", steps))


def test_row_compares_a_noisy_forward_with_a_flat_other_order():
    steps = list(range(0, 101))
    forward = result(steps, [1.0 + (i % 2) for i in steps], acc=[0.5] * 101)
    flat = result(steps, [1.2] * 101, acc=[0.6] * 101, order="backward")
    row = stability_row(forward, flat, tail=0.5)
    assert row["tail steps"] == 51 and row["diverged"] == "" and row["undefined because"] == ""
    assert math.isnan(row["diverged fwd"]) and math.isnan(row["diverged other"])
    assert row["train_loss spread other"] < 1e-12 and row["train_loss spread ratio"] < 1e-12
    assert row["train_loss tv fwd"] == pytest.approx(math.log(2))
    assert row["train_loss median other"] == 1.2 and row["test_acc median other"] == 0.6
    assert set(GLOSSARY) >= {"spread", "tv", "ratio", "diverged", "undefined because"}


def test_short_tails_give_rows_that_say_they_cannot_test():
    steps = list(range(0, 101, 5))  # 11 shared steps in the last half
    row = stability_row(result(steps, [1.0, 2.0] * 10 + [1.0]),
                        result(steps, [1.0] * 21, order="backward"), tail=0.5)
    assert row["undefined because"] == "only 11 shared tail steps, 30 needed"
    assert all(math.isnan(row[f"train_loss {s} {w}"]) for s in ("spread", "tv")
               for w in ("fwd", "other", "ratio"))
    assert row["train_loss median fwd"] == 1.0  # a level needs no minimum


def test_a_diverged_run_is_named_and_leaves_no_statistics():
    steps = list(range(0, 101))
    values = [1.0] * 41 + [math.nan]
    forward = result(steps[:42], values, acc=[0.5] * 42, diverged_at=41)
    backward = result(steps, [1.0] * 101, acc=[0.5] * 101, order="backward")
    row = stability_row(forward, backward, tail=0.25)
    assert row["diverged"] == "forward at step 41" and row["undefined because"] == "diverged"
    assert row["diverged fwd"] == 41 and math.isnan(row["diverged other"])
    numbers = [k for k in row if k.endswith((" fwd", " other", " ratio")) and "diverged" not in k]
    assert numbers and all(math.isnan(row[k]) for k in numbers)
    both = stability_row(forward, dict(backward, diverged_at=7), tail=0.25)
    assert both["diverged"] == "forward at step 41, backward at step 7"


def test_displacement_decay_separates_converging_from_wandering_iterates():
    steps = list(range(0, 101, 4))
    shrinking = result(steps, [1.0] * len(steps), moves=[0.0] + [0.9 ** n for n in steps[1:]])
    wandering = result(steps, [1.0] * len(steps))  # steps of constant size
    # late window (75, 100]: steps 76..100, median 0.9^88; early (25, 50]: steps 28..48, whose
    # median is the mean of the middle two, 0.9^36 and 0.9^40
    assert displacement_decay(shrinking) == pytest.approx(0.9 ** 88 / ((0.9 ** 36 + 0.9 ** 40) / 2))
    assert displacement_decay(wandering) == 1.0
    sparse = result([0, 100], [1.0, 1.0], moves=[0.0, 1.0])  # nothing in the early window
    assert math.isnan(displacement_decay(sparse))


def test_row_has_fluctuation_level_and_convergence_for_classification():
    steps = list(range(0, 101, 2))
    acc = [0.5 + 0.1 * (i % 2) for i in range(len(steps))]
    forward = result(steps, [1.0] * len(steps), acc=acc)
    smooth = result(steps, [1.0] * len(steps), acc=[0.55] * len(steps),
                    moves=[0.0] + [0.5 ** i for i in range(1, len(steps))], order="backward")
    row = stability_row(forward, smooth, tail=0.6)  # steps 40..100: 31 shared
    assert row["tail steps"] == 31
    assert row["test_acc tv fwd"] == pytest.approx(0.1 * 30 / 60)  # 30 jumps of 0.1 over 60 steps
    assert row["test_acc spread ratio"] < 1e-12 and row["test_acc final other"] == 0.55
    assert row["test_acc final fwd"] == pytest.approx(0.5)
    assert math.isnan(row["train_loss spread ratio"])  # a flat forward curve gives no ratio
    # moves 0.5^(n/2): medians 0.5^44 (steps 76-100) over 0.5^19 (steps 26-50)
    assert row["displacement decay fwd"] == 1.0
    assert row["displacement decay other"] == pytest.approx(0.5 ** 25)


def test_regression_rows_have_no_accuracy_and_helpers_handle_missing_values():
    steps = list(range(0, 101, 2))
    row = stability_row(result(steps, [1.0, 2.0] * 25 + [1.0]), result(steps, [1.0] * 51))
    assert not [k for k in row if k.startswith("test_acc")]
    assert math.isnan(final_value(result(steps, [0.0] * 51), "test_acc"))
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0)) and ratio(1.0, 2.0) == 0.5
