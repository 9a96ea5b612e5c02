"""Theorem 2.6 measured on many independent chains: forward converges in law to the backward limit.

For i.i.d. random maps T_1, T_2, ... the forward iterate θ_n = T_n∘…∘T_1(θ_0) and the backward
iterate θ^B_n = T_1∘…∘T_n(θ_0) have the same law at every n, because reversing an i.i.d. sequence
leaves its joint law unchanged. If θ^B_n converges chain by chain to a random point θ^B_∞, the law
of θ_n therefore converges to the law of θ^B_∞. We simulate many chains, each with its own i.i.d.
map sequence, and compare the two laws with Kolmogorov–Smirnov tests on three problems:

* ``quadratic`` — Sec. 3.1: T(θ) = (1−h)θ + hε with ε ~ N(0, σ²); the stationary law is
  N(0, h²σ²/(1 − (1−h)²)) and the forward law at step n is known in closed form too.
* ``regression`` — mini-batch SGD on least squares (as `theory.linear_regression`), except that each
  step picks one of K fixed batches uniformly at random, independently of the other steps, so the
  maps are i.i.d. as the theorem requires; the stationary mean and covariance are then exact
  finite averages over the K maps (`regression_moments`).
* ``network`` — one tanh unit θ = (w, b, v) ↦ v·tanh(wx + b) fitted to noisy samples of a teacher of
  the same form, batches chosen as for the regression; per-chain gradients by ``torch.func.vmap``,
  compositions by the order engine `iterates`.

Forward and backward samples come from disjoint sets of chains (chains 0..C−1 give the forward
sample, C..2C−1 the backward one), because the two-sample test assumes independent samples.

Backward iterates of affine maps T_i(θ) = A_iθ + b_i cost O(n) instead of O(n²): with
P_n = A_1⋯A_n and S_n = Σ_i P_{i−1}b_i, θ^B_n = P_nθ_0 + S_n, and the exact increment is
θ^B_n − θ^B_{n−1} = P_{n−1}(T_n(θ_0) − θ_0). `affine_chains` runs both orders this way; the tests
check it against the engine's backward iterates.

Libraries: ``scipy.stats.ks_2samp`` (per coordinate with ``axis=0``; scipy picks exact p-values up
to 10,000 samples and the asymptotic law above) and ``scipy.stats.kstest`` against the quadratic's
exact law, because they are the reference implementations; ``scipy.stats.kstwobign`` for the
critical distance drawn on the figure; ``torch.func`` (vmap, grad, jacrev) so that the network's
map is written once for one chain and applied to all chains at once.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch.func import grad, jacrev, vmap

from .cache import DEFAULT_RESULTS, atomic_write_json, config_hash, read_json
from .orders import iterates
from .plots import ORDER_COLOURS
from .seeding import generator, stream_seed

__all__ = ["StationaryStudy", "run_study", "affine_chains", "quadratic_draw",
           "quadratic_stationary_variance", "regression_maps", "regression_moments",
           "network_problem", "network_maps", "fit_rates", "ks_summary", "PROBLEMS", "tests_table",
           "chains_table", "record_grid",
           "histogram_figure", "ks_distance_figure", "trace_figure", "MIN_CHAINS"]

PROBLEMS = ("quadratic", "regression", "network")
MIN_CHAINS = 20      # below this a KS test has almost no power and the histograms say nothing
RATE_FLOOR = 1e-13   # increments below it are float64 round-off, not dynamics (as theory.fitted_rate)


# ------------------------------------------------------------------------------------------------
# The study's parameters
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StationaryStudy:
    chains: int                 # chains in each sample (the forward and the backward one)
    steps: int                  # N: forward law compared at N, backward limit taken at N
    early_step: int             # a step before the forward law has converged (power check)
    grid_points: int            # log-spaced steps where KS distances and single chains are recorded
    trace_chains: int           # single chains shown, and used for the network's fitted rate
    wrong_scale: float          # spread multiplier of a deliberately wrong law (power check)
    alpha: float                # test level, Bonferroni-corrected over coordinates
    seed: int
    quadratic_h: float
    quadratic_noise: float      # σ of the gradient noise ε
    quadratic_theta0: float
    regression_points: int
    regression_dim: int
    regression_batch: int
    regression_h: float
    network_points: int         # inputs evenly spaced on [-span, span]
    network_span: float
    network_teacher: tuple      # (w, b, v) of the teacher v·tanh(wx + b)
    network_noise: float        # σ of the label noise
    network_batch: int
    network_h: float
    network_theta0: tuple       # (w, b, v) where every chain starts

    def __post_init__(self):
        for name in ("network_teacher", "network_theta0"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"{name} must be three numbers (w, b, v); got {value!r}")
            object.__setattr__(self, name, value)
        _integer("chains", self.chains, MIN_CHAINS)
        _integer("steps", self.steps, 4)
        _integer("early_step", self.early_step, 1)
        if self.early_step >= self.steps // 2:
            raise ValueError(f"early_step={self.early_step} must be below steps // 2 = "
                             f"{self.steps // 2}: it stands for a step before convergence")
        _integer("grid_points", self.grid_points, 2)
        _integer("trace_chains", self.trace_chains, 1)
        if self.trace_chains > self.chains:
            raise ValueError(f"trace_chains={self.trace_chains} exceeds chains={self.chains}")
        if not (self.wrong_scale > 0 and self.wrong_scale != 1):
            raise ValueError(f"wrong_scale must be > 0 and != 1 (1 is the right law); "
                             f"got {self.wrong_scale!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1); got {self.alpha!r}")
        _integer("seed", self.seed, 0)
        if not 0 < self.quadratic_h < 2:
            raise ValueError(f"quadratic_h must lie in (0, 2), where |1 - h| < 1 makes the maps "
                             f"contractions; got {self.quadratic_h!r}")
        _positive("quadratic_noise", self.quadratic_noise)
        _integer("regression_dim", self.regression_dim, 1)
        _integer("regression_batch", self.regression_batch, self.regression_dim)
        _integer("regression_points", self.regression_points, self.regression_batch)
        _positive("regression_h", self.regression_h)
        _integer("network_batch", self.network_batch, 1)
        _integer("network_points", self.network_points, self.network_batch)
        _positive("network_span", self.network_span)
        _positive("network_h", self.network_h)
        if self.network_noise < 0:
            raise ValueError(f"network_noise must be >= 0; got {self.network_noise!r}")


def _integer(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def _positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0; got {value!r}")


def record_grid(steps: int, points: int) -> list[int]:
    """Log-spaced steps n in 1..steps−1 (n + 1 must exist for the increment at n)."""
    return sorted({int(round(v)) for v in np.geomspace(1, steps - 1, points)})


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
        if n - 1 in increments_at:  # θ^B_n − θ^B_{n-1} = P_{n-1}(T_n(θ_0) − θ_0)
            moved = np.einsum("cij,j->ci", A, theta0) + b - theta0
            out["backward_increment"][n - 1] = np.linalg.norm(
                np.einsum("cij,cj->ci", P, moved), axis=1)
        S = S + np.einsum("cij,cj->ci", P, b)
        P = P @ A
        new = np.einsum("cij,cj->ci", A, x) + b
        if n - 1 in increments_at:
            out["forward_increment"][n - 1] = np.linalg.norm(new - x, axis=1)
        x = new
        if n in record:
            out["forward"][n] = x.copy()
            out["backward"][n] = P @ theta0 + S
        if n > tail_from:
            tail.add(x)
    out["tail_sd"] = tail.sd() if tail.count else np.full((chains, d), np.nan)
    return out


def _backward_steps(study: StationaryStudy) -> list[int]:
    """Where the backward sample is needed: early (exchangeability), N/2 and N (convergence)."""
    return sorted({study.early_step, study.steps // 2, study.steps})


def _affine_sample(draw: Draw, theta0: np.ndarray, study: StationaryStudy, grid: list[int],
                   rng: np.random.Generator) -> dict:
    """Run 2C chains; chains 0..C−1 give the forward sample, C..2C−1 the backward sample (the
    first ``trace_chains`` of them, in both orders, are the single chains shown)."""
    C, t, N = study.chains, study.trace_chains, study.steps
    out = affine_chains(draw, theta0, N, 2 * C, rng, set(grid) | set(_backward_steps(study)),
                        set(grid))
    traced = slice(C, C + t)
    return {"forward": {n: v[:C] for n, v in out["forward"].items()},
            "backward": {n: out["backward"][n][C:] for n in _backward_steps(study)},
            "tail_sd": out["tail_sd"][:C],
            "trace": {"forward": np.stack([out["forward"][n][traced, 0] for n in grid], axis=1),
                      "backward": np.stack([out["backward"][n][traced, 0] for n in grid], axis=1),
                      "forward_increment": np.stack([out["forward_increment"][n][traced]
                                                     for n in grid], axis=1),
                      "backward_increment": np.stack([out["backward_increment"][n][traced]
                                                      for n in grid], axis=1)},
            "rate_increments": np.stack([out["backward_increment"][n][C:] for n in grid])}


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


def network_problem(study: StationaryStudy, device: str | torch.device = "cpu") -> dict:
    """The teacher's noisy data, cut once into K = points // batch fixed batches ``x[k], y[k]``."""
    g = generator(study.seed, "network-data")
    x = torch.linspace(-study.network_span, study.network_span, study.network_points,
                       dtype=torch.float64)
    teacher = torch.tensor(study.network_teacher, dtype=torch.float64)
    y = _tanh_unit(teacher, x) + study.network_noise * torch.randn(
        study.network_points, generator=g, dtype=torch.float64)
    K = study.network_points // study.network_batch
    rows = torch.randperm(study.network_points, generator=generator(study.seed, "network-batches"))
    rows = rows[: K * study.network_batch].view(K, study.network_batch)
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


def _network_chains(study: StationaryStudy, record: set[int], grid: list[int],
                    device) -> tuple[dict, float]:
    """`_affine_sample`'s outputs for the network, by the order engine on vmapped maps.

    The forward order runs on the forward sample plus the trace chains; the backward order on the
    backward sample is requested at the three steps the tests need (n map applications each); the
    trace chains' backward increments need θ^B at n and n + 1 for n on the grid, so only the
    trace chains give fitted rates here.
    """
    C, t, N = study.chains, study.trace_chains, study.steps
    problem = network_problem(study, device)
    g = generator(study.seed, "network-choices")
    K = len(problem["x"])
    choices = torch.stack([torch.randint(K, (2 * C,), generator=g) for _ in range(N)]).to(device)
    theta0 = torch.tensor(study.network_theta0, dtype=torch.float64, device=device)
    traced = torch.arange(C, C + t)
    forward_maps = network_maps(problem, choices[:, torch.cat([torch.arange(C), traced])],
                                study.network_h)
    forward, forward_increment, tail, on_grid = {}, {}, _TailSpread(), set(grid)
    previous = theta0.expand(C + t, 3)
    for n, theta in iterates(forward_maps, theta0.expand(C + t, 3), "forward"):
        if n - 1 in on_grid:
            forward_increment[n - 1] = (theta - previous)[C:].norm(dim=1).cpu().numpy()
        if n in record:
            forward[n] = theta.cpu().numpy()
        if n > N // 2:
            tail.add(theta[:C].cpu().numpy())
        previous = theta
    backward_maps = network_maps(problem, choices[:, C:], study.network_h)
    backward = {n: theta.cpu().numpy() for n, theta in iterates(
        backward_maps, theta0.expand(C, 3), "backward", at=_backward_steps(study))}
    trace_maps = network_maps(problem, choices[:, traced], study.network_h)
    pairs = {n: theta.cpu().numpy() for n, theta in iterates(
        trace_maps, theta0.expand(t, 3), "backward", at=sorted(set(grid) | {n + 1 for n in grid}))}
    increments = np.stack([np.linalg.norm(pairs[n + 1] - pairs[n], axis=1) for n in grid])
    raw = {"forward": {n: v[:C] for n, v in forward.items()}, "backward": backward,
           "tail_sd": tail.sd(),
           "trace": {"forward": np.stack([forward[n][C:, 0] for n in grid], axis=1),
                     "backward": np.stack([pairs[n][:, 0] for n in grid], axis=1),
                     "forward_increment": np.stack([forward_increment[n] for n in grid], axis=1),
                     "backward_increment": increments.T},
           "rate_increments": increments}
    raw["k_start"] = _network_contraction(problem, theta0[None], study.network_h)
    k = _network_contraction(problem, torch.as_tensor(backward[N], device=device), study.network_h)
    return raw, k


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


def _critical_distance(n: int, m: int, alpha: float) -> float:
    """The asymptotic two-sample KS distance rejected at level alpha (one coordinate)."""
    return float(stats.kstwobign.ppf(1 - alpha) * np.sqrt((n + m) / (n * m)))


def _histograms(forward: np.ndarray, backward: np.ndarray, bins: int = 40) -> list[dict]:
    shown = []
    for j in range(forward.shape[1]):
        edges = np.histogram_bin_edges(np.concatenate([forward[:, j], backward[:, j]]), bins=bins)
        shown.append({"edges": edges.tolist(),
                      "forward": np.histogram(forward[:, j], edges, density=True)[0].tolist(),
                      "backward": np.histogram(backward[:, j], edges, density=True)[0].tolist()})
    return shown


def _quantiles(values: np.ndarray) -> dict:
    """Median, quartiles and maximum over chains (per-chain arrays would bloat the results file)."""
    if not len(values):
        return {"chains": 0}
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"chains": int(len(values)), "median": float(median), "q25": float(q25),
            "q75": float(q75), "max": float(np.max(values))}


def _summarise(name: str, raw: dict, k: float, study: StationaryStudy, grid: list[int]) -> dict:
    """What the page shows and prints, from the samples of one problem (numbers only)."""
    N, early, half = study.steps, study.early_step, study.steps // 2
    fwd, bwd = raw["forward"], raw["backward"]
    limit = bwd[N]
    centre = fwd[N].mean(axis=0)
    widened = centre + study.wrong_scale * (fwd[N] - centre)
    tests = [
        ks_summary(f"forward at n={N} vs backward limits", fwd[N], limit, study.alpha),
        ks_summary(f"forward vs backward, both at n={early}", fwd[early], bwd[early], study.alpha),
        ks_summary(f"forward at n={early} vs backward limits", fwd[early], limit, study.alpha),
        ks_summary(f"forward at n={N} widened x{study.wrong_scale} vs backward limits", widened,
                   limit, study.alpha),
    ]
    extra = {}
    if name == "quadratic":
        sd = float(np.sqrt(quadratic_stationary_variance(study.quadratic_h, study.quadratic_noise)))
        extra["stationary_sd"] = sd
        tests += [
            ks_summary(f"forward at n={N} vs exact law N(0, {sd:.4f}^2)", fwd[N],
                       stats.norm(0, sd).cdf, study.alpha),
            ks_summary(f"backward limits vs exact law N(0, {sd:.4f}^2)", limit,
                       stats.norm(0, sd).cdf, study.alpha),
            ks_summary(f"backward limits vs wrong law N(0, ({study.wrong_scale} x {sd:.4f})^2)",
                       limit, stats.norm(0, study.wrong_scale * sd).cdf, study.alpha),
        ]
    distances = np.array([np.atleast_1d(stats.ks_2samp(fwd[n], limit, axis=0).statistic)
                          for n in grid])
    rates = fit_rates(grid, raw["rate_increments"])
    return {
        "dim": int(limit.shape[1]), "k": float(k), "grid": grid, "tests": tests,
        "ks_distance": distances.T.tolist(),  # [coordinate, grid step]
        "alpha": study.alpha,
        "critical_distance": _critical_distance(study.chains, study.chains, study.alpha),
        "histograms": _histograms(fwd[N], limit),
        "forward_mean": fwd[N].mean(axis=0).tolist(), "backward_mean": limit.mean(axis=0).tolist(),
        "forward_sd": fwd[N].std(axis=0).tolist(), "backward_sd": limit.std(axis=0).tolist(),
        "single_chain_sd": np.median(raw["tail_sd"], axis=0).tolist(),
        "backward_drift": _quantiles(np.linalg.norm(bwd[N] - bwd[half], axis=1)),
        "forward_drift": _quantiles(np.linalg.norm(fwd[N] - fwd[half], axis=1)),
        "rates": _quantiles(rates[np.isfinite(rates)]),
        "trace": {key: np.asarray(v).tolist() for key, v in raw["trace"].items()},
        **extra,
    }


# ------------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------------

def _run_problem(name: str, study: StationaryStudy, device) -> dict:
    grid = record_grid(study.steps, study.grid_points)
    if name == "network":
        raw, k = _network_chains(study, set(grid) | set(_backward_steps(study)), grid, device)
        return {**_summarise(name, raw, k, study, grid), "k_start": raw["k_start"]}
    rng = np.random.default_rng(stream_seed(study.seed, f"{name}-chains"))
    if name == "quadratic":
        raw = _affine_sample(quadratic_draw(study.quadratic_h, study.quadratic_noise),
                             np.array([study.quadratic_theta0]), study, grid, rng)
        return _summarise(name, raw, abs(1 - study.quadratic_h), study, grid)
    maps = regression_maps(study.regression_points, study.regression_dim, study.regression_batch,
                           study.regression_h,
                           np.random.default_rng(stream_seed(study.seed, "regression-data")))
    raw = _affine_sample(_regression_draw(maps["A"], maps["b"]), np.zeros(study.regression_dim),
                         study, grid, rng)
    mean, cov = regression_moments(maps["A"], maps["b"])
    return {**_summarise(name, raw, maps["k"], study, grid), "exact_mean": mean.tolist(),
            "exact_sd": np.sqrt(np.diag(cov)).tolist()}


def run_study(study: StationaryStudy, device: str = "cpu",
              results: Path | str | None = None) -> dict:
    """All three problems, cached in ``<results>/stationary-<hash>-<device>.json``.

    Everything in the result is determined by ``study`` except each problem's
    ``compute_seconds`` (wall time of the run that filled the cache)."""
    folder = Path(results) if results is not None else DEFAULT_RESULTS
    path = folder / f"stationary-{config_hash(study)}-{torch.device(device).type}.json"
    if path.is_file():
        return read_json(path)
    out = {}
    for name in PROBLEMS:
        start = time.perf_counter()
        out[name] = {**_run_problem(name, study, device),
                     "compute_seconds": round(time.perf_counter() - start, 1)}
    atomic_write_json(path, out)
    return out


# ------------------------------------------------------------------------------------------------
# Tables for the page
# ------------------------------------------------------------------------------------------------

def tests_table(results: dict) -> pd.DataFrame:
    """Every KS comparison: largest distance and smallest p-value over coordinates, and whether
    equality is rejected at level alpha / (number of coordinates)."""
    rows = [{"problem": name, "comparison": t["comparison"], "max D": max(t["D"]),
             "min p": min(t["p"]), "level": r["alpha"] / len(t["p"]),
             "rejected": "yes" if t["rejected"] else "no"}
            for name, r in results.items() for t in r["tests"]]
    return pd.DataFrame(rows).set_index(["problem", "comparison"])


def chains_table(results: dict) -> pd.DataFrame:
    """Single chains: rate of the backward increments against k; drift of both orders over the
    second half; one forward chain's spread over time against the spread across backward limits.

    One column per problem, one row per statistic (object dtype, so counts stay integers)."""
    rows = []
    for name, r in results.items():
        rows.append({
            "problem": name, "k": r["k"], "fitted rate (median)": r["rates"].get("median"),
            "fitted rate q25": r["rates"].get("q25"), "fitted rate q75": r["rates"].get("q75"),
            "chains fitted": r["rates"]["chains"],
            "backward drift (median)": r["backward_drift"]["median"],
            "backward drift (max)": r["backward_drift"]["max"],
            "forward drift (median)": r["forward_drift"]["median"],
            "one chain's sd over time / sd across limits": float(np.median(
                np.array(r["single_chain_sd"]) / np.array(r["backward_sd"])))})
    return pd.DataFrame(rows).set_index("problem").astype(object).T


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

_TITLES = {"quadratic": "Sec. 3.1 quadratic", "regression": "least squares",
           "network": "one tanh unit"}


def _coordinate_names(name: str, dim: int) -> list[str]:
    if name == "network":
        return ["w", "b", "v"]
    if dim == 1:
        return [r"$\theta$"]
    return [rf"$\theta_{j + 1}$" for j in range(dim)]


def histogram_figure(name: str, result: dict, steps: int):
    """One panel per coordinate: forward iterates at step N against backward limits."""
    names = _coordinate_names(name, result["dim"])
    # at least 7 in wide: the title and a one-row legend share the top line
    fig, axes = plt.subplots(1, len(names), figsize=(max(3.2 * len(names) + 0.6, 7.0), 2.8),
                             squeeze=False)
    for j, (ax, h) in enumerate(zip(axes[0], result["histograms"])):
        edges = np.array(h["edges"])
        ax.stairs(h["forward"], edges, color=ORDER_COLOURS["forward"], lw=1.4,
                  label=f"forward at n = {steps}")
        ax.stairs(h["backward"], edges, color=ORDER_COLOURS["backward"], lw=1.4, ls="--",
                  label="backward limits")
        if "stationary_sd" in result:
            grid = np.linspace(edges[0], edges[-1], 200)
            ax.plot(grid, stats.norm(0, result["stationary_sd"]).pdf(grid), color="black",
                    lw=0.8, label="exact stationary law")
        ax.set_xlabel(names[j])
        ax.set_ylabel("density")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), frameon=False, fontsize=8)
    fig.suptitle(_TITLES[name], fontsize=10, x=0.01, ha="left")
    fig.tight_layout()  # it leaves room for the suptitle, which shares its line with the legend
    return fig


def ks_distance_figure(results: dict, early_step: int):
    """KS distance between the forward law at n and the law of the backward limits, per coordinate."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.0), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for j, curve in enumerate(r["ks_distance"]):
            ax.loglog(r["grid"], curve, lw=1, marker=".", ms=3,
                      label=_coordinate_names(name, r["dim"])[j])
        ax.axhline(r["critical_distance"], color="grey", ls="--", lw=0.8,
                   label=f"critical distance, level {r['alpha']}")
        ax.axvline(early_step, color="grey", ls=":", lw=0.8)
        ax.set_title(_TITLES[name], fontsize=10)
        ax.set_xlabel("forward step n")
        ax.set_ylabel("KS distance to backward limits")
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def trace_figure(results: dict):
    """Per problem: the first coordinate of single chains, and the increments of both orders."""
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 2.7 * len(results)), squeeze=False)
    for row, (name, r) in zip(axes, results.items()):
        n = np.array(r["grid"])
        for order in ("forward", "backward"):
            for c, values in enumerate(r["trace"][order]):
                row[0].semilogx(n, values, color=ORDER_COLOURS[order], lw=1.2 if c == 0 else 0.7,
                                alpha=1 if c == 0 else 0.6, label=order if c == 0 else None)
                inc = np.array(r["trace"][order + "_increment"][c])
                shown = inc > 0  # an increment that is exactly 0 (frozen in float64) has no log
                row[1].semilogy(n[shown], inc[shown], color=ORDER_COLOURS[order],
                                lw=1.2 if c == 0 else 0.7, alpha=1 if c == 0 else 0.6,
                                label=order if c == 0 else None)
        first = np.median([inc[0] for inc in r["trace"]["backward_increment"]])
        row[1].semilogy(n, first * r["k"] ** (n - n[0]), color="black", ls="--", lw=0.8,
                        label=f"k^n, k = {r['k']:.3f}")
        if r["rates"]["chains"]:
            rate = r["rates"]["median"]
            row[1].semilogy(n, first * rate ** (n - n[0]), color="black", ls=":", lw=0.8,
                            label=f"fitted rate {rate:.3f}")
        # k^n may grow (k >= 1 for the tanh unit): keep the axis on the measured increments
        measured = max(max(map(max, r["trace"][o + "_increment"])) for o in ("forward", "backward"))
        row[1].set_ylim(1e-17, 30 * measured)
        row[0].set_ylabel(f"{_coordinate_names(name, r['dim'])[0]}, {_TITLES[name]}")
        row[1].set_ylabel(r"$\|\theta_{n+1} - \theta_n\|$")
        for ax in row:
            ax.set_xlabel("step n")
            ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig
