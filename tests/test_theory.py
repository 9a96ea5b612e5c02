"""The theory page's measurements: increments, fitted rate, round-off step, closed-form gaps, the
numbers its conclusion quotes and the captions of its figures."""
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from iteration_order.book import contraction as theory  # noqa: E402

SETTINGS = dict(constant_steps=30, quadratic_h=0.1, quadratic_steps=100, quadratic_theta0=3.0,
                noise_std=1.0, linear_dim=4, linear_h=0.2, linear_steps=100,
                regression_points=200, regression_dim=3, regression_batch=8, regression_h=0.1,
                regression_steps=120, seed=0)


def geometric(k: float, steps: int, start: float = 1.0) -> np.ndarray:
    """x_n with increments x_{n+1} - x_n = start * k^n exactly."""
    return np.concatenate([[0.0], np.cumsum(start * k ** np.arange(steps))])


def test_increments_are_norms_of_consecutive_differences():
    vectors = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]])
    assert theory.increments(vectors) == pytest.approx([5.0, 1.0])
    assert theory.increments(np.array([1.0, -1.0, -1.5])) == pytest.approx([2.0, 0.5])


def test_fitted_rate_recovers_the_rate_and_ignores_round_off():
    assert theory.fitted_rate(geometric(0.8, 60)) == pytest.approx(0.8, rel=1e-9)
    # increments below the floor are left out: a flat tail of round-off does not bend the fit
    noisy = np.concatenate([geometric(0.7, 40), np.full(40, geometric(0.7, 40)[-1])])
    assert theory.fitted_rate(noisy, floor=1e-13) == pytest.approx(0.7, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 increments above floor=1"):
        theory.fitted_rate(np.zeros(10), floor=1.0)


def test_roundoff_step_is_the_first_step_whose_increment_is_at_most_the_floor():
    x = geometric(0.1, 20)  # increments 1, 0.1, ..., 1e-19: the 14th (1e-13) is the first
    assert theory.roundoff_step(x, floor=1e-13) == 14
    assert theory.roundoff_step(geometric(0.9, 20)) is None


def test_increment_decay_is_late_over_early_median():
    assert theory.increment_decay(np.arange(41.0)) == pytest.approx(1.0)  # equal steps
    # 40 increments 0.9^n: the last quarter's median over the second quarter's is 0.9^20
    assert theory.increment_decay(geometric(0.9, 40)) == pytest.approx(0.9 ** 20)
    with pytest.raises(ValueError, match="at least 4 increments; got 2"):
        theory.increment_decay(np.arange(3.0))


def test_closed_forms_match_the_engine_and_only_examples_with_one_have_gaps():
    quadratic = theory.scalar_quadratic(0.1, 80, 3.0, 1.0, seed=1)
    gaps = theory.closed_form_gaps(quadratic)
    assert set(gaps) == {"forward", "backward"} and max(gaps.values()) < 1e-12
    broken = {**quadratic, "closed_backward": quadratic["closed_backward"] + 1e-6}
    assert theory.closed_form_gaps(broken)["backward"] == pytest.approx(1e-6, rel=1e-3)
    assert theory.closed_form_gaps(theory.linear_regression(100, 3, 8, 0.1, 20, 0)) == {}


@pytest.fixture(scope="module")
def page():
    constant = theory.constant_maps(SETTINGS["constant_steps"], SETTINGS["seed"])
    examples = {
        "quadratic": theory.scalar_quadratic(0.1, 100, 3.0, 1.0, 0),
        "linear": theory.linearised_minimum(4, 0.2, 100, 1.0, 0),
        "regression": theory.linear_regression(200, 3, 8, 0.1, 120, 0)}
    return constant, examples


def test_theory_numbers_measure_what_the_conclusion_says(page):
    constant, examples = page
    numbers = theory.theory_numbers(SETTINGS, constant, examples)
    assert numbers["quadratic_h"] == 0.1 and numbers["constant_steps"] == 30  # settings glued
    first = constant["first"]
    assert numbers["constant_first"] == first
    assert numbers["constant_backward_at_first"] == 30  # every backward iterate is T_1's value
    assert numbers["constant_forward_changes"] == int((np.diff(constant["forward"]) != 0).sum())
    assert 0 < numbers["constant_forward_changes"] < 30
    assert numbers["closed_gap_max"] < 1e-12
    decade = math.floor(math.log10(numbers["closed_gap_max"])) + 1
    assert numbers["closed_gap_below"] == f"1e{decade}"
    assert numbers["quadratic_k"] == pytest.approx(0.9)
    assert numbers["quadratic_rate"] == pytest.approx(0.9, abs=0.02)
    assert numbers["quadratic_rate_gap_pct"] == pytest.approx(
        100 * abs(numbers["quadratic_rate"] - 0.9) / 0.9)
    assert numbers["linear_roundoff_step"] == "never"  # 100 steps at 0.9 stay above 1e-13
    # forward keeps stepping at the size of the noise: its decay stays near 1, not near 0
    assert 0.5 < numbers["quadratic_forward_decay"] < 2
    # the theorem's worst-case constant is a bound: the measured rate is below it
    assert numbers["regression_rate"] < numbers["regression_k"] < 1
    with pytest.raises(ValueError, match=r"unknown examples \['cubic'\]"):
        theory.theory_numbers(SETTINGS, constant, {"cubic": examples["quadratic"]})


def test_rates_table_rounds_and_says_where_there_is_no_closed_form(page):
    _, examples = page
    table = theory.rates_table(examples)
    assert list(table.index) == [theory.EXAMPLES[k][0] for k in examples]
    regression = table.loc[theory.EXAMPLES["regression"][0]]
    assert regression["closed form: largest gap, forward"] == "n/a"
    assert table.loc[theory.EXAMPLES["quadratic"][0], "closed form: largest gap, backward"] \
        .startswith("< 1e-1")
    assert table["fitted k̂"].tolist() == [round(v, 3) for v in table["fitted k̂"]]
    # long enough to reach round-off: the backward decay says so instead of dividing noise
    long = {"quadratic": theory.scalar_quadratic(0.1, 400, 3.0, 1.0, 0)}
    row = theory.rates_table(long).iloc[0]
    assert row["increment decay, backward"] == "round-off"
    reached = theory.roundoff_step(long["quadratic"]["backward"])
    assert reached is not None and row["backward increments ≤ 1e-13 from step"] == reached


def test_captions_take_sizes_from_the_settings_and_name_the_profile():
    text = theory.caption("linear", SETTINGS, "cpu")
    assert text.startswith("Not a figure of the paper")
    assert "in 4 dimensions" in text and "h = 0.2" in text and "cpu profile" in text
    assert "eigenvalues from 0.5 to 2.0" in text
    with pytest.raises(ValueError, match="unknown figure 'cubic'; figures are: constant"):
        theory.caption("cubic", SETTINGS, "cpu")


def test_figures_fit_the_text_width_with_readable_text(page):
    _, examples = page
    for fig in (theory.increments_figure(examples),
                theory.orders_figure(np.arange(5.0), np.arange(5.0), "t", "y")):
        assert fig.get_figwidth() <= 7.5
        sizes = [t.get_fontsize() for ax in fig.axes
                 for t in ax.get_xticklabels() + ax.get_yticklabels() + [ax.title]
                 if t.get_text()]
        assert sizes and min(sizes) >= 9
