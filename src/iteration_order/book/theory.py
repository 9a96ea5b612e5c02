"""The paper's contraction examples, simulated with the order engine and checked in closed form.

* Example 2.4: two constant maps; forward jumps between them, backward keeps T_1's constant.
* Sec. 3.1: T_i(θ) = (1-h)θ + hε_i (SGD on θ²/2 with additive gradient noise).
* Sec. 3.2: T_i(θ) = θ* + (I - hH)(θ - θ*) + hε_i, the linearised dynamics near a minimum.
* Linear regression with mini-batches: the same regime with the noise the batches really make
  (it depends on θ), where no closed form is used: the engine alone shows the behaviour.
* Theorem 2.2: backward increments ‖θ^B_{n+1} − θ^B_n‖ decay like k^n.

Everything here is NumPy on small vectors: no training, seconds to run.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..orders import iterates
from .plots import ORDER_COLOURS

__all__ = ["constant_maps", "scalar_quadratic", "linearised_minimum", "linear_regression",
           "fitted_rate", "plot_orders"]


def constant_maps(steps: int, seed: int) -> dict:
    """Example 2.4 with S(θ) = x0 = -1 and U(θ) = y0 = +1, each chosen with probability 1/2."""
    rng = np.random.default_rng(seed)
    values = rng.choice([-1.0, 1.0], size=steps)
    maps = [lambda _, v=v: v for v in values]
    forward = np.array([x for _, x in iterates(maps, 0.0, "forward")])
    backward = np.array([x for _, x in iterates(maps, 0.0, "backward")])
    return {"forward": forward, "backward": backward, "first": values[0]}


def scalar_quadratic(h: float, steps: int, theta0: float, noise_std: float, seed: int) -> dict:
    """Sec. 3.1: both orders by the engine and by the paper's closed forms."""
    eps = np.random.default_rng(seed).normal(0, noise_std, size=steps)
    maps = [lambda x, e=e: (1 - h) * x + h * e for e in eps]
    forward = np.array([x for _, x in iterates(maps, theta0, "forward")])
    backward = np.array([x for _, x in iterates(maps, theta0, "backward")])
    n = np.arange(1, steps + 1)
    decay = (1 - h) ** np.arange(steps)  # (1-h)^0 ... (1-h)^(steps-1)
    closed_backward = (1 - h) ** n * theta0 + h * np.cumsum(decay * eps)
    closed_forward = np.empty(steps)
    for k in range(steps):  # h Σ_i (1-h)^{n-i} ε_i, newest noise undamped
        closed_forward[k] = (1 - h) ** (k + 1) * theta0 + h * np.sum(decay[:k + 1][::-1] * eps[:k + 1])
    return {"forward": forward, "backward": backward, "closed_forward": closed_forward,
            "closed_backward": closed_backward, "k": abs(1 - h)}


def _spd(dim: int, low: float, high: float, rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q @ np.diag(np.linspace(low, high, dim)) @ q.T


def linearised_minimum(dim: int, h: float, steps: int, noise_std: float, seed: int) -> dict:
    """Sec. 3.2 with a random Hessian (eigenvalues 0.5..2) and Gaussian gradient noise."""
    rng = np.random.default_rng(seed)
    H = _spd(dim, 0.5, 2.0, rng)
    theta_star, theta0 = rng.normal(size=dim), rng.normal(size=dim) * 3
    eps = rng.normal(0, noise_std, size=(steps, dim))
    A = np.eye(dim) - h * H
    maps = [lambda x, e=e: theta_star + A @ (x - theta_star) + h * e for e in eps]
    forward = np.array([x for _, x in iterates(maps, theta0, "forward")])
    backward = np.array([x for _, x in iterates(maps, theta0, "backward")])
    powers = [np.eye(dim)]
    for _ in range(steps):
        powers.append(A @ powers[-1])
    closed_forward, closed_backward = [], []
    for n in range(1, steps + 1):
        start = theta_star + powers[n] @ (theta0 - theta_star)
        closed_forward.append(start + h * sum(powers[n - i] @ eps[i - 1] for i in range(1, n + 1)))
        closed_backward.append(start + h * sum(powers[i - 1] @ eps[i - 1] for i in range(1, n + 1)))
    return {"forward": forward, "backward": backward, "closed_forward": np.array(closed_forward),
            "closed_backward": np.array(closed_backward), "theta_star": theta_star,
            "k": float(np.abs(np.linalg.eigvalsh(A)).max())}


def linear_regression(points: int, dim: int, batch: int, h: float, steps: int, seed: int) -> dict:
    """Mini-batch SGD on least squares: T_i(θ) = θ − h·A_iᵀ(A_iθ − b_i)/|B_i|.

    The maps are affine contractions when h < 2/λ_max(A_iᵀA_i/|B|) for every batch; k is the
    largest of their operator norms over the batches used.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(points, dim))
    y = X @ rng.normal(size=dim) + 0.5 * rng.normal(size=points)
    solution = np.linalg.lstsq(X, y, rcond=None)[0]
    order = np.concatenate([rng.permutation(points) for _ in range(-(-steps * batch // points))])
    batches = order[: steps * batch].reshape(steps, batch)

    def sgd(rows):
        A, b = X[rows], y[rows]
        return lambda theta: theta - h * A.T @ (A @ theta - b) / len(rows)

    maps = [sgd(rows) for rows in batches]
    k = max(np.abs(np.linalg.eigvalsh(np.eye(dim) - h * X[r].T @ X[r] / batch)).max()
            for r in batches)
    forward = np.array([x for _, x in iterates(maps, np.zeros(dim), "forward")])
    backward = np.array([x for _, x in iterates(maps, np.zeros(dim), "backward")])
    return {"forward": forward, "backward": backward, "solution": solution, "k": float(k)}


def fitted_rate(trajectory: np.ndarray, skip: int = 0, floor: float = 1e-13) -> float:
    """k̂ = exp(slope) of log ‖x_{n+1} − x_n‖ against n, fitted where increments exceed ``floor``
    (below it, float64 round-off, not the dynamics, sets the size of a step)."""
    x = trajectory.reshape(len(trajectory), -1)
    increments = np.linalg.norm(np.diff(x, axis=0), axis=1)[skip:]
    n = np.arange(len(increments))
    keep = increments > floor
    slope = np.polyfit(n[keep], np.log(increments[keep]), 1)[0]
    return float(np.exp(slope))


def plot_orders(ax, forward: np.ndarray, backward: np.ndarray, title: str, ylabel: str):
    steps = np.arange(1, len(forward) + 1)
    ax.plot(steps, forward, color=ORDER_COLOURS["forward"], lw=0.9, label="forward")
    ax.plot(steps, backward, color=ORDER_COLOURS["backward"], lw=1.4, label="backward")
    ax.set_xlabel("step n")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return ax


def increments_figure(results: dict[str, dict]):
    """‖x_{n+1} − x_n‖ on a log scale for both orders, one panel per example, with k^n."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for order in ("forward", "backward"):
            x = r[order].reshape(len(r[order]), -1)
            ax.semilogy(np.linalg.norm(np.diff(x, axis=0), axis=1), lw=0.9,
                        color=ORDER_COLOURS[order], label=order)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step n")
        ax.set_ylabel(r"$\|x_{n+1} - x_n\|$")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
