"""The Appendix D page's study: its variants per split, and one tiny run through table and figure."""
import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from iteration_order import Runtime
from iteration_order.book.order_average import (OrderAverageExperiment, correction_at_start,
                                                 corrections_at_start, lambda_label, page_numbers,
                                                 plot_curves, summary_markdown, summary_table)

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
    # 20 steps recorded every step: 6 of them in the last quarter, enough for σ
    experiment = dataclasses.replace(TINY, splits=(2,), steps=20, record_forward="every:1")
    results = experiment.run(runtime=runtime)
    assert set(results) == set(experiment.configs())
    table = summary_table(experiment, results)
    assert table.loc[(0, 2, "large"), "test loss − large"] == 0
    assert table.loc[(0, 2, "small"), "lr / h"] == 0.5
    start = correction_at_start(experiment, 0, runtime)
    assert list(start.index) == [2] and math.isfinite(start.loc[2, "ratio"])
    fig = plot_curves(experiment, results, seeds=0)
    assert len(fig.axes) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match=r"seeds must be among the experiment's seeds \[0\]; "
                                         r"got \[1\]"):
        plot_curves(experiment, results, seeds=[1])
    numbers = page_numbers(experiment, results, corrections_at_start(experiment, runtime))
    assert numbers["sigma_steps"] == 6 and numbers["sigma_min"] > 0
    assert numbers["above_n"] + numbers["below_n"] == 3  # λ = ½h′², 0.5h², 4h²
    assert summary_markdown(numbers).startswith("**Divergences.**")


# ------------------------------------------------------------------------------------------------
# The page's summary: divergences against the load λ·c(c−1), differences against σ
# ------------------------------------------------------------------------------------------------

STEPS = 40
GRID = dataclasses.replace(TINY, lr=0.001, splits=(2, 3), lambdas=(0.5, 1.0, 2.0), steps=STEPS,
                           average_splits=(), record_forward="every:2")
WIGGLE = 0.002  # the large batch's test loss alternates ±this about a straight descent


def _curve(config, diverged_at, offset):
    """A fake run of ``config``: a straight descent plus an alternating wiggle, shifted by
    ``offset``; a diverged run stops at ``diverged_at`` with a NaN loss."""
    steps = [0] + list(range(2, STEPS + 1, 2))
    if diverged_at is not None:
        steps = steps[:steps.index(diverged_at) + 1]
    loss = [1.0 - 0.01 * n + WIGGLE * (-1) ** (n // 2) + offset for n in steps]
    if diverged_at is not None:
        loss[-1] = math.nan
    return {"config": dataclasses.asdict(config), "key": f"{config}", "recorded_steps": steps,
            "train_loss": list(loss), "test_loss": loss, "test_acc": [0.5] * len(steps),
            "diverged_at": diverged_at}


def _fake_results(experiment, diverged=None, offsets=None):
    """(seed, c, variant) -> fake run; ``diverged`` maps (c, variant) to a step, ``offsets``
    maps (c, variant) to the final test-loss difference against the large batch."""
    diverged, offsets = diverged or {}, offsets or {}
    return {key: _curve(config, diverged.get(key[1:]), offsets.get(key[1:], 0.0))
            for key, config in experiment.configs().items()}


def test_regularised_runs_sort_the_loads_against_the_threshold():
    from iteration_order.book.order_average import divergence_summary, regularised_runs

    results = _fake_results(GRID, diverged={(2, lambda_label(2.0)): 10,
                                            (3, lambda_label(1.0)): 6,
                                            (3, lambda_label(2.0)): 4})
    runs = regularised_runs(GRID, results)
    # the natural λ = h²/(2c²) and the grid; c(c−1) = 2 and 6
    assert list(runs.loc[(0, 2), "λ·c(c−1) / h²"]) == [0.25, 1.0, 2.0, 4.0]
    assert list(runs.loc[(0, 3), "λ·c(c−1) / h²"]) == pytest.approx([1 / 3, 3.0, 6.0, 12.0])
    # a load equal to the threshold (2h² at c = 2, a rounding error away in floats) is above it
    assert runs.loc[(0, 2, lambda_label(2.0)), "at or above threshold"]
    assert not runs.loc[(0, 3, lambda_label(0.5)), "at or above threshold"]
    assert runs.loc[(0, 3, lambda_label(2.0)), "diverged by step"] == 4
    assert runs.loc[(0, 2, lambda_label(0.5)), "diverged by step"] == ""
    summary = divergence_summary(GRID, results)
    assert (summary["above_n"], summary["above_diverged"]) == (3, 3)
    assert (summary["below_n"], summary["below_diverged"]) == (5, 0)
    assert summary["separates"] and summary["threshold"] == 4.0
    assert summary["trained_load_max"] == 3.0 and summary["diverged_load_min"] == 4.0
    assert summary["diverged_text"] == ("c = 2: λ = 2h² by step 10; c = 3: λ = 1h² by step 6 and "
                                        "λ = 2h² by step 4")
    # a higher threshold moves the c = 2 run at 4h² below it, where it diverged
    higher = divergence_summary(GRID, results, threshold=5.0)
    assert (higher["above_n"], higher["above_diverged"]) == (2, 2)
    assert (higher["below_n"], higher["below_diverged"]) == (6, 1) and not higher["separates"]
    with pytest.raises(ValueError, match="threshold must be a finite number > 0; got 0"):
        regularised_runs(GRID, results, threshold=0)


def test_nothing_diverged_reads_none():
    from iteration_order.book.order_average import divergence_summary

    summary = divergence_summary(GRID, _fake_results(GRID))
    assert summary["diverged_text"] == "none" and summary["above_diverged"] == 0
    assert math.isnan(summary["diverged_load_min"]) and not summary["separates"]


def test_the_fluctuation_is_the_residual_about_a_quadratic_in_the_window():
    from iteration_order.book.order_average import loss_fluctuation

    run = _curve(GRID.variants(2)["large"], None, 0.0)
    # window: steps 30..40 (6 steps); alternating ±w about a line leaves residuals of about w
    steps = [30, 32, 34, 36, 38, 40]
    values = [run["test_loss"][run["recorded_steps"].index(n)] for n in steps]
    residuals = values - np.polyval(np.polyfit(steps, values, 2), steps)
    expected = np.sqrt((residuals ** 2).sum() / 3)
    assert loss_fluctuation(run) == pytest.approx(expected, rel=1e-9)
    assert 0.5 * WIGGLE < loss_fluctuation(run) < 1.5 * WIGGLE
    # a smooth quadratic descent has no fluctuation, whatever its curvature
    smooth = {**run, "test_loss": [1 - 0.01 * n + 3e-4 * n * n for n in run["recorded_steps"]]}
    assert loss_fluctuation(smooth) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 7 recorded steps in the last 25% of training; "
                                         "the run recorded 6 there"):
        loss_fluctuation(run, min_steps=7)
    with pytest.raises(ValueError, match="diverged by step 10"):
        loss_fluctuation(_curve(GRID.variants(2)["large"], 10, 0.0))


def test_differences_are_judged_against_the_large_batch_fluctuation():
    from iteration_order.book.order_average import differences_table, loss_fluctuation

    results = _fake_results(GRID, diverged={(3, lambda_label(2.0)): 4},
                            offsets={(2, "small"): -0.1 * WIGGLE, (2, lambda_label(2.0)): 0.01})
    table = differences_table(GRID, results)
    assert "large" not in table.index.get_level_values("variant")
    assert (0, 3, lambda_label(2.0)) not in table.index  # diverged: no final loss
    sigma = loss_fluctuation(results[(0, 2, "large")])
    small = table.loc[(0, 2, "small")]
    assert small["test loss − large"] == pytest.approx(-0.1 * WIGGLE)
    assert small["|difference| / σ"] == pytest.approx(0.1 * WIGGLE / sigma)
    assert not small["beyond σ"] and table.loc[(0, 2, lambda_label(2.0)), "beyond σ"]


def test_page_numbers_and_summary_follow_the_runs():
    from iteration_order.book.order_average import page_numbers, summary_markdown

    results = _fake_results(
        GRID, diverged={(2, lambda_label(2.0)): 10, (3, lambda_label(1.0)): 6,
                        (3, lambda_label(2.0)): 4},
        offsets={(2, "large, lr h/c"): 0.3, (3, "large, lr h/c"): 0.5, (2, "small"): -0.0002,
                 (2, lambda_label(1.0)): 0.004, (3, "λ = ½h′²"): 0.0001})
    start = pd.DataFrame({"ratio": [0.26, 0.79], "ratio per pair": [0.13, 0.1317],
                          "cos(correction, ∇L_B)": [0.74, 0.75]},
                         index=pd.MultiIndex.from_tuples([(0, 2), (0, 3)], names=["seed", "c"]))
    numbers = page_numbers(GRID, results, start)
    assert numbers["batch_text"] == "8 (9 for c = 3)"
    assert numbers["correction_ratio_text"] == "0.26 and 0.79 for c = 2 and 3"
    assert numbers["threshold_ratio_max"] == pytest.approx(4 * 0.1317)
    assert numbers["load_rule"] == "λ·c(c−1) ≥ 4h²" and numbers["above_diverged"] == 3
    # the runs at second order: small, λ = ½h′² (c = 2, 3), λ = 0.5h² (c = 2, 3) and 1h² (c = 2)
    assert numbers["second_n"] == 7
    assert numbers["second_diff_min"] == pytest.approx(-0.0002)
    assert numbers["second_diff_max"] == pytest.approx(0.004)
    assert numbers["second_beyond_k"] == 1  # only 0.004 exceeds σ ≈ 0.002
    assert numbers["grid_diff_max"] == pytest.approx(0.004)
    assert numbers["natural_diff_max"] == pytest.approx(0.0001)
    assert math.isnan(numbers["average_diff_min"])  # no exact average in this experiment
    assert numbers["average_diff_text"] == "none"
    assert numbers["second_diff_text"] == "-0.0002 to +0.004"  # no trailing zeros
    assert numbers["natural_diff_text"] == "0 to +0.0001"  # never "+0.0000" or "-0.0000"
    assert numbers["slow_diff_text"] == "0.3 for c = 2 and 0.5 for c = 3"
    assert (numbers["sigma_first_step"], numbers["sigma_last_step"]) == (30, 40)
    assert numbers["sigma_steps"] == 6 and numbers["sigma_dof"] == 3
    # 0.004 against a descent of 0.01 per step: less than half a step of training
    assert numbers["second_steps_max"] == pytest.approx(0.4, rel=0.05)
    text = summary_markdown(numbers)
    assert text.startswith("**Divergences.** 3 of 3 regularised runs with λ·c(c−1) ≥ 4h² "
                           "diverged, and 0 of 5 below it")
    assert "c = 3: λ = 1h² by step 6 and λ = 2h² by step 4" in text
    assert "1 of 7 exceed σ: those below σ are not resolved" in text
    # every fake run follows the large batch's wiggles: each nonzero difference is steady
    assert numbers["paired_beyond_k"] == 3
    assert numbers["paired_beyond_text"] == "c = 2: small and λ = 1h²; c = 3: λ = ½h′²"
    assert text.index("Divergences") < text.index("Test loss against the large batch")


def test_the_caption_names_the_paper_figures_sampling_profile_and_divergences():
    from iteration_order.book.order_average import curves_caption

    results = _fake_results(GRID, diverged={(3, lambda_label(2.0)): 4})
    caption = curves_caption(GRID, results, "cpu")
    assert caption.startswith("The paper's Figures 14–19")
    assert "at the cpu profile (seed 0; rows c = 2 and 3)" in caption
    assert "every 2nd step" in caption and "all training images and all test images" in caption
    assert caption.endswith("λ = 2h² for c = 3 by step 4.")


def test_the_paired_fluctuation_cancels_shared_noise():
    from iteration_order.book.order_average import differences_table

    # a run that follows the large batch's wiggles with a constant offset has a steady
    # difference; one that wiggles against it has a difference that moves twice as much
    results = _fake_results(GRID, offsets={(2, "small"): 0.001})
    against = results[(0, 2, lambda_label(0.5))]
    against["test_loss"] = [1.0 - 0.01 * n - WIGGLE * (-1) ** (n // 2)
                            for n in against["recorded_steps"]]
    table = differences_table(GRID, results)
    assert table.loc[(0, 2, "small"), "σ of difference"] == pytest.approx(0, abs=1e-12)
    large_sigma = table.loc[(0, 2, "small"), "σ of large"]
    assert table.loc[(0, 2, lambda_label(0.5)), "σ of difference"] == pytest.approx(
        2 * large_sigma, rel=1e-6)
