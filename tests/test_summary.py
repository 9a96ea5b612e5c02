"""The cross-page summary: per-seed claim ratios, sign tests, t-intervals and diverged runs."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iteration_order.book.orders import stability_table
from iteration_order.book.summary import (CLAIMS, MIN_INTERVAL_SEEDS, SummaryConfig,
                                          claim_evidence, claim_ratios, claims_by_claim,
                                          claims_caption, claims_table, decay_table,
                                          divergence_note, page_claims, page_experiment,
                                          page_links, seed_counts_table, smallest_sign_p,
                                          spread_check, summary_numbers,
                                          t_quantile, verdicts)
from iteration_order.trajectory import Runtime


def test_identical_ratios_give_that_ratio_and_a_zero_width_interval():
    row = claim_evidence([0.5] * 5)
    assert (row["n"], row["holds"]) == (5, 5)
    assert (row["ratio"], row["low"], row["high"]) == pytest.approx((0.5, 0.5, 0.5))
    assert row["sign p"] == pytest.approx(0.0625)  # 2 * 0.5^5: the smallest five seeds can give


def test_the_interval_is_scipys_t_interval_on_the_log_ratios_and_can_leave_the_sample_range():
    ratios = [0.4, 0.5, 0.6, 0.45]
    row = claim_evidence(ratios, level=0.95)
    reference = stats.ttest_1samp(np.log(ratios), 0).confidence_interval(0.95)
    assert row["ratio"] == pytest.approx(math.exp(np.log(ratios).mean()))
    assert (row["low"], row["high"]) == pytest.approx((math.exp(reference.low),
                                                       math.exp(reference.high)))
    # unlike a percentile bootstrap, which stays inside [min, max] = [0.4, 0.6]
    assert row["low"] < 0.4 and row["high"] > 0.6
    assert claim_evidence(ratios, level=0.5)["high"] < row["high"]  # a lower level is narrower


def test_no_interval_from_three_seeds_or_fewer_and_the_row_says_why():
    assert MIN_INTERVAL_SEEDS == 4
    row = claim_evidence([0.2, 0.3, math.nan, 0.25])
    assert row["n"] == 3 and row["holds"] == 3 and row["sign p"] == pytest.approx(0.25)
    assert row["ratio"] == pytest.approx((0.2 * 0.3 * 0.25) ** (1 / 3))
    assert math.isnan(row["low"]) and math.isnan(row["high"])
    assert row["interval note"] == "no interval from 3 seeds (at least 4 needed)"
    empty = claim_evidence([math.nan, math.nan])
    assert empty["n"] == 0 and math.isnan(empty["ratio"]) and math.isnan(empty["sign p"])


def test_sign_test_counts_seeds_below_one_and_leaves_ties_out():
    assert claim_evidence([0.5, 0.6, 0.7, 0.8, 1.2])["sign p"] == pytest.approx(0.375)  # 4 of 5
    tied = claim_evidence([0.5, 1.0, 0.5])
    assert tied["holds"] == 2 and tied["sign p"] == pytest.approx(0.5)  # 2 of 2 untied
    assert claim_evidence([2.0] * 5)["holds"] == 0
    zero = claim_evidence([0.0, 0.5, 0.5, 0.5])
    assert zero["holds"] == 4 and math.isnan(zero["ratio"]) and "ratio of 0" in zero["interval note"]
    assert smallest_sign_p(5) == pytest.approx(0.0625) and smallest_sign_p(3) == pytest.approx(0.25)


def test_claim_ratios_use_the_columns_the_table_has():
    index = pd.MultiIndex.from_tuples([(0, "backward"), (1, "backward")], names=["seed", "order"])
    table = pd.DataFrame({"train_loss spread fwd": [2.0, 0.0],
                          "train_loss spread other": [1.0, 1.0]}, index=index)
    ratios = claim_ratios(table)
    assert list(ratios.columns) == ["train loss fluctuates less (detrended spread)"]
    assert ratios.iloc[0, 0] == 0.5 and math.isnan(ratios.iloc[1, 0])  # no ratio to a flat curve


def run(steps, values, order, total=200, diverged_at=None):
    n = len(steps)
    return {"config": {"steps": total, "order": order}, "recorded_steps": list(steps),
            "train_loss": list(values), "test_loss": list(values), "test_acc": [None] * n,
            "displacement": [0.0] + [1.0] * (n - 1), "diverged_at": diverged_at}


def fake_page(seeds, diverged=None, every=1):
    """Forward noisier than backward on every seed; ``diverged``: {seed: step} where forward
    diverged (its curve stops there with a NaN)."""
    experiment = SimpleNamespace(seeds=tuple(seeds), orders=("forward", "backward"), tail=0.25)
    return stability_table(experiment, fake_runs(seeds, diverged, every))


def fake_runs(seeds, diverged=None, every=1):
    """`fake_page`'s runs: a descent exp(-n/100) with noise of standard deviation 0.1 (forward)
    and 0.03 (backward) in ln(loss), so the fluctuation ratio is 0.3 by construction."""
    diverged = diverged or {}
    results = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        steps = list(range(0, 201, every))
        noise = rng.standard_normal((2, len(steps)))
        forward = np.exp(-np.asarray(steps) / 100 + 0.1 * noise[0])
        backward = np.exp(-np.asarray(steps) / 100 + 0.03 * noise[1])
        if seed in diverged:
            stop = diverged[seed]
            results[(seed, "forward")] = run(steps[:stop + 1], list(forward[:stop]) + [math.nan],
                                             "forward", diverged_at=stop)
        else:
            results[(seed, "forward")] = run(steps, forward, "forward")
        results[(seed, "backward")] = run(steps, backward, "backward")
    return results


def test_diverged_seeds_are_counted_named_and_left_out_of_the_ratios():
    table = fake_page(range(5), diverged={1: 12, 3: 40})
    assert list(table["diverged"]) == ["", "forward at step 12", "", "forward at step 40", ""]
    assert divergence_note(table, "backward") == ("2 of 5 seeds diverged (forward: seed 1 at step "
                                                  "12, seed 3 at step 40); ratios from 3 seeds")
    claims = page_claims(table)
    row = claims.loc[("backward", "train loss fluctuates less (detrended spread)")]
    assert (row["seeds"], row["diverged"], row["n"], row["holds"]) == (5, 2, 3, 3)
    assert row["undefined"] == "2 of 5 seeds: a run diverged"
    assert row["per seed"].split(", ")[1] == "n/a" and row["per seed"].split(", ")[3] == "n/a"
    lines = verdicts(claims)
    assert lines[0] == ("(backward against forward, 5 seeds): 2 of 5 seeds diverged (forward: "
                        "seed 1 at step 12, seed 3 at step 40); ratios from 3 seeds")
    assert "no interval from 3 seeds (at least 4 needed)" in lines[1]
    assert divergence_note(fake_page(range(2)), "backward") == ""
    table.loc[(1, "backward"), ["diverged", "diverged other"]] = ["forward at step 12, ...", 7.0]
    assert divergence_note(table, "backward") == (
        "2 of 5 seeds diverged (forward: seed 1 at step 12, seed 3 at step 40; backward: seed 1 "
        "at step 7); ratios from 3 seeds")


def test_a_page_with_too_few_shared_tail_steps_cannot_test_fluctuation():
    table = fake_page(range(5), every=5)  # the last quarter holds 11 shared steps
    claims = page_claims(table)
    row = claims.loc[("backward", "train loss fluctuates less (detrended spread)")]
    assert row["n"] == 0 and math.isnan(row["ratio"]) and row["per seed"] == ", ".join(["n/a"] * 5)
    assert row["undefined"] == "5 of 5 seeds: only 11 shared tail steps, 30 needed"
    lines = verdicts(claims)
    assert lines[1] == ("  train loss fluctuates less (detrended spread): cannot test (5 of 5 "
                        "seeds: only 11 shared tail steps, 30 needed)")
    assert not any("ratio" in line for line in lines if "fluctuates" in line)
    # a level needs no minimum: the tail median still has its five ratios
    assert claims.loc[("backward", "lower typical train loss (tail median)"), "n"] == 5


def test_a_page_that_can_test_gets_ratios_a_sign_test_and_an_interval():
    claims = page_claims(fake_page(range(5)))  # 51 shared tail steps
    row = claims.loc[("backward", "train loss fluctuates less (detrended spread)")]
    assert (row["n"], row["holds"]) == (5, 5) and row["sign p"] == pytest.approx(0.0625)
    # noise 0.03 against 0.1 in ln: each ratio near 0.3, and so the interval's centre
    assert 0.2 < row["low"] < row["ratio"] < row["high"] < 0.45
    line = verdicts(claims)[1]
    assert line.startswith("  train loss fluctuates less (detrended spread): holds for 5 of 5 "
                           "seeds (sign test p = 0.0625); ratios ")
    assert "95% t-interval 0." in line  # each bound honest with respect to 1 (numbers.py)


def test_bad_summary_configs_are_named():
    with pytest.raises(ValueError, match="unknown page 'nope'"):
        SummaryConfig(pages=("nope",), profile="smoke")
    with pytest.raises(ValueError, match="not a figure page"):
        SummaryConfig(pages=("theory",), profile="smoke")
    with pytest.raises(ValueError, match="level"):
        SummaryConfig(pages=("fig04-x2",), profile="smoke", level=1.0)
    with pytest.raises(ValueError, match="at least one page"):
        SummaryConfig(pages=(), profile="smoke")


def test_missing_trajectories_name_the_page_to_execute(tmp_path):
    with pytest.raises(ValueError, match="execute it first: python -m iteration_order.book run "
                                         "--profile smoke --only fig04-x2"):
        page_experiment("fig04-x2", "smoke", False, Runtime(results_dir=tmp_path, progress=False))
    assert not list(tmp_path.iterdir())  # nothing was trained


@pytest.mark.slow
def test_a_smoke_summary_counts_seeds_and_says_what_it_cannot_test(tmp_path):
    runtime = Runtime(results_dir=tmp_path, progress=False, device="cpu")
    table, tables = claims_table(SummaryConfig(pages=("fig04-x2",), profile="smoke",
                                               train_missing=True), runtime)
    per_seed = tables["fig04-x2"]
    decay = table.loc[("fig04-x2", "backward", "steps shrink more (displacement decay)")]
    ratios = per_seed["displacement decay other"] / per_seed["displacement decay fwd"]
    assert decay["n"] == 2 and decay["holds"] == int((ratios < 1).sum())
    assert decay["ratio"] == pytest.approx(float(np.exp(np.log(ratios).mean())))
    assert math.isnan(decay["low"])  # two seeds: no interval
    # the smoke page records too few tail steps to measure fluctuation, and says so
    spread = table.loc[("fig04-x2", "backward", "train loss fluctuates less (detrended spread)")]
    assert spread["n"] == 0 and "shared tail steps" in spread["undefined"]
    # a second call loads the cached trajectories and gives the same table
    again, _ = claims_table(SummaryConfig(pages=("fig04-x2",), profile="smoke"), runtime)
    pd.testing.assert_frame_equal(table, again)


# ------------------------------------------------------------------------------------------------
# The summary page: claims by claim, own displacement decays, the numbers its prose quotes
# ------------------------------------------------------------------------------------------------

def two_pages():
    """A page that can test fluctuation (51 shared tail steps) and one that cannot (11), with
    chosen displacement decays: backward's steps grow on 4 of 5 seeds of the first page."""
    testing, stand_in = fake_page(range(5)), fake_page(range(2), every=5)
    testing["displacement decay other"] = [1.5, 2.0, 1.2, 0.8, 1.1]
    testing["displacement decay fwd"] = [0.9, 1.0, 1.3, 0.95, 0.7]
    stand_in["displacement decay other"] = [1.4, 1.6]
    stand_in["displacement decay fwd"] = [1.0, 0.9]
    tables = {"fig04-x2": testing, "fig02-resnet18": stand_in}
    claims = pd.concat({name: page_claims(table) for name, table in tables.items()},
                       names=["page"])
    return claims, tables


def test_t_quantiles_are_the_factors_the_page_quotes():
    assert t_quantile(2) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(3) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(5, level=0.9) < t_quantile(5)
    with pytest.raises(ValueError, match="at least 2 seeds; got n=1"):
        t_quantile(1)


def test_claims_by_claim_groups_the_evidence_of_one_claim_in_page_order():
    claims, _ = two_pages()
    shown = claims_by_claim(claims)
    assert shown.index.names == ["claim", "page", "order"]
    first = list(CLAIMS)[0]
    assert list(shown.loc[first].index.get_level_values("page")) == ["fig04-x2", "fig02-resnet18"]
    assert shown.loc[(first, "fig02-resnet18", "backward"), "holds (k of n seeds)"] == "cannot test"
    assert shown.loc[(first, "fig04-x2", "backward"), "holds (k of n seeds)"] == "5 of 5"
    claims_in_order = list(dict.fromkeys(shown.index.get_level_values("claim")))
    assert claims_in_order == [c for c in CLAIMS if c in claims_in_order]


def test_decay_table_counts_the_seeds_whose_own_steps_grow():
    _, tables = two_pages()
    table = decay_table(tables)
    row = table.loc[("fig04-x2", "backward")]
    assert row["steps grow (decay > 1)"] == "4 of 5"
    assert row["decay per seed"] == "1.5, 2, 1.2, 0.8, 1.1"
    assert row["forward: steps grow"] == "1 of 5"
    assert table.loc[("fig02-resnet18", "backward"), "steps grow (decay > 1)"] == "2 of 2"


def test_summary_numbers_count_what_holds_and_what_cannot_be_tested():
    claims, tables = two_pages()
    numbers = summary_numbers(claims, tables)
    assert numbers["pages_n"] == 2 and numbers["seeds_max"] == 5
    assert numbers["sign_p_floor"] == pytest.approx(0.0625)
    assert numbers["t_quantile_3"] == pytest.approx(t_quantile(3))
    # fluctuation: the first page tests it (5 of 5), the stand-in cannot and is named as such
    assert numbers["train_spread_testable"] == 1 and numbers["train_spread_untestable"] == 1
    assert numbers["train_spread_untestable_pages"] == "fig02-resnet18"
    assert numbers["train_spread_all_seeds_pages"] == "fig04-x2"
    assert numbers["fig02_resnet18_backward_train_spread_evidence"] == "cannot test"
    assert numbers["fig02_resnet18_backward_train_spread_n"] == 0
    assert math.isnan(numbers["fig02_resnet18_backward_train_spread_gm"])
    assert numbers["fig04_x2_backward_train_spread_evidence"] == \
        "5 of 5 seeds, sign test p = 0.0625"  # exact: never rounded to 0.062
    row = claims.loc[("fig04-x2", "backward", "train loss fluctuates less (detrended spread)")]
    assert numbers["fig04_x2_backward_train_spread_gm"] == row["ratio"]
    assert numbers["train_spread_gm_min"] == numbers["train_spread_gm_max"] == row["ratio"]
    assert numbers["train_spread_interval_below_one"] == int(row["high"] < 1)
    # the tail median is a level: both pages have it, on 7 seeds together
    assert numbers["level_testable"] == 2 and numbers["level_seeds"] == 7
    # own decays: backward grows on 4 of 5 and 2 of 2 seeds; one page grows on every seed
    assert numbers["decay_backward_pages"] == 2 and numbers["decay_backward_seeds"] == 7
    assert numbers["decay_backward_above_one"] == 6
    assert numbers["decay_backward_pages_all_above"] == 1
    assert (numbers["decay_backward_min"], numbers["decay_backward_max"]) == (0.8, 2.0)
    assert numbers["decay_forward_above_one"] == 1 and numbers["decay_forward_above_110"] == 1
    assert numbers["fig04_x2_backward_decay_own_above_one"] == 4
    assert numbers["fig02_resnet18_backward_decay_fwd_max"] == 1.0


def test_a_page_decides_alone_only_below_the_level_and_in_the_claims_direction():
    claims, tables = two_pages()
    numbers = summary_numbers(claims, tables)
    # 5 of 5 seeds: p = 0.0625, not below 0.05, so no page decides alone
    assert numbers["alone_level"] == 0.05
    assert numbers["train_spread_alone"] == 0 and numbers["train_spread_alone_pages"] == "none"
    assert numbers["sign_p_floor_5"] == pytest.approx(0.0625)
    assert numbers["sign_p_floor_20"] == pytest.approx(2 * 0.5 ** 20)
    row = ("fig04-x2", "backward", "train loss fluctuates less (detrended spread)")
    more = claims.copy()
    more.loc[row, ["n", "holds", "sign p"]] = [20, 19, 4.0e-5]
    numbers = summary_numbers(more, tables)
    assert numbers["train_spread_alone"] == 1 and numbers["train_spread_alone_pages"] == "fig04-x2"
    # as small a p against the claim (1 of 20 holding) decides nothing for it
    more.loc[row, ["n", "holds", "sign p"]] = [20, 1, 4.0e-5]
    assert summary_numbers(more, tables)["train_spread_alone"] == 0


def test_page_links_point_at_the_executed_pages_with_their_sizes():
    text = page_links(["fig04-x2", "fig07-fashionmnist"], "smoke")
    lines = text.splitlines()
    assert lines[0].startswith("- {doc}`/book/fig04-x2`: forward against backward, 2 seeds")
    assert lines[1].startswith("- {doc}`/book/fig07-fashionmnist`:")
    assert "1 seed," in lines[1]  # the FashionMNIST smoke profile runs one seed


def test_the_claims_figure_is_readable_and_says_cannot_test_without_a_ratio():
    import matplotlib
    matplotlib.use("Agg")
    from iteration_order.book.plots import plot_claims

    claims, tables = two_pages()
    ratios = {name: claim_ratios(table) for name, table in tables.items()}
    shown = ["train loss fluctuates less (detrended spread)",
             "steps shrink more (displacement decay)"]
    fig = plot_claims(claims, ratios, shown)
    assert fig.get_figwidth() <= 7.5
    texts = [t for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()
             + [ax.title, ax.xaxis.label] + ax.texts if t.get_text()]
    assert texts and min(t.get_fontsize() for t in texts) >= 8
    spread, decay = fig.axes
    assert [t.get_text() for t in spread.texts] == ["cannot test"]  # the stand-in's row
    assert spread.texts[0].get_position()[1] == 1  # ... is the second row
    dots = [c for c in spread.collections if c.get_gid() == "seed"]
    assert sum(len(c.get_offsets()) for c in dots) == 5  # only the testing page's seeds
    assert not decay.texts
    assert len([c for c in decay.collections if c.get_gid() == "seed"]) == 2
    # an interval only where at least MIN_INTERVAL_SEEDS seeds have the ratio: the first page
    assert len([c for c in decay.containers]) == 1
    caption = claims_caption(claims, shown, "cpu")
    assert "2 figure pages" in caption and "'Cannot test' (1 panel rows here)" in caption
    with pytest.raises(ValueError, match="claims not in the table: \\['flies'\\]"):
        plot_claims(claims, ratios, ["flies"])


def test_a_cache_only_summary_names_the_page_instead_of_a_results_file(tmp_path):
    runtime = Runtime(results_dir=tmp_path, progress=False, cache="only")
    with pytest.raises(ValueError, match="page 'fig04-x2' has 4 trajectories not computed"):
        page_experiment("fig04-x2", "smoke", False, runtime)


def test_seed_counts_say_what_each_number_of_seeds_can_show():
    claims, _ = two_pages()
    table = seed_counts_table(claims)
    assert list(table.index) == [5, 2]
    five, two = table.loc[5], table.loc[2]
    assert five["smallest sign-test p"] == "0.0625" and five["can reach p ≤ 0.05"] == "no"
    assert five["95% t factor"] == f"{t_quantile(5):.3g}"
    assert two["95% t factor"] == "no interval (under 4 seeds)"
    # 5 claims on the first page, 2 levels (decay, median) on the stand-in
    assert (five["page-claim rows"], two["page-claim rows"]) == (5, 2)
    seven = claim_evidence([0.5] * 7)  # 2·0.5^7 < 0.05: enough seeds to reach significance
    assert seven["sign p"] < 0.05


def test_spread_check_shows_the_plain_std_measuring_the_descent():
    runs = {"fig04-x2": fake_runs(range(5)), "fig02-resnet18": fake_runs(range(2), every=5),
            "fig07-fashionmnist": fake_runs(range(3), diverged={0: 12})}
    table = spread_check(runs)
    # the stand-in has 11 shared tail steps: no row; the diverged seed is left out
    assert list(table.index) == [("fig04-x2", "backward"), ("fig07-fashionmnist", "backward")]
    assert table.loc[("fig07-fashionmnist", "backward"), "seeds"] == 2
    row = table.loc[("fig04-x2", "backward")]
    low, high = (float(v) for v in row["spread ratio (quadratic trend)"].split(" to "))
    assert 0.2 < low < high < 0.45  # the constructed 0.3
    plain = [float(v) for v in row["plain std ratio"].split(" to ")]
    assert min(plain) > 0.6  # the shared descent dominates the plain standard deviation
    assert float(row["largest change with a linear or cubic trend"]) < 0.1
    lags = [float(v) for v in row["forward's residuals: lag-one autocorrelation"].split(" to ")]
    assert all(-0.5 < v < 0.4 for v in lags)  # white noise left, no trend missed


# --- within-regime trend of the moves, train accuracy, the displayed table (issues 18, 19) ---

def moves_run(order, moves_of_step, total=200, every=4, diverged=None):
    steps = list(range(0, total + 1, every))
    return {"config": {"steps": total, "order": order}, "recorded_steps": steps,
            "displacement": [0.0] + [moves_of_step(n) for n in steps[1:]],
            "diverged_at": diverged}


def test_moves_trend_measures_growth_within_one_regime_only():
    from iteration_order.book.orders import moves_trend, regime_changes
    grow = moves_run("backward", lambda n: 0.01 * n)
    trend = moves_trend(grow)
    # medians over (150, 200] and (100, 150]: 1.76 / 1.26
    assert trend["growth"] == pytest.approx(1.76 / 1.26) and trend["rho"] == pytest.approx(1.0)
    flat = moves_trend(moves_run("forward", lambda n: 1.0 + 0.001 * (-1) ** (n // 4)))
    assert flat["growth"] == pytest.approx(1.0, abs=0.01) and abs(flat["rho"]) < 0.5
    # a reset at step 100 (<= N/2): the move from step 96 to 104 spans it and is left out
    reset = moves_run("reset:at=100", lambda n: 5.0 if n == 104 else 0.01 * n, every=8)
    assert regime_changes("reset:at=100", 200) == [100]
    assert moves_trend(reset)["rho"] == pytest.approx(1.0) and moves_trend(reset)["note"] == ""
    # a switch after N/2: the second half is two regimes, nothing is measured
    late = moves_trend(moves_run("switch:150", lambda n: 1.0))
    assert math.isnan(late["growth"]) and math.isnan(late["rho"])
    assert late["note"].startswith("undefined: the regime changes at step 150")
    assert regime_changes("reset:every=50", 200) == [50, 100, 150]
    assert math.isnan(moves_trend(moves_run("backward", lambda n: 1.0, diverged=20))["growth"])


def test_train_accuracy_gets_the_claims_statistics_and_regressions_have_none():
    from iteration_order.book.orders import CLAIM_KEYS, train_acc_columns
    runs = fake_runs(range(5))
    claim = "train accuracy fluctuates less (detrended spread)"
    assert CLAIM_KEYS[claim] == "train_acc_spread" and claim in CLAIMS
    assert train_acc_columns(runs[(0, "forward")], runs[(0, "backward")], 0.25) == {}
    for (seed, order), result in runs.items():  # an accuracy noisier under forward
        rng = np.random.default_rng(seed + (10 if order == "forward" else 0))
        noise = 0.05 if order == "forward" else 0.01
        result["train_acc"] = list(0.5 + noise * rng.standard_normal(len(result["train_loss"])))
    experiment = SimpleNamespace(seeds=tuple(range(5)), orders=("forward", "backward"), tail=0.25)
    table = stability_table(experiment, runs)
    assert {"train_acc spread ratio", "train_acc tv ratio"} <= set(table.columns)
    row = page_claims(table).loc[("backward", claim)]
    assert (row["n"], row["holds"]) == (5, 5) and row["sign p"] == pytest.approx(0.0625)
    assert 0.1 < row["ratio"] < 0.35


def test_display_table_shows_significant_figures_and_no_nan_for_not_diverged():
    from iteration_order.book.orders import display_table
    table = fake_page(range(3), diverged={1: 12})
    table["train_loss median fwd"] = [0.00016, 0.00011, 12.50]
    shown = display_table(table)
    assert list(shown["train_loss median fwd"]) == ["0.00016", "0.00011", "12.5"]
    assert list(shown["diverged fwd"]) == ["", "12", ""]
    assert list(shown["diverged other"]) == ["", "", ""]
    assert shown.loc[(1, "backward"), "train_loss spread ratio"] == "n/a"
    assert "nan" not in shown.to_string().lower()


def shared_pages():
    """Three synthetic pages as the FashionMNIST ones are: 'b' repeats 'a''s backward runs
    exactly, 'c' shares only the forward runs (a switch compared with the same forward)."""
    base = fake_runs(range(5))
    for (seed, order), result in base.items():
        result["key"] = f"{order}-{seed}"
    switch = {(s, "switch:100"): {**base[(s, "backward")], "key": f"switch-{s}",
                                  "config": {"steps": 200, "order": "switch:100"}}
              for s in range(5)}
    return {"a": dict(base), "b": dict(base),
            "c": {**{k: v for k, v in base.items() if k[1] == "forward"}, **switch}}


def test_shared_runs_are_counted_once_and_named():
    from iteration_order.book.summary import _with_shared, shared_runs
    runs = shared_pages()
    shared = shared_runs(runs)
    assert shared.loc[("b", "backward"), "same runs as"] == "a backward"
    assert shared.loc[("a", "backward"), "same runs as"] == ""
    assert shared.loc[("c", "switch:100"), "shares runs with"] == "a backward and b backward"
    experiment = SimpleNamespace(seeds=tuple(range(5)), orders=("forward", "backward"), tail=0.25)
    switch = SimpleNamespace(seeds=tuple(range(5)), orders=("forward", "switch:100"), tail=0.25)
    tables = {name: stability_table(switch if name == "c" else experiment, results)
              for name, results in runs.items()}
    claims = _with_shared(pd.concat({n: page_claims(t) for n, t in tables.items()},
                                    names=["page"]), shared)
    numbers = summary_numbers(claims, tables)
    assert numbers["comparisons_listed"] == 3 and numbers["comparisons_n"] == 2
    assert numbers["duplicate_comparisons_n"] == 1
    assert numbers["duplicate_comparisons_text"] == "b backward uses the same runs as a backward"
    assert numbers["related_comparisons_text"] == "a backward and c switch"
    assert numbers["runs_distinct"] == 15 and numbers["runs_listed"] == 30
    assert "counted once" in numbers["shared_runs_note"]
    # the repeated comparison adds no seeds: 2 comparisons of 5 seeds, not 3
    assert numbers["train_spread_seeds"] == 10 and numbers["train_spread_rows"] == 2
    assert numbers["train_spread_rows_listed"] == 3 and numbers["train_spread_duplicates"] == 1
    assert numbers["decay_backward_pages"] == 1 and numbers["decay_backward_seeds"] == 5
    assert claims_by_claim(claims).loc[
        ("train loss fluctuates less (detrended spread)", "b", "backward"),
        "same runs as"] == "a backward"
