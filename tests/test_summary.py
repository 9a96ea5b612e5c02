"""The cross-page summary: per-seed claim ratios and their paired bootstrap interval."""
import math

import numpy as np
import pandas as pd
import pytest

from iteration_order.book.summary import (SummaryConfig, claim_ratios, claims_table, page_experiment,
                                     paired_bootstrap)
from iteration_order.trajectory import Runtime


def rng():
    return np.random.default_rng(0)


def test_bootstrap_of_identical_ratios_is_that_ratio():
    centre, low, high = paired_bootstrap([0.5] * 5, 1000, 0.95, rng())
    assert (centre, low, high) == pytest.approx((0.5, 0.5, 0.5))


def test_bootstrap_is_a_geometric_mean_with_an_interval_inside_the_range():
    centre, low, high = paired_bootstrap([0.25, 1.0, 4.0], 5000, 0.9, rng())
    assert centre == pytest.approx(1.0)
    assert 0.25 <= low < 1.0 < high <= 4.0
    # resampling three seeds: all three 0.25 has probability 1/27 < 5%, two 0.25 and one 1.0 has
    # 3/27, so the 5% quantile is the geometric mean of (0.25, 0.25, 1); the 95% one mirrors it
    assert low == pytest.approx(0.25 ** (2 / 3)) and high == pytest.approx(4 ** (2 / 3))


def test_bootstrap_drops_undefined_ratios_and_needs_two_seeds_for_an_interval():
    centre, low, high = paired_bootstrap([0.5, math.nan, math.inf, 0.0], 1000, 0.95, rng())
    assert centre == 0.5 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in paired_bootstrap([math.nan], 1000, 0.95, rng()))


def test_claim_ratios_use_the_columns_the_table_has():
    index = pd.MultiIndex.from_tuples([(0, "backward"), (1, "backward")], names=["seed", "order"])
    table = pd.DataFrame({"train_loss std fwd": [2.0, 0.0], "train_loss std other": [1.0, 1.0]},
                         index=index)
    ratios = claim_ratios(table)
    assert list(ratios.columns) == ["train loss fluctuates less (std)"]
    assert ratios.iloc[0, 0] == 0.5 and math.isnan(ratios.iloc[1, 0])  # no ratio to a flat curve


def test_bad_summary_configs_are_named():
    with pytest.raises(ValueError, match="unknown page 'nope'"):
        SummaryConfig(pages=("nope",), profile="smoke")
    with pytest.raises(ValueError, match="not a figure page"):
        SummaryConfig(pages=("theory",), profile="smoke")
    with pytest.raises(ValueError, match="resamples"):
        SummaryConfig(pages=("fig04-x2",), profile="smoke", resamples=5)
    with pytest.raises(ValueError, match="at least one page"):
        SummaryConfig(pages=(), profile="smoke")


def test_missing_trajectories_name_the_page_to_execute(tmp_path):
    with pytest.raises(ValueError, match="execute it first: python -m iteration_order.book run "
                                         "--profile smoke --only fig04-x2"):
        page_experiment("fig04-x2", "smoke", False, Runtime(results_dir=tmp_path, progress=False))
    assert not list(tmp_path.iterdir())  # nothing was trained


@pytest.mark.slow
def test_a_smoke_summary_counts_seeds_and_bounds_its_intervals(tmp_path):
    runtime = Runtime(results_dir=tmp_path, progress=False, device="cpu")
    table, tables = claims_table(SummaryConfig(pages=("fig04-x2",), profile="smoke",
                                               resamples=200, train_missing=True), runtime)
    row = table.loc[("fig04-x2", "backward", "train loss fluctuates less (std)")]
    per_seed = tables["fig04-x2"]
    ratios = per_seed["train_loss std other"] / per_seed["train_loss std fwd"]
    assert row["seeds"] == 2 and row["holds"] == int((ratios < 1).sum())
    assert row["ratio"] == pytest.approx(float(np.exp(np.log(ratios).mean())))
    assert row["low"] <= row["ratio"] <= row["high"]
    # a second call loads the cached trajectories and gives the same table
    again, _ = claims_table(SummaryConfig(pages=("fig04-x2",), profile="smoke", resamples=200),
                            runtime)
    pd.testing.assert_frame_equal(table, again)
