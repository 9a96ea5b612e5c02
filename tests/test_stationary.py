"""Theorem 2.6's method: every estimator against a closed form or a known law."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from iteration_order import iterates
from iteration_order import stationary as st


def recording(draw):
    """Wrap a draw so the maps it hands out can be replayed one chain at a time."""
    seen = []

    def wrapped(rng, chains):
        A, b = draw(rng, chains)
        seen.append((np.broadcast_to(A, (chains,) + A.shape[1:]).copy(), b.copy()))
        return A, b
    return wrapped, seen


def regression(dim=3, h=0.1, seed=1):
    return st.regression_maps(64, dim, 16, h, np.random.default_rng(seed))


# ---- the O(n) affine recursion ------------------------------------------------------------------

@pytest.mark.parametrize("problem", ["quadratic", "regression"])
def test_affine_recursion_equals_the_order_engine(problem):
    if problem == "quadratic":
        draw, theta0 = st.quadratic_draw(0.3, 1.0), np.array([2.0])
    else:
        maps = regression()
        draw, theta0 = st._regression_draw(maps["A"], maps["b"]), np.array([1.0, -1.0, 0.5])
    draw, seen = recording(draw)
    steps, chains = 25, 3
    out = st.affine_chains(draw, theta0, steps, chains, np.random.default_rng(0),
                           record=set(range(1, steps + 1)), increments_at=set(range(steps)))
    for c in range(chains):
        maps = [lambda x, A=A[c], b=b[c]: A @ x + b for A, b in seen]
        backward = dict(iterates(maps, theta0, "backward"))
        forward = dict(iterates(maps, theta0, "forward"))
        for n in range(1, steps + 1):
            np.testing.assert_allclose(out["backward"][n][c], backward[n], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(out["forward"][n][c], forward[n], rtol=1e-12, atol=1e-12)
        backward[0] = forward[0] = theta0
        for n in range(steps - 1):
            np.testing.assert_allclose(out["backward_increment"][n][c],
                                       np.linalg.norm(backward[n + 1] - backward[n]), rtol=1e-9,
                                       atol=1e-14)
            np.testing.assert_allclose(out["forward_increment"][n][c],
                                       np.linalg.norm(forward[n + 1] - forward[n]), rtol=1e-12)


def test_tail_spread_of_one_chain_is_its_standard_deviation_over_time():
    draw, seen = recording(st.quadratic_draw(0.5, 1.0))
    out = st.affine_chains(draw, np.zeros(1), 40, 2, np.random.default_rng(3), record={40},
                           tail_from=10)
    maps = [lambda x, A=A[1], b=b[1]: A @ x + b for A, b in seen]
    path = np.array([x for n, x in iterates(maps, np.zeros(1), "forward") if n > 10])
    np.testing.assert_allclose(out["tail_sd"][1], path.std(axis=0), rtol=1e-9)


# ---- the scalar quadratic: the stationary law is Gaussian ---------------------------------------

@pytest.fixture(scope="module")
def quadratic_chains():
    h, theta0 = 0.1, 3.0
    out = st.affine_chains(st.quadratic_draw(h, 1.0), np.array([theta0]), 300, 4000,
                           np.random.default_rng(11), record={5, 300})
    return h, theta0, out


def test_stationary_variance_closed_form():
    # h²σ² Σ (1-h)^{2i} summed numerically
    h, sigma = 0.3, 2.0
    series = h * h * sigma * sigma * sum((1 - h) ** (2 * i) for i in range(2000))
    assert st.quadratic_stationary_variance(h, sigma) == pytest.approx(series, rel=1e-12)


def test_forward_and_backward_both_follow_the_stationary_gaussian(quadratic_chains):
    h, _, out = quadratic_chains
    sd = np.sqrt(st.quadratic_stationary_variance(h, 1.0))
    for sample in (out["forward"][300][:, 0], out["backward"][300][:, 0]):
        assert stats.kstest(sample, stats.norm(0, sd).cdf).pvalue > 0.001
        assert stats.kstest(sample, stats.norm(0, 1.2 * sd).cdf).pvalue < 1e-6


def test_at_a_finite_step_both_orders_follow_the_same_known_gaussian(quadratic_chains):
    # θ_n ~ N((1-h)^n θ0, v (1 - (1-h)^{2n})) in both orders, long before convergence
    h, theta0, out = quadratic_chains
    v = st.quadratic_stationary_variance(h, 1.0)
    law = stats.norm((1 - h) ** 5 * theta0, np.sqrt(v * (1 - (1 - h) ** 10)))
    for sample in (out["forward"][5][:, 0], out["backward"][5][:, 0]):
        assert stats.kstest(sample, law.cdf).pvalue > 0.001
    stationary = stats.norm(0, np.sqrt(v))
    assert stats.kstest(out["forward"][5][:, 0], stationary.cdf).pvalue < 1e-6


def test_fitted_rate_of_the_quadratic_is_one_minus_h():
    h = 0.2
    steps = list(range(1, 120))
    out = st.affine_chains(st.quadratic_draw(h, 1.0), np.array([1.0]), 121, 200,
                           np.random.default_rng(5), record=set(), increments_at=set(steps))
    rates = st.fit_rates(steps, np.stack([out["backward_increment"][n] for n in steps]))
    assert np.median(rates) == pytest.approx(1 - h, abs=0.005)


def test_fit_rates_recovers_an_exact_geometric_sequence_and_skips_round_off():
    n = np.arange(1, 60)
    increments = np.stack([3.0 * 0.7 ** n, 0.5 * 0.95 ** n], axis=1)
    increments[40:, 0] = 0.0  # frozen in float64: must not enter the fit
    np.testing.assert_allclose(st.fit_rates(list(n), increments), [0.7, 0.95], rtol=1e-10)


# ---- mini-batch least squares: exact stationary moments ----------------------------------------

def test_regression_moments_of_a_scalar_random_walk_with_two_maps():
    # θ' = aθ ± β with probability 1/2 each: mean 0, variance β² / (1 - a²)
    a, beta = 0.6, 0.5
    A = np.full((2, 1, 1), a)
    b = np.array([[beta], [-beta]])
    mean, cov = st.regression_moments(A, b)
    assert mean[0] == pytest.approx(0.0, abs=1e-14)
    assert cov[0, 0] == pytest.approx(beta ** 2 / (1 - a * a), rel=1e-12)


def test_regression_moments_of_a_single_map_are_its_fixed_point():
    maps = regression()
    mean, cov = st.regression_moments(maps["A"][:1], maps["b"][:1])
    np.testing.assert_allclose(maps["A"][0] @ mean + maps["b"][0], mean, atol=1e-12)
    np.testing.assert_allclose(cov, 0.0, atol=1e-12)


def test_many_chain_moments_match_the_exact_stationary_moments():
    maps = regression(dim=3)
    mean, cov = st.regression_moments(maps["A"], maps["b"])
    chains = 4000
    out = st.affine_chains(st._regression_draw(maps["A"], maps["b"]), np.zeros(3), 300, chains,
                           np.random.default_rng(2), record={300})
    for sample in (out["forward"][300], out["backward"][300]):
        sd = np.sqrt(np.diag(cov))
        assert np.all(np.abs(sample.mean(0) - mean) < 4 * sd / np.sqrt(chains))
        np.testing.assert_allclose(sample.std(0), sd, rtol=0.05)


def test_regression_refuses_maps_that_are_not_contractions():
    with pytest.raises(ValueError, match="contraction"):
        regression(h=5.0)


# ---- the network ---------------------------------------------------------------------------------

def test_network_problem_cuts_the_teacher_data_into_fixed_disjoint_batches():
    problem = st.network_problem(points=30, span=2.0, teacher=(1.0, 0.5, 1.0), noise=0.0,
                                 batch=8, seed=0)
    x, y = problem["x"], problem["y"]
    assert x.shape == y.shape == (3, 8)  # K = 30 // 8 batches; the 6 left over are dropped
    assert len(set(x.flatten().tolist())) == 24  # no input used twice
    grid = torch.linspace(-2.0, 2.0, 30, dtype=torch.float64)
    assert all(torch.isclose(grid, v).any() for v in x.flatten())
    torch.testing.assert_close(y, torch.tanh(x + 0.5), rtol=0, atol=1e-15)  # noise = 0: the teacher


def test_vmapped_network_step_is_each_chain_own_sgd_step():
    problem = st.network_problem(points=32, span=2.0, teacher=(1.0, 0.5, 1.0), noise=0.05,
                                 batch=8, seed=0)
    choices = torch.tensor([[0, 3, 1]])
    theta = torch.tensor([[1.0, 0.2, 0.7], [2.0, -0.1, 0.4], [0.5, 0.5, 1.5]], dtype=torch.float64)
    moved = st.network_maps(problem, choices, 0.5)[0](theta)
    for c in range(3):
        t = theta[c].clone().requires_grad_()
        x, y = problem["x"][choices[0, c]], problem["y"][choices[0, c]]
        loss = ((t[2] * torch.tanh(t[0] * x + t[1]) - y) ** 2).mean()
        (g,) = torch.autograd.grad(loss, t)
        torch.testing.assert_close(moved[c], theta[c] - 0.5 * g, rtol=1e-12, atol=1e-14)


# ---- the KS summary ------------------------------------------------------------------------------

def test_the_study_rejects_laws_that_differ_and_bonferroni_counts_coordinates():
    rng = np.random.default_rng(0)
    same = st.ks_summary("same", rng.normal(size=(500, 3)), rng.normal(size=(500, 3)), 0.05)
    shifted = rng.normal(size=(500, 3))
    shifted[:, 2] += 0.5
    differ = st.ks_summary("differ", shifted, rng.normal(size=(500, 3)), 0.05)
    assert not same["rejected"] and differ["rejected"]
    assert len(differ["p"]) == 3 and min(differ["p"]) == differ["p"][2]


# ---- replicates: rejections against the level ----------------------------------------------------

def test_binomial_tail_matches_a_sum_over_the_binomial_law():
    # P(X >= 2) for X ~ Binomial(3, 0.1): 3·0.1²·0.9 + 0.1³ = 0.028
    assert st.binomial_tail(2, 3, 0.1) == pytest.approx(0.028, rel=1e-12)
    assert st.binomial_tail(0, 3, 0.1) == 1.0
    assert st.binomial_tail(3, 3, 0.1) == pytest.approx(1e-3, rel=1e-12)
    n, p = 7, 0.3
    for k in range(n + 1):
        by_hand = sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))
        assert st.binomial_tail(k, n, p) == pytest.approx(by_hand, rel=1e-12)


def test_rejection_summary_counts_rejections_against_the_level():
    summary = st.rejection_summary([True, False, True], 0.1)
    assert summary["replicates"] == 3 and summary["rejections"] == 2
    assert summary["expected"] == pytest.approx(0.3)
    assert summary["tail_p"] == pytest.approx(0.028, rel=1e-12)
    assert st.rejection_summary([False] * 5, 0.05)["tail_p"] == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: st.binomial_tail(4, 3, 0.1), "k \\(rejections, 0..n = 3\\)"),
    (lambda: st.binomial_tail(-1, 3, 0.1), "k \\(rejections"),
    (lambda: st.binomial_tail(1, 0, 0.1), "n \\(independent tests\\)"),
    (lambda: st.binomial_tail(1, 3, 0.0), "p \\(the level\\)"),
    (lambda: st.binomial_tail(1, 3, 1.0), "p \\(the level\\)"),
    (lambda: st.rejection_summary([], 0.05), "at least one verdict"),
    (lambda: st.rejection_summary([True, 1], 0.05), "rejected\\[1\\]"),
])
def test_replicate_statistics_refuse_bad_input_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()
