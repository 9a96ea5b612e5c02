"""Stability statistics on curves whose answers are known."""
import math

import numpy as np
import pytest

from iteration_order.stability import (common_tail, stability_row, tail_median, tail_std,
                                       total_variation)


def result(steps, values, total=100, acc=None):
    return {"config": {"steps": total}, "recorded_steps": steps, "train_loss": values,
            "test_loss": values, "test_acc": acc or [None] * len(steps)}


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
