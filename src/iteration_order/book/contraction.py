"""The paper's contraction examples, simulated with the order engine and checked in closed form.

* Example 2.4: two constant maps; forward jumps between them, backward keeps T_1's constant.
* Sec. 3.1: T_i(θ) = (1-h)θ + hε_i (SGD on θ²/2 with additive gradient noise).
* Sec. 3.2: T_i(θ) = θ* + (I - hH)(θ - θ*) + hε_i, the linearised dynamics near a minimum.
* Linear regression with mini-batches: the same regime with the noise the batches really make
  (it depends on θ), where no closed form is used: the engine alone shows the behaviour.
* Theorem 2.2: backward increments ‖θ^B_{n+1} − θ^B_n‖ decay like k^n.

Everything here is NumPy on small vectors: no training, seconds to run. `theory_numbers` gives
every number the page's prose quotes (glued into it), `rates_table` the page's table and
`caption` its figures' captions.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..orders import iterates
from .plots import ORDER_COLOURS

__all__ = ["constant_maps", "scalar_quadratic", "linearised_minimum", "linear_regression",
           "fitted_rate", "plot_orders", "orders_figure", "increments_figure", "increments",
           "closed_form_gaps", "roundoff_step", "increment_decay", "rates_table",
           "theory_numbers", "caption", "EXAMPLES", "ROUNDOFF", "HESSIAN_EIGENVALUES"]

# Below this size an increment of a float64 iterate of order 1 is round-off, not dynamics
# (machine epsilon is 2.2e-16; a few hundred rounding errors accumulate to about this).
ROUNDOFF = 1e-13

# Sec. 3.2's random Hessian: its eigenvalues are spread evenly over this range
HESSIAN_EIGENVALUES = (0.5, 2.0)

# the examples the rate is measured on: key -> (name on the page, has a closed form)
EXAMPLES = {"quadratic": ("Sec. 3.1: scalar quadratic", True),
            "linear": ("Sec. 3.2: linearised minimum", True),
            "regression": ("least squares, mini-batches", False)}


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
    """Sec. 3.2 with a random Hessian (eigenvalues `HESSIAN_EIGENVALUES`) and Gaussian gradient
    noise."""
    rng = np.random.default_rng(seed)
    H = _spd(dim, *HESSIAN_EIGENVALUES, rng)
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


def increments(trajectory: np.ndarray) -> np.ndarray:
    """‖x_{n+1} − x_n‖ for n = 1 … len − 1 (entry n − 1), for scalar or vector iterates."""
    x = np.asarray(trajectory, dtype=float)
    x = x.reshape(len(x), -1)
    return np.linalg.norm(np.diff(x, axis=0), axis=1)


def fitted_rate(trajectory: np.ndarray, skip: int = 0, floor: float = ROUNDOFF) -> float:
    """k̂ = exp(slope) of log ‖x_{n+1} − x_n‖ against n, fitted where increments exceed ``floor``
    (below it, float64 round-off, not the dynamics, sets the size of a step)."""
    steps = increments(trajectory)[skip:]
    n = np.arange(len(steps))
    keep = steps > floor
    if keep.sum() < 2:
        raise ValueError(f"a rate needs at least 2 increments above floor={floor:g}; this "
                         f"trajectory has {int(keep.sum())} of {len(steps)}")
    slope = np.polyfit(n[keep], np.log(steps[keep]), 1)[0]
    return float(np.exp(slope))


def roundoff_step(trajectory: np.ndarray, floor: float = ROUNDOFF) -> int | None:
    """The first step n whose increment ‖x_{n+1} − x_n‖ is at most ``floor`` (None if none is):
    from there on float64 round-off, not the contraction, sets the size of a step."""
    below = np.flatnonzero(increments(trajectory) <= floor)
    return int(below[0]) + 1 if len(below) else None


def increment_decay(trajectory: np.ndarray) -> float:
    """Median increment over the last quarter of the steps divided by that over the second
    quarter: the book's displacement decay (`stability.displacement_decay`) for a trajectory
    recorded at every step. Near 1: the steps keep their size; far below 1: they shrink."""
    steps = increments(trajectory)
    quarter = len(steps) // 4
    if quarter < 1:
        raise ValueError(f"a decay needs at least 4 increments; got {len(steps)}")
    return float(np.median(steps[-quarter:]) / np.median(steps[quarter:2 * quarter]))


def closed_form_gaps(result: dict) -> dict[str, float]:
    """Per order, the largest absolute difference between the engine's iterates and the paper's
    closed form ({} for an example without one)."""
    return {order: float(np.abs(result[order] - result["closed_" + order]).max())
            for order in ("forward", "backward") if "closed_" + order in result}


def _below(gap: float) -> str:
    """A round-off-sized difference as the decade it is below ('< 1e-15'): its digits depend on
    the platform's floating-point summation order, its decade does not."""
    return f"< 1e{math.floor(math.log10(gap)) + 1}" if gap > 0 else "0"


def rates_table(examples: dict[str, dict], floor: float = ROUNDOFF) -> pd.DataFrame:
    """One row per example (keys of `EXAMPLES`): the contraction constant k, the fitted rate k̂ of
    the backward increments and their relative gap, the step where those increments reach
    round-off, each order's increment decay (backward's only while its increments are above
    round-off), and the decade below which the closed forms' largest gaps lie ('n/a' without a
    closed form). Rounded for display, so the page's table (and nbval) stays stable."""
    rows = []
    for key, result in examples.items():
        gaps = closed_form_gaps(result)
        rate = fitted_rate(result["backward"], floor=floor)
        reached = roundoff_step(result["backward"], floor)
        late = increments(result["backward"])[-(len(result["backward"]) - 1) // 4:]
        settled = np.median(late) <= floor  # the decay would be round-off over round-off
        rows.append({
            "example": EXAMPLES[key][0],
            "k": round(result["k"], 3),
            "fitted k̂": round(rate, 3),
            "|k̂ − k| / k (%)": round(100 * abs(rate - result["k"]) / result["k"], 2),
            f"backward increments ≤ {floor:.0e} from step":
                reached if reached is not None else "never",
            "increment decay, backward": "round-off" if settled
                else f"{increment_decay(result['backward']):.2g}",
            "increment decay, forward": round(increment_decay(result["forward"]), 2),
            "closed form: largest gap, forward": _below(gaps["forward"]) if gaps else "n/a",
            "closed form: largest gap, backward": _below(gaps["backward"]) if gaps else "n/a"})
    return pd.DataFrame(rows).set_index("example")


def theory_numbers(settings: dict, constant: dict, examples: dict[str, dict],
                   floor: float = ROUNDOFF) -> dict:
    """Every number the theory page's prose quotes, by glue key.

    ``settings``: the page's parameters (each glued under its own name); ``constant``:
    `constant_maps`; ``examples``: `scalar_quadratic`, `linearised_minimum` and
    `linear_regression` under the keys of `EXAMPLES`. Keys: ``constant_first`` (T_1's value),
    ``constant_backward_at_first`` (steps where the backward iterate equals it),
    ``constant_forward_changes``; ``closed_gap_max`` (largest engine/closed-form difference over
    the examples with a closed form and both orders) and ``closed_gap_below`` (the power of
    ten it is below, as text: '1e-15'), ``roundoff`` (the floor); per example
    ``<key>_k``, ``_rate``, ``_rate_gap_pct`` (100·|k̂ − k|/k), ``_roundoff_step`` (an int, or
    'never') and ``_forward_decay`` (`increment_decay` of the forward iterates).
    """
    unknown = set(examples) - set(EXAMPLES)
    if unknown:
        raise ValueError(f"unknown examples {sorted(unknown)}; allowed: {list(EXAMPLES)}")
    numbers = dict(settings)
    first = float(constant["first"])
    numbers.update({
        "constant_first": first,
        "constant_backward_at_first": int((constant["backward"] == first).sum()),
        "constant_forward_changes": int((np.diff(constant["forward"]) != 0).sum()),
        "roundoff": floor})
    gaps = [g for r in examples.values() for g in closed_form_gaps(r).values()]
    numbers["closed_gap_max"] = max(gaps) if gaps else float("nan")
    numbers["closed_gap_below"] = _below(max(gaps))[2:] if gaps else "n/a"
    for key, result in examples.items():
        rate = fitted_rate(result["backward"], floor=floor)
        reached = roundoff_step(result["backward"], floor)
        numbers.update({
            f"{key}_k": float(result["k"]), f"{key}_rate": rate,
            f"{key}_rate_gap_pct": 100 * abs(rate - result["k"]) / result["k"],
            f"{key}_roundoff_step": reached if reached is not None else "never",
            f"{key}_forward_decay": increment_decay(result["forward"])})
    return numbers


_CAPTIONS = {
    "constant": "Example 2.4 with S(θ) = −1 and U(θ) = +1, each Tᵢ drawn with probability ½, "
                "{constant_steps} steps: the iterate xₙ of each order at every step",
    "quadratic": "Section 3.1, Tᵢ(θ) = (1 − h)θ + hεᵢ with h = {quadratic_h}, "
                 "θ₀ = {quadratic_theta0} and εᵢ of standard deviation {noise_std}: the iterate "
                 "θₙ of each order at every one of {quadratic_steps} steps",
    "linear": "Section 3.2 in {linear_dim} dimensions, a random Hessian with eigenvalues from "
              "{eig_low} to {eig_high}, h = {linear_h} and noise of standard deviation "
              "{noise_std} per coordinate: the distance of each order's iterate to the minimum "
              "θ*, at every one of {linear_steps} steps",
    "regression": "Least squares on {regression_points} points in {regression_dim} dimensions, "
                  "SGD with batches of {regression_batch} and h = {regression_h}: the distance "
                  "of each order's iterate to the least-squares solution, at every one of "
                  "{regression_steps} steps",
    "increments": "The increments ‖xₙ₊₁ − xₙ‖ of both orders at every step, on a log scale, "
                  "for the three examples above (the same runs)",
}


def caption(figure: str, settings: dict, profile: str) -> str:
    """The caption of one of the page's figures (``constant``, ``quadratic``, ``linear``,
    ``regression``, ``increments``), its sizes taken from ``settings`` (the page's parameters).
    The paper states these examples analytically and draws none of them."""
    if figure not in _CAPTIONS:
        raise ValueError(f"unknown figure {figure!r}; figures are: {', '.join(_CAPTIONS)}")
    text = _CAPTIONS[figure].format(**settings, eig_low=HESSIAN_EIGENVALUES[0],
                                    eig_high=HESSIAN_EIGENVALUES[1])
    return (f"Not a figure of the paper, which states this example analytically. {text}; "
            f"forward in blue, backward in orange. Computed in the notebook at the {profile} "
            f"profile (seed {settings['seed']}).")


_FONT = 9  # points at the figure's own size; the figures are at most 7.5 in wide, the text width


def plot_orders(ax, forward: np.ndarray, backward: np.ndarray, title: str, ylabel: str):
    steps = np.arange(1, len(forward) + 1)
    ax.plot(steps, forward, color=ORDER_COLOURS["forward"], lw=0.9, label="forward")
    ax.plot(steps, backward, color=ORDER_COLOURS["backward"], lw=1.4, label="backward")
    ax.set_xlabel("step n", fontsize=_FONT)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    ax.set_title(title, fontsize=_FONT + 1)
    ax.tick_params(labelsize=_FONT)
    ax.legend(frameon=False, fontsize=_FONT)
    return ax


def orders_figure(forward: np.ndarray, backward: np.ndarray, title: str, ylabel: str):
    """One example's iterates, both orders, in a figure of the text's width."""
    fig, ax = plt.subplots(figsize=(7.0, 2.7))
    plot_orders(ax, forward, backward, title, ylabel)
    fig.tight_layout()
    return fig


def increments_figure(results: dict[str, dict]):
    """‖x_{n+1} − x_n‖ on a log scale for both orders, one panel per example (keys of
    `EXAMPLES`, or any title)."""
    fig, axes = plt.subplots(1, len(results), figsize=(7.5, 2.9), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for order in ("forward", "backward"):
            ax.semilogy(np.arange(1, len(r[order])), increments(r[order]), lw=0.9,
                        color=ORDER_COLOURS[order], label=order)
        ax.set_title(EXAMPLES[name][0] if name in EXAMPLES else name, fontsize=_FONT)
        ax.set_xlabel("step n", fontsize=_FONT)
        ax.tick_params(labelsize=_FONT)
    axes[0][0].set_ylabel(r"$\|x_{n+1} - x_n\|$", fontsize=_FONT)
    axes[0][0].legend(frameon=False, fontsize=_FONT)
    fig.tight_layout()
    return fig


def page_setup(values: dict) -> None:
    """The theory page computes every example in its notebook: nothing to set up or load."""
    return None


def page_loads(setup: None, runtime) -> list:
    return []
