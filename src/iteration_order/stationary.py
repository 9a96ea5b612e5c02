"""Theorem 2.6's method: many independent chains of i.i.d. maps in both orders, exact laws, tests.

For i.i.d. random maps T_1, T_2, ... the forward iterate θ_n = T_n∘…∘T_1(θ_0) and the backward
iterate θ^B_n = T_1∘…∘T_n(θ_0) have the same law at every n, because reversing an i.i.d. sequence
leaves its joint law unchanged. If θ^B_n converges chain by chain to a random point θ^B_∞, the law
of θ_n therefore converges to the law of θ^B_∞. This module gives what a many-chain comparison of
the two laws needs, on three problems whose maps are i.i.d.:

* ``quadratic`` — Sec. 3.1: T(θ) = (1−h)θ + hε with ε ~ N(0, σ²); the stationary law is
  N(0, h²σ²/(1 − (1−h)²)) and the forward law at step n is known in closed form too.
* ``regression`` — mini-batch SGD on least squares (as `theory.linear_regression`), except that each
  step picks one of K fixed batches uniformly at random, independently of the other steps, so the
  maps are i.i.d. as the theorem requires; the stationary mean and covariance are then exact
  finite averages over the K maps (`regression_moments`).
* ``network`` — one tanh unit θ = (w, b, v) ↦ v·tanh(wx + b) fitted to noisy samples of a teacher of
  the same form, batches chosen as for the regression; per-chain gradients by ``torch.func.vmap``,
  so that compositions can be left to the order engine `iterates`.

Backward iterates of affine maps T_i(θ) = A_iθ + b_i cost O(n) instead of O(n²): with
P_n = A_1⋯A_n and S_n = Σ_i P_{i−1}b_i, θ^B_n = P_nθ_0 + S_n, and the exact increment is
θ^B_n − θ^B_{n−1} = P_{n−1}(T_n(θ_0) − θ_0). `affine_chains` runs both orders this way; the tests
check it against the engine's backward iterates.

Independent replicates of a test (new seeds for the maps and the chains) are summarised by
`rejection_summary`: the number of rejections against the number the level allows, with the exact
binomial tail `binomial_tail`.

Libraries: ``scipy.stats.ks_2samp`` (per coordinate with ``axis=0``; scipy picks exact p-values up
to 10,000 samples and the asymptotic law above), ``scipy.stats.kstest`` against an exact law and
``scipy.stats.binom`` for the binomial tail, because they are the reference implementations;
``torch.func`` (vmap, grad, jacrev) so that the network's map is written once for one chain and
applied to all chains at once.

The page's experiment on these pieces (its config, cached runner, tables and figures) is
`iteration_order.book.stationary`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats
from torch.func import grad, jacrev, vmap

from .schedule import batch_schedule
from .seeding import generator
from .validation import check_bool, check_int, check_number

__all__ = ["affine_chains", "quadratic_draw", "quadratic_stationary_variance", "regression_maps",
           "regression_moments", "network_problem", "network_maps", "fit_rates", "ks_summary",
           "binomial_tail", "rejection_summary"]

RATE_FLOOR = 1e-13   # increments below it are float64 round-off, not dynamics (as theory.fitted_rate)


# ------------------------------------------------------------------------------------------------
# Affine maps: both orders in O(n) over a chain axis
# ------------------------------------------------------------------------------------------------

Draw = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


class _TailSpread:
    """Each chain's standard deviation over time of the iterates added (running sums of x, x²)."""

    def __init__(self):
        self.sum, self.square, self.count = 0.0, 0.0, 0

    def add(self, x: np.ndarray) -> None:
        self.sum, self.square, self.count = self.sum + x, self.square + x * x, self.count + 1

    def sd(self) -> np.ndarray:
        mean = self.sum / self.count
        return np.sqrt(np.maximum(self.square / self.count - mean * mean, 0.0))


def affine_chains(draw: Draw, theta0: np.ndarray, steps: int, chains: int,
                  rng: np.random.Generator, record: set[int], increments_at: set[int] = frozenset(),
                  tail_from: int | None = None) -> dict:
    """Forward and backward iterates of ``chains`` independent chains of i.i.d. affine maps.

    ``draw(rng, chains)`` returns step n's maps for every chain: A of shape [chains or 1, d, d] and
    b of shape [chains, d]. Returned: ``forward[n]`` and ``backward[n]`` ([chains, d]) for n in
    ``record``; ``forward_increment[n]`` = ‖θ_{n+1} − θ_n‖ and ``backward_increment[n]`` =
    ‖θ^B_{n+1} − θ^B_n‖ (exact, from P_n) for n in ``increments_at``; ``tail_sd``, each chain's
    forward spread over the steps n > ``tail_from`` (default: the second half).
    """
    theta0 = np.asarray(theta0, dtype=float)
    d = theta0.shape[0]
    tail_from = steps // 2 if tail_from is None else tail_from
    x = np.repeat(theta0[None], chains, axis=0)
    P = np.repeat(np.eye(d)[None], chains, axis=0)  # P_n = A_1 ... A_n
    S = np.zeros((chains, d))                        # S_n = Σ_{i<=n} P_{i-1} b_i
    out = {"forward": {}, "backward": {}, "forward_increment": {}, "backward_increment": {}}
    tail = _TailSpread()
    for n in range(1, steps + 1):
        A, b = draw(rng, chains)
        new = np.einsum("cij,cj->ci", A, x) + b
        if n - 1 in increments_at:  # backward: θ^B_n − θ^B_{n-1} = P_{n-1}(T_n(θ_0) − θ_0)
            out["forward_increment"][n - 1] = np.linalg.norm(new - x, axis=1)
            moved = np.einsum("cij,j->ci", A, theta0) + b - theta0
            out["backward_increment"][n - 1] = np.linalg.norm(
                np.einsum("cij,cj->ci", P, moved), axis=1)
        S = S + np.einsum("cij,cj->ci", P, b)
        P = P @ A
        x = new
        if n in record:
            out["forward"][n] = x.copy()
            out["backward"][n] = P @ theta0 + S
        if n > tail_from:
            tail.add(x)
    out["tail_sd"] = tail.sd() if tail.count else np.full((chains, d), np.nan)
    return out


def quadratic_draw(h: float, noise: float) -> Draw:
    """Sec. 3.1's maps T(θ) = (1−h)θ + hε, ε ~ N(0, noise²), as (A, b) for one step of all chains."""
    A = np.full((1, 1, 1), 1.0 - h)
    return lambda rng, chains: (A, h * rng.normal(0.0, noise, size=(chains, 1)))


def quadratic_stationary_variance(h: float, noise: float) -> float:
    """Var θ_∞ = h²σ² Σ_i (1−h)^{2i} = h²σ²/(1 − (1−h)²)."""
    return h * h * noise * noise / (1.0 - (1.0 - h) ** 2)


def regression_maps(points: int, dim: int, batch: int, h: float, rng: np.random.Generator) -> dict:
    """The K = points // batch SGD maps of least squares on one fixed partition into batches.

    T_k(θ) = θ − h·X_kᵀ(X_kθ − y_k)/batch = A_kθ + b_k. Raises ValueError unless every A_k is a
    contraction (k = max_k ‖A_k‖ < 1), the hypothesis of Theorem 2.2.
    """
    X = rng.normal(size=(points, dim))
    y = X @ rng.normal(size=dim) + 0.5 * rng.normal(size=points)
    K = points // batch
    rows = rng.permutation(points)[: K * batch].reshape(K, batch)
    Xb, yb = X[rows], y[rows]
    A = np.eye(dim)[None] - h * np.einsum("kbi,kbj->kij", Xb, Xb) / batch
    b = h * np.einsum("kbi,kb->ki", Xb, yb) / batch
    k = float(np.abs(np.linalg.eigvalsh(A)).max())
    if k >= 1:
        raise ValueError(f"regression_h={h} does not make every batch map a contraction "
                         f"(max_k ||A_k|| = {k:.4f} >= 1); take a smaller h or a larger batch")
    return {"A": A, "b": b, "k": k}


def regression_moments(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the stationary law when each step picks one (A_k, b_k) uniformly.

    θ' = Aθ + b with (A, b) independent of θ gives m = E[A]m + E[b] and, for M = E[θθᵀ],
    M = E[AMAᵀ + Am bᵀ + b mᵀAᵀ + bbᵀ], a linear system in M (vec(AMAᵀ) = (A⊗A)vec(M)).
    """
    d = A.shape[1]
    m = np.linalg.solve(np.eye(d) - A.mean(0), b.mean(0))
    Am = A @ m
    rhs = (np.einsum("ki,kj->ij", Am, b) + np.einsum("ki,kj->ij", b, Am)
           + np.einsum("ki,kj->ij", b, b)) / len(A)
    kron = np.mean([np.kron(a, a) for a in A], axis=0)
    M = np.linalg.solve(np.eye(d * d) - kron, rhs.ravel()).reshape(d, d)
    return m, M - np.outer(m, m)


def _regression_draw(A: np.ndarray, b: np.ndarray) -> Draw:
    def draw(rng, chains):
        pick = rng.integers(len(A), size=chains)
        return A[pick], b[pick]
    return draw


# ------------------------------------------------------------------------------------------------
# The network: one tanh unit, many chains through vmap and the order engine
# ------------------------------------------------------------------------------------------------

def _tanh_unit(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return theta[2] * torch.tanh(theta[0] * x + theta[1])


def _batch_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((_tanh_unit(theta, x) - y) ** 2).mean()


_per_chain_grad = vmap(grad(_batch_loss))
# Reverse over reverse: torch.func.hessian (forward over reverse) would load torch's deprecated
# TorchScript JVP decompositions, and three parameters make either mode cheap.
_per_chain_hessian = vmap(jacrev(grad(_batch_loss)), in_dims=(0, None, None))


def network_problem(points: int, span: float, teacher, noise: float, batch: int, seed: int,
                    device: str | torch.device = "cpu") -> dict:
    """``points`` inputs evenly spaced on [−span, span], labelled by the teacher v·tanh(wx + b)
    (``teacher`` = (w, b, v)) plus N(0, noise²) noise, and cut once into K = points // batch fixed
    batches ``x[k], y[k]`` (one epoch of `batch_schedule`)."""
    x = torch.linspace(-span, span, points, dtype=torch.float64)
    y = _tanh_unit(torch.tensor(teacher, dtype=torch.float64), x) + noise * torch.randn(
        points, generator=generator(seed, "network-data"), dtype=torch.float64)
    rows = batch_schedule(points, batch, points // batch, generator(seed, "network-batches"))
    return {"x": x[rows].to(device), "y": y[rows].to(device)}


def network_maps(problem: dict, choices: torch.Tensor, h: float) -> list:
    """Map i moves every chain c by one SGD step on batch ``choices[i, c]`` (pure: returns anew)."""
    def step(i: int, theta: torch.Tensor) -> torch.Tensor:
        pick = choices[i]
        return theta - h * _per_chain_grad(theta, problem["x"][pick], problem["y"][pick])
    return [lambda theta, i=i: step(i, theta) for i in range(len(choices))]


def _network_contraction(problem: dict, points: torch.Tensor, h: float) -> float:
    """max over batches and over the given points of ‖I − hH_k(θ)‖: the local contraction factor
    of the batch maps (their Jacobian is I − hH_k), which is below 1 only near the minimum."""
    worst = 0.0
    for xk, yk in zip(problem["x"], problem["y"]):
        eig = torch.linalg.eigvalsh(_per_chain_hessian(points, xk, yk))
        worst = max(worst, float((1 - h * eig).abs().max()))
    return worst


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------

def fit_rates(steps: list[int], increments: np.ndarray, floor: float = RATE_FLOOR) -> np.ndarray:
    """Per chain, k̂ = exp(slope) of log increment against n, over the steps where it exceeds floor.

    ``increments`` is [len(steps), chains]; chains with fewer than 3 usable steps give NaN.
    """
    n = np.asarray(steps, dtype=float)
    rates = np.full(increments.shape[1], np.nan)
    for c, column in enumerate(increments.T):  # a few dozen points per chain: cheap
        keep = column > floor
        if keep.sum() >= 3:
            rates[c] = np.exp(np.polyfit(n[keep], np.log(column[keep]), 1)[0])
    return rates


def ks_summary(label: str, first: np.ndarray, second, alpha: float) -> dict:
    """Per-coordinate KS test of sample ``first`` [chains, d] against a sample or a list of CDFs.

    The verdict rejects equality when the smallest p-value is below alpha / d (Bonferroni).
    """
    if callable(second):
        tests = [stats.kstest(first[:, j], second) for j in range(first.shape[1])]
        D = np.array([r.statistic for r in tests])
        p = np.array([r.pvalue for r in tests])
    else:
        result = stats.ks_2samp(first, second, axis=0)
        D, p = np.atleast_1d(result.statistic), np.atleast_1d(result.pvalue)
    return {"comparison": label, "D": D.tolist(), "p": p.tolist(),
            "rejected": bool(p.min() < alpha / len(p))}


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the chance of k or more rejections among n independent
    tests at level p when every null hypothesis holds.

    A test that rejects a true null with probability at most p (a Bonferroni-corrected test, a
    discrete one such as KS) gives a tail at most this, so the value is a valid p-value for "the
    rejections are more frequent than the level allows".
    """
    check_int("n (independent tests)", n, 1)
    check_int(f"k (rejections, 0..n = {n})", k, 0, n)
    check_number("p (the level)", p, 0, 1, low_open=True, high_open=True)
    return 1.0 if k == 0 else float(stats.binom.sf(k - 1, n, p))


def rejection_summary(rejected: Sequence[bool], alpha: float) -> dict:
    """Rejections among independent replicates of one test at level ``alpha``: their count, the
    count expected when the null holds (replicates × alpha) and `binomial_tail` of the count."""
    verdicts = [check_bool(f"rejected[{i}]", v) for i, v in enumerate(rejected)]
    if not verdicts:
        raise ValueError("rejected must hold at least one verdict; got none")
    count = sum(verdicts)
    return {"replicates": len(verdicts), "rejections": count,
            "expected": len(verdicts) * alpha,
            "tail_p": binomial_tail(count, len(verdicts), alpha)}
