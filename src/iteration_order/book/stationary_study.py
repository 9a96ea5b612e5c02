"""The Theorem 2.6 page's study: forward law at step N against backward limits, on many chains.

We simulate many chains, each with its own i.i.d. map sequence, on the three problems of
`stationary` (the Sec. 3.1 quadratic, mini-batch least squares, one tanh unit) and compare the
forward law at step N with the law of the backward limits by Kolmogorov–Smirnov tests, with power
checks (an early step, a deliberately widened sample, a wrong exact law). Forward and backward
samples come from disjoint sets of chains (chains 0..C−1 give the forward sample, C..2C−1 the
backward one), because the two-sample test assumes independent samples.

`run_study` caches every number the page shows in ``results/stationary-<hash>-<device>.json``;
``scipy.stats.kstwobign`` gives the critical distance drawn on the figure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..cache import (DEFAULT_RESULTS, InvalidResult, cached, code_fingerprint, config_hash,
                     jsonable, nan_for_null)
from ..orders import iterates
from .plots import ORDER_COLOURS
from ..seeding import generator, stream_seed
from ..trajectory import TRAJECTORY_MODULES
from ..validation import check_int, check_list, check_number
from ..stationary import (Draw, _network_contraction, _regression_draw, _TailSpread, affine_chains,
                         fit_rates, ks_summary, network_maps, network_problem, quadratic_draw,
                         quadratic_stationary_variance, regression_maps, regression_moments)

__all__ = ["StationaryStudy", "run_study", "PROBLEMS", "tests_table", "chains_table", "record_grid",
           "histogram_figure", "ks_distance_figure", "trace_figure", "MIN_CHAINS"]

PROBLEMS = ("quadratic", "regression", "network")
# What determines the study's numbers: the maps, orders and seeding of the trajectory code,
# Theorem 2.6's chains and laws, and this module.
MODULES = (*TRAJECTORY_MODULES, "stationary", "book.stationary_study")
MIN_CHAINS = 20      # below this a KS test has almost no power and the histograms say nothing


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
            value = check_list(name, getattr(self, name), [1.0, 0.5, 1.0],
                               lambda n, v: check_number(n, v))
            if len(value) != 3:
                raise ValueError(f"{name} must be three numbers (w, b, v); got {list(value)!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        check_int("chains", self.chains, MIN_CHAINS)
        check_int("steps", self.steps, 4)
        check_int(f"early_step (a step before convergence: below steps // 2 = "
                  f"{self.steps // 2})", self.early_step, 1, self.steps // 2 - 1)
        check_int("grid_points", self.grid_points, 2)
        check_int(f"trace_chains (at most chains = {self.chains})", self.trace_chains, 1,
                  self.chains)
        check_number("wrong_scale", self.wrong_scale, 0, low_open=True)
        if self.wrong_scale == 1:
            raise ValueError("wrong_scale must be > 0 and != 1 (1 is the right law); got 1")
        check_number("alpha", self.alpha, 0, 1, low_open=True, high_open=True)
        check_int("seed", self.seed, 0)
        check_number("quadratic_h (|1 - h| < 1 makes the maps contractions)", self.quadratic_h,
                     0, 2, low_open=True, high_open=True)
        check_number("quadratic_noise", self.quadratic_noise, 0, low_open=True)
        check_number("quadratic_theta0", self.quadratic_theta0)
        check_int("regression_dim", self.regression_dim, 1)
        check_int(f"regression_batch (at least regression_dim = {self.regression_dim})",
                  self.regression_batch, self.regression_dim)
        check_int(f"regression_points (at least regression_batch = {self.regression_batch})",
                  self.regression_points, self.regression_batch)
        check_number("regression_h", self.regression_h, 0, low_open=True)
        check_int("network_batch", self.network_batch, 1)
        check_int(f"network_points (at least network_batch = {self.network_batch})",
                  self.network_points, self.network_batch)
        check_number("network_span", self.network_span, 0, low_open=True)
        check_number("network_h", self.network_h, 0, low_open=True)
        check_number("network_noise", self.network_noise, 0)


def record_grid(steps: int, points: int) -> list[int]:
    """Log-spaced steps n in 1..steps−1 (n + 1 must exist for the increment at n)."""
    return sorted({int(round(v)) for v in np.geomspace(1, steps - 1, points)})


# ------------------------------------------------------------------------------------------------
# Samples: 2C chains per problem, forward sample and backward sample
# ------------------------------------------------------------------------------------------------

def _backward_steps(study: StationaryStudy) -> list[int]:
    """Where the backward sample is needed: early (exchangeability), N/2 and N (convergence)."""
    return sorted({study.early_step, study.steps // 2, study.steps})


def _on_grid(series: dict, grid: list[int], rows=slice(None)) -> np.ndarray:
    """``series[n][rows]`` for n on the grid, one column per step: [rows, len(grid)]."""
    return np.stack([series[n][rows] for n in grid], axis=1)


def _affine_sample(draw: Draw, theta0: np.ndarray, study: StationaryStudy, grid: list[int],
                   rng: np.random.Generator) -> dict:
    """Run 2C chains; chains 0..C−1 give the forward sample, C..2C−1 the backward sample (the
    first ``trace_chains`` of them, in both orders, are the single chains shown)."""
    C, t, N = study.chains, study.trace_chains, study.steps
    needed = _backward_steps(study)
    out = affine_chains(draw, theta0, N, 2 * C, rng, set(grid) | set(needed), set(grid))
    traced = slice(C, C + t)
    return {"forward": {n: v[:C] for n, v in out["forward"].items()},
            "backward": {n: out["backward"][n][C:] for n in needed},
            "tail_sd": out["tail_sd"][:C],
            "trace": {"forward": _on_grid(out["forward"], grid, (traced, 0)),
                      "backward": _on_grid(out["backward"], grid, (traced, 0)),
                      "forward_increment": _on_grid(out["forward_increment"], grid, traced),
                      "backward_increment": _on_grid(out["backward_increment"], grid, traced)},
            "rate_increments": _on_grid(out["backward_increment"], grid, slice(C, None)).T}


def _network_chains(study: StationaryStudy, grid: list[int], device) -> tuple[dict, float, float]:
    """`_affine_sample`'s outputs for the network, by the order engine on vmapped maps, with the
    local contraction factor over the backward limits and at θ_0 (`_network_contraction`).

    The forward order runs on the forward sample plus the trace chains; the backward order on the
    backward sample is requested at the three steps the tests need (n map applications each); the
    trace chains' backward increments need θ^B at n and n + 1 for n on the grid, so only the
    trace chains give fitted rates here.
    """
    C, t, N = study.chains, study.trace_chains, study.steps
    needed = _backward_steps(study)
    record = set(grid) | set(needed)
    problem = network_problem(study.network_points, study.network_span, study.network_teacher,
                              study.network_noise, study.network_batch, study.seed, device)
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
        backward_maps, theta0.expand(C, 3), "backward", at=needed)}
    trace_maps = network_maps(problem, choices[:, traced], study.network_h)
    pairs = {n: theta.cpu().numpy() for n, theta in iterates(
        trace_maps, theta0.expand(t, 3), "backward", at=sorted(set(grid) | {n + 1 for n in grid}))}
    increments = np.stack([np.linalg.norm(pairs[n + 1] - pairs[n], axis=1) for n in grid])
    raw = {"forward": {n: v[:C] for n, v in forward.items()}, "backward": backward,
           "tail_sd": tail.sd(),
           "trace": {"forward": _on_grid(forward, grid, (slice(C, None), 0)),
                     "backward": _on_grid(pairs, grid, (slice(None), 0)),
                     "forward_increment": _on_grid(forward_increment, grid),
                     "backward_increment": increments.T},
           "rate_increments": increments}
    k = _network_contraction(problem, torch.as_tensor(backward[N], device=device), study.network_h)
    return raw, k, _network_contraction(problem, theta0[None], study.network_h)


# ------------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------------

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
        "forward_mean": centre.tolist(), "backward_mean": limit.mean(axis=0).tolist(),
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
        raw, k, k_start = _network_chains(study, grid, device)
        return {**_summarise(name, raw, k, study, grid), "k_start": k_start}
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
              results: Path | str | None = None, cache: str | None = None) -> dict:
    """All three problems, cached in ``<results>/stationary-<hash>-<device>.json``.

    Everything in the result is determined by ``study`` except each problem's
    ``compute_seconds`` (wall time of the run that filled the cache). A stored study is used
    only while valid for this study and code; ``cache`` is the mode (see `cache`; None:
    ``$ITERATION_ORDER_CACHE``, else use)."""
    folder = Path(results) if results is not None else DEFAULT_RESULTS
    path = folder / f"stationary-{config_hash(study)}-{torch.device(device).type}.json"
    stored = cached(path, jsonable(study), code_fingerprint(MODULES),
                    lambda: {"problems": _run_problems(study, device)}, _check_problems, cache,
                    repr(study))
    # nothing in the problems is None when computed: a null read back is a NaN (strict JSON)
    return nan_for_null(stored["problems"])


def _check_problems(result: dict) -> None:
    problems = result.get("problems")
    if not isinstance(problems, dict) or list(problems) != list(PROBLEMS):
        raise InvalidResult(f"does not hold the problems {', '.join(PROBLEMS)}")


def _run_problems(study: StationaryStudy, device: str) -> dict:
    out = {}
    for name in PROBLEMS:
        start = time.perf_counter()
        out[name] = {**_run_problem(name, study, device),
                     "compute_seconds": round(time.perf_counter() - start, 1)}
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
