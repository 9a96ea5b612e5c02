"""The Appendix D page's study: its variants per split, and one tiny run through table and figure."""
import dataclasses
import math

import matplotlib.pyplot as plt
import pytest

from iteration_order import Runtime
from iteration_order.book.order_average_study import (OrderAverageExperiment, correction_at_start,
                                                 lambda_label, plot_curves, summary_table)

TINY = OrderAverageExperiment(dataset="synthetic-x2", lr=0.01, batch_size=8, splits=(2, 3),
                              lambdas=(0.5, 4.0), steps=4, seeds=(0,), average_splits=(2,),
                              depth=1, width=8, record_forward="every:2")


def test_variants_follow_appendix_d1():
    h = TINY.lr
    two, three = TINY.variants(2), TINY.variants(3)
    assert list(two) == ["large", "large, lr h/c", "small", "average", "λ = ½h′²",
                         lambda_label(0.5), lambda_label(4.0)]
    assert "average" not in three  # the exact average runs for average_splits only
    assert three["large"].batch_size == 9 and two["large"].batch_size == 8  # closest multiple
    assert two["large"].lr == h and two["small"].lr == two["average"].lr == h / 2
    assert two["λ = ½h′²"].reg_lambda == pytest.approx((h / 2) ** 2 / 2)
    assert two[lambda_label(4.0)].reg_lambda == pytest.approx(4 * h * h)
    assert two[lambda_label(4.0)].lr == h and two[lambda_label(4.0)].micro_batches == 2
    assert set(TINY.configs()) == {(0, c, n) for c in (2, 3) for n in TINY.variants(c)}


@pytest.mark.parametrize("changes, message", [
    ({"splits": ()}, "need at least one split and one seed"),
    ({"average_splits": (4,)}, r"average_splits \[4\] are not among splits \(2, 3\)"),
    ({"splits": (2, 6), "average_splits": (6,)}, "micro_batches must be <= 5"),
])
def test_bad_experiments_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **changes)


def test_a_tiny_study_runs_through_its_table_and_figure(tmp_path):
    runtime = Runtime(device="cpu", threads=1, results_dir=tmp_path, progress=False)
    experiment = dataclasses.replace(TINY, splits=(2,))
    results = experiment.run(runtime=runtime)
    assert set(results) == set(experiment.configs())
    table = summary_table(experiment, results)
    assert table.loc[(0, 2, "large"), "test loss − large"] == 0
    assert table.loc[(0, 2, "small"), "lr / h"] == 0.5
    start = correction_at_start(experiment, 0, runtime)
    assert list(start.index) == [2] and math.isfinite(start.loc[2, "ratio"])
    fig = plot_curves(experiment, results, seed=0)
    assert len(fig.axes) == 3
    plt.close(fig)
