"""Stability statistics on curves whose answers are known."""
import math

import numpy as np
import pytest

from iteration_order.stability import (common_tail, displacement_decay, final_value, ratio,
                                       stability_row, tail_median, tail_std, total_variation)


def result(steps, values, total=100, acc=None, moves=None):
    return {"config": {"steps": total}, "recorded_steps": steps, "train_loss": values,
            "test_loss": values, "test_acc": acc or [None] * len(steps),
            "displacement": moves or [0.0] + [1.0] * (len(steps) - 1)}


def test_common_tail_keeps_shared_steps_in_the_last_fraction():
    a = result(list(range(0, 101)), [0.0] * 101)
    b = result(list(range(0, 101, 10)), [0.0] * 11)
    assert common_tail(a, b, 0.25) == [80, 90, 100]
    with pytest.raises(ValueError, match=r"tail must be in \(0, 1\]"):
        common_tail(a, b, 0)


def test_std_median_and_variation_of_an_alternating_curve():
    steps = [0, 1, 2, 3, 4]
    r = result(steps, [1.0, 3.0, 1.0, 3.0, 1.0])
    assert tail_std(r, "train_loss", steps) == pytest.approx(np.std([1, 3, 1, 3, 1], ddof=1))
    assert tail_median(r, "train_loss", steps) == 1.0
    assert total_variation(r, "train_loss", steps) == pytest.approx(8 / 4)
    assert math.isnan(tail_std(r, "train_loss", [2]))


def test_row_compares_a_noisy_forward_with_a_flat_other_order():
    steps = list(range(0, 101, 5))
    forward = result(steps, [1.0 + (i % 2) for i in range(len(steps))], acc=[0.5] * len(steps))
    flat = result(steps, [1.2] * len(steps), acc=[0.6] * len(steps))
    row = stability_row(forward, flat, tail=0.5)
    assert row["tail steps"] == 11
    assert row["train_loss std other"] < 1e-12 and row["train_loss std ratio"] < 1e-12
    assert row["train_loss median other"] == 1.2 and row["test_acc median other"] == 0.6


def test_displacement_decay_separates_converging_from_wandering_iterates():
    steps = list(range(0, 101, 4))
    shrinking = result(steps, [0.0] * len(steps), moves=[0.0] + [0.9 ** n for n in steps[1:]])
    wandering = result(steps, [0.0] * len(steps))  # steps of constant size
    # late window (75, 100]: steps 76..100, median 0.9^88; early (25, 50]: steps 28..48, whose
    # median is the mean of the middle two, 0.9^36 and 0.9^40
    assert displacement_decay(shrinking) == pytest.approx(0.9 ** 88 / ((0.9 ** 36 + 0.9 ** 40) / 2))
    assert displacement_decay(wandering) == 1.0
    sparse = result([0, 100], [0.0, 0.0], moves=[0.0, 1.0])  # nothing in the early window
    assert math.isnan(displacement_decay(sparse))


def test_row_has_fluctuation_level_and_convergence_for_classification():
    steps = list(range(0, 101, 10))
    acc = [0.5 + 0.1 * (i % 2) for i in range(len(steps))]
    forward = result(steps, [1.0] * len(steps), acc=acc)
    smooth = result(steps, [1.0] * len(steps), acc=[0.55] * len(steps),
                    moves=[0.0] + [0.5 ** i for i in range(1, len(steps))])
    row = stability_row(forward, smooth, tail=0.5)
    assert row["test_acc tv fwd"] == pytest.approx(0.1 * 5 / 50)  # five jumps of 0.1 over 50 steps
    assert row["test_acc std ratio"] < 1e-12 and row["test_acc final other"] == 0.55
    assert row["test_acc final fwd"] == pytest.approx(0.5)
    assert math.isnan(row["train_loss std ratio"])  # a flat forward curve gives no ratio
    # medians 0.5^9 (steps 80-100) over 0.5^4 (steps 30-50)
    assert row["displacement decay fwd"] == 1.0 and row["displacement decay other"] == 0.5 ** 5


def test_regression_rows_have_no_accuracy_and_helpers_handle_missing_values():
    steps = list(range(0, 101, 10))
    row = stability_row(result(steps, [1.0, 2.0] * 5 + [1.0]), result(steps, [1.0] * 11))
    assert not [k for k in row if k.startswith("test_acc")]
    assert math.isnan(final_value(result(steps, [0.0] * 11), "test_acc"))
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0)) and ratio(1.0, 2.0) == 0.5
