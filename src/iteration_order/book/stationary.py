"""The Theorem 2.6 page's study: forward law at step N against backward limits, on many chains.

We simulate many chains, each with its own i.i.d. map sequence, on the three problems of
`stationary` (the Sec. 3.1 quadratic, mini-batch least squares, one tanh unit) and compare the
forward law at step N with the law of the backward limits by Kolmogorov–Smirnov tests, with power
checks (an early step, a deliberately widened sample, a wrong exact law). Forward and backward
samples come from disjoint sets of chains (chains 0..C−1 give the forward sample, C..2C−1 the
backward one), because the two-sample test assumes independent samples.

`run_study` caches every number the page shows in ``results/stationary-<hash>-<device>.json``;
``scipy.stats.kstwobign`` gives the critical distance drawn on the figure. `run_replicates`
repeats the main comparison (forward at N against the backward limits) on independent replicates,
each with its own seed for the maps and the chains (`replicate_seeds`), cached in
``results/stationary-replicates-<hash>-<device>.json``; the page reports their rejections against
the level (`replicate_table`). `page_numbers` gives every number the page's conclusion quotes.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..cache import InvalidResult, cached, code_fingerprint, config_hash, jsonable, nan_for_null
from ..devices import device_type, requested_device, torch_device
from ..orders import iterates
from .plots import ORDER_COLOURS
from ..seeding import generator, stream_seed
from ..trajectory import TRAJECTORY_MODULES, Runtime
from ..validation import check_choice, check_int, check_list, check_number
from ..stationary import (Draw, _network_contraction, _regression_draw, _TailSpread, affine_chains,
                         fit_rates, ks_summary, network_maps, network_problem, quadratic_draw,
                         quadratic_stationary_variance, regression_maps, regression_moments,
                         rejection_summary)

__all__ = ["StationaryStudy", "run_study", "PROBLEMS", "tests_table", "chains_table", "record_grid",
           "histogram_figure", "ks_distance_figure", "trace_figure", "MIN_CHAINS",
           "replicate_seeds", "final_samples", "run_replicates", "replicate_table",
           "replicate_figure", "moments_table", "rounded", "figure_caption", "page_numbers"]

PROBLEMS = ("quadratic", "regression", "network")
# What determines the study's numbers: the maps, orders and seeding of the trajectory code,
# Theorem 2.6's chains and laws, and this module.
MODULES = (*TRAJECTORY_MODULES, "stationary", "book.stationary")
MIN_CHAINS = 20      # below this a KS test has almost no power and the histograms say nothing
HISTOGRAM_BINS = 40  # shared by both samples of a coordinate


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


def _network_setup(study: StationaryStudy, device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The tanh unit's data and batches (from the study's seed), the batch each of the 2C chains
    takes at each of the N steps (``choices[i, c]``), and θ_0."""
    problem = network_problem(study.network_points, study.network_span, study.network_teacher,
                              study.network_noise, study.network_batch, study.seed, device)
    g = generator(study.seed, "network-choices")
    K = len(problem["x"])
    choices = torch.stack([torch.randint(K, (2 * study.chains,), generator=g)
                           for _ in range(study.steps)]).to(device)
    theta0 = torch.tensor(study.network_theta0, dtype=torch.float64, device=device)
    return problem, choices, theta0


def _affine_problem(name: str, study: StationaryStudy) -> tuple[Draw, np.ndarray, dict]:
    """An affine problem's per-step draw, θ_0, and its regression maps (empty for the quadratic);
    the least-squares data come from the study's seed."""
    if name == "quadratic":
        return (quadratic_draw(study.quadratic_h, study.quadratic_noise),
                np.array([study.quadratic_theta0]), {})
    maps = regression_maps(study.regression_points, study.regression_dim, study.regression_batch,
                           study.regression_h,
                           np.random.default_rng(stream_seed(study.seed, "regression-data")))
    return _regression_draw(maps["A"], maps["b"]), np.zeros(study.regression_dim), maps


def _chain_rng(name: str, study: StationaryStudy) -> np.random.Generator:
    return np.random.default_rng(stream_seed(study.seed, f"{name}-chains"))


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
    problem, choices, theta0 = _network_setup(study, device)
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


def _histograms(forward: np.ndarray, backward: np.ndarray,
                bins: int = HISTOGRAM_BINS) -> list[dict]:
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
    # "key" names the comparison for `page_numbers`; "main" is the one the replicates repeat
    tests = [
        {**ks_summary(f"forward at n={N} vs backward limits", fwd[N], limit, study.alpha),
         "key": "main"},
        {**ks_summary(f"forward vs backward, both at n={early}", fwd[early], bwd[early],
                      study.alpha), "key": "early_same"},
        {**ks_summary(f"forward at n={early} vs backward limits", fwd[early], limit, study.alpha),
         "key": "early_limit"},
        {**ks_summary(f"forward at n={N} widened x{study.wrong_scale} vs backward limits",
                      widened, limit, study.alpha), "key": "widened"},
    ]
    extra = {}
    if name == "quadratic":
        sd = float(np.sqrt(quadratic_stationary_variance(study.quadratic_h, study.quadratic_noise)))
        extra["stationary_sd"] = sd
        tests += [
            {**ks_summary(f"forward at n={N} vs exact law N(0, {sd:.4f}^2)", fwd[N],
                          stats.norm(0, sd).cdf, study.alpha), "key": "exact_forward"},
            {**ks_summary(f"backward limits vs exact law N(0, {sd:.4f}^2)", limit,
                          stats.norm(0, sd).cdf, study.alpha), "key": "exact_backward"},
            {**ks_summary(f"backward limits vs wrong law N(0, ({study.wrong_scale} x "
                          f"{sd:.4f})^2)", limit, stats.norm(0, study.wrong_scale * sd).cdf,
                          study.alpha), "key": "wrong_law"},
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
    draw, theta0, maps = _affine_problem(name, study)
    raw = _affine_sample(draw, theta0, study, grid, _chain_rng(name, study))
    if name == "quadratic":
        return _summarise(name, raw, abs(1 - study.quadratic_h), study, grid)
    mean, cov = regression_moments(maps["A"], maps["b"])
    return {**_summarise(name, raw, maps["k"], study, grid), "exact_mean": mean.tolist(),
            "exact_sd": np.sqrt(np.diag(cov)).tolist()}


def _stored_at(runtime: Runtime, stem: str) -> tuple[Path, str]:
    """Where a result named ``stem`` of this runtime's device is cached
    (``<results_dir>/<stem>-<device type>.json``), and that device (`devices`: ``auto`` made
    explicit; computing on it is checked only when a result must be computed)."""
    device = requested_device(runtime.device)
    return Path(runtime.results_dir) / f"{stem}-{device_type(device)}.json", device


def run_study(study: StationaryStudy, runtime: Runtime = Runtime()) -> dict:
    """All three problems, cached in ``<results_dir>/stationary-<hash>-<device>.json``, on the
    runtime's device, results folder and cache mode (as every study runs).

    Everything in the result is determined by ``study`` except each problem's
    ``compute_seconds`` (wall time of the run that filled the cache). A stored study is used
    only while valid for this study and code."""
    path, device = _stored_at(runtime, f"stationary-{config_hash(study)}")
    stored = cached(path, jsonable(study), code_fingerprint(MODULES),
                    lambda: {"problems": _run_problems(study, str(torch_device(device)))},
                    _check_problems, runtime.cache, repr(study))
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
# Independent replicates of the main comparison
# ------------------------------------------------------------------------------------------------

def replicate_seeds(seed: int, count: int) -> list[int]:
    """The seed of replicate r = 0..count−1: the seeding helper's stream ``replicate-r`` of the page
    seed. Every random stream of a replicate (least-squares data, the tanh unit's labels and
    batches, every chain's maps) derives from it, so replicates share nothing with each other or
    with the main run, and the same page seed always gives the same replicates."""
    check_int("seed", seed, 0)
    check_int("replicates", count, 1)
    return [stream_seed(seed, f"replicate-{r}") for r in range(count)]


def final_samples(name: str, study: StationaryStudy, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """The main comparison's two samples, [chains, d] each: the forward iterates at step N of
    chains 0..C−1 and the backward iterates at step N of chains C..2C−1, drawn exactly as
    `run_study` draws them for this study (same seed, same samples) but with nothing else
    recorded."""
    check_choice("problem", name, PROBLEMS)
    C, N = study.chains, study.steps
    if name == "network":
        problem, choices, theta0 = _network_setup(study, device)

        def at_last_step(chosen, order):
            maps = network_maps(problem, chosen, study.network_h)
            ((_, theta),) = iterates(maps, theta0.expand(C, 3), order, at=[N])
            return theta.cpu().numpy()
        return at_last_step(choices[:, :C], "forward"), at_last_step(choices[:, C:], "backward")
    draw, theta0, _ = _affine_problem(name, study)
    out = affine_chains(draw, theta0, N, 2 * C, _chain_rng(name, study), {N})
    return out["forward"][N][:C], out["backward"][N][C:]


def _replicate_base(study: StationaryStudy, chains: int) -> StationaryStudy:
    # trace chains are not drawn in a replicate; capped only so that the study stays valid
    return dataclasses.replace(study, chains=chains, trace_chains=min(study.trace_chains, chains))


def run_replicates(study: StationaryStudy, replicates: int, chains: int | None = None,
                   runtime: Runtime = Runtime()) -> dict:
    """The main comparison (forward at N against the backward limits, KS per coordinate at level
    alpha / d) on ``replicates`` independent replicates of every problem, each with its own seed
    (`replicate_seeds`) and ``chains`` chains per sample (default: the study's). Cached in
    ``<results_dir>/stationary-replicates-<hash>-<device>.json`` (the runtime's, as `run_study`).

    Returned: ``seeds``, ``chains`` and per problem ``tests`` (one `ks_summary` per replicate, in
    the order of the seeds) and ``compute_seconds`` (wall time of the run that filled the cache).
    """
    check_int("replicates", replicates, 1)
    chains = study.chains if chains is None else chains
    check_int("replicate_chains", chains, MIN_CHAINS)
    base = _replicate_base(study, chains)
    config = {"study": jsonable(study), "replicates": replicates, "chains": chains}
    path, device = _stored_at(runtime, f"stationary-replicates-{config_hash(config)}")

    def compute() -> dict:
        here = str(torch_device(device))
        seeds = replicate_seeds(study.seed, replicates)
        problems = {name: {"tests": [], "compute_seconds": 0.0} for name in PROBLEMS}
        for seed in seeds:
            replicate = dataclasses.replace(base, seed=seed)
            for name in PROBLEMS:
                start = time.perf_counter()
                forward, backward = final_samples(name, replicate, here)
                problems[name]["tests"].append(ks_summary(
                    f"replicate seed {seed}: forward at n={study.steps} vs backward limits",
                    forward, backward, study.alpha))
                problems[name]["compute_seconds"] += time.perf_counter() - start
        for entry in problems.values():
            entry["compute_seconds"] = round(entry["compute_seconds"], 1)
        return {"seeds": seeds, "chains": chains, "problems": problems}

    def check(result: dict) -> None:
        problems = result.get("problems")
        if not isinstance(problems, dict) or list(problems) != list(PROBLEMS):
            raise InvalidResult(f"does not hold the problems {', '.join(PROBLEMS)}")
        if any(len(p.get("tests", [])) != replicates for p in problems.values()):
            raise InvalidResult(f"does not hold {replicates} replicates of every problem")

    stored = cached(path, config, code_fingerprint(MODULES), compute, check, runtime.cache,
                    f"{replicates} replicates of {study!r}")
    return {"seeds": stored["seeds"], "chains": stored["chains"],
            "problems": nan_for_null(stored["problems"])}


def _replicate_summaries(replicates: dict, alpha: float) -> dict:
    return {name: rejection_summary([t["rejected"] for t in entry["tests"]], alpha)
            for name, entry in replicates["problems"].items()}


def replicate_table(replicates: dict, alpha: float) -> pd.DataFrame:
    """Per problem: the replicates, their chains per sample, how many rejected equality at level
    alpha / d, how many the level allows on average (replicates × alpha), and the exact binomial
    probability of that many rejections or more when the laws are equal."""
    rows = [{"problem": name, "replicates": s["replicates"],
             "chains per sample": replicates["chains"], "rejections": s["rejections"],
             "expected (R × alpha)": s["expected"],
             "P(at least this many | equal laws)": s["tail_p"]}
            for name, s in _replicate_summaries(replicates, alpha).items()]
    return pd.DataFrame(rows).set_index("problem")


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


def moments_table(result: dict) -> pd.DataFrame:
    """Least squares: the exact mean and standard deviation of the limit law per coordinate, next
    to those of the forward sample at N and of the backward limits."""
    rows = {(stat, source): result[f"{source}_{stat}"]
            for stat in ("mean", "sd") for source in ("exact", "forward", "backward")}
    names = [f"θ_{j + 1}" for j in range(result["dim"])]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=names)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["statistic", "sample"])
    return table


def rounded(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Every float written with ``digits`` significant digits, so that each cell keeps its own
    notation (a p-value of 1.2e-12 next to 0.5, which a float column would print alike): what the
    page shows, and what nbval compares. Other values (counts, verdicts) are kept."""
    def one(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.{digits}g}" if np.isfinite(value) else "n/a"
        return value
    return table.astype(object).map(one).astype(object)


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


def replicate_figure(replicates: dict, results: dict, alpha: float):
    """Per problem, the Bonferroni-adjusted p-value of the main comparison (d × the smallest p
    over the d coordinates, at most 1) in every replicate, against the level; the main run's as
    a larger marker. Equality is rejected below the line."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    jitter = np.random.default_rng(0)  # horizontal spread only, so that points do not overlap
    floor = 1e-6  # a p-value of 0 has no logarithm: drawn on the axis floor
    for i, name in enumerate(PROBLEMS):
        adjusted = [min(1.0, len(t["p"]) * min(t["p"]))
                    for t in replicates["problems"][name]["tests"]]
        x = i + jitter.uniform(-0.18, 0.18, len(adjusted))
        ax.scatter(x, np.maximum(adjusted, floor), s=14, color=ORDER_COLOURS["forward"],
                   alpha=0.8, label="replicates" if i == 0 else None)
        main = next(t for t in results[name]["tests"] if t["key"] == "main")
        ax.scatter([i + 0.32], [max(min(1.0, len(main["p"]) * min(main["p"])), floor)], s=60,
                   marker="*", color=ORDER_COLOURS["backward"],
                   label="main run" if i == 0 else None)
    ax.axhline(alpha, color="grey", ls="--", lw=0.8, label=f"level {alpha}")
    ax.set_yscale("log")
    ax.set_ylim(None, 1.5)
    ax.set_xticks(range(len(PROBLEMS)), [_TITLES[n] for n in PROBLEMS])
    ax.set_ylabel("d × smallest p over coordinates")
    # above the axes: points can fall anywhere inside them
    ax.legend(frameon=False, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# Captions and the numbers of the page's prose
# ------------------------------------------------------------------------------------------------

_NO_PAPER_FIGURE = ("Not a figure of the paper: the paper states Theorem 2.6 without an "
                    "experiment.")
FIGURES = ("histogram", "ks_distance", "trace", "replicates")


def figure_caption(kind: str, study: StationaryStudy, profile: str, name: str | None = None,
                   replicates: dict | None = None) -> str:
    """The caption of one of the page's figures (``kind`` in `FIGURES`; ``name``, the problem, for
    a histogram; ``replicates``, the `run_replicates` result, for the replicate figure): that the
    paper has no such figure, what is drawn and from how many chains, and the profile."""
    check_choice("figure", kind, FIGURES)
    C, N = study.chains, study.steps
    samples = (f"the forward iterates at step {N} of {C:,} chains and the backward iterates at "
               f"step {N} (the backward limits) of {C:,} other chains")
    if kind == "histogram":
        check_choice("problem", name, PROBLEMS)
        what = (f"{_TITLES[name].capitalize()}: histograms ({HISTOGRAM_BINS} shared bins per "
                f"coordinate) of {samples}; solid: forward, dashed: backward"
                + ("; black: the exact stationary Gaussian law" if name == "quadratic" else "")
                + ". One panel per coordinate.")
    elif kind == "ks_distance":
        grid = record_grid(N, study.grid_points)
        what = (f"Two-sample KS distance, per coordinate, between the forward iterates at step n "
                f"({C:,} chains) and the backward limits at step {N} ({C:,} other chains), at "
                f"{len(grid)} log-spaced steps n from {grid[0]} to {grid[-1]}. Dashed: the "
                f"asymptotic critical distance of one coordinate at level {study.alpha}; dotted: "
                f"the early step n = {study.early_step}.")
    elif kind == "trace":
        grid = record_grid(N, study.grid_points)
        what = (f"{study.trace_chains} single chains per problem, both orders on the same maps, "
                f"at {len(grid)} log-spaced steps from {grid[0]} to {grid[-1]}. Left: the first "
                f"coordinate; right: the step lengths, with k^n (dashed) and the median fitted "
                f"rate (dotted) drawn from the median first backward step.")
    else:
        if replicates is None:
            raise ValueError("the replicate figure's caption needs replicates (the run_replicates "
                             "result); got None")
        what = (f"The main comparison (forward at step {N} against the backward limits) in "
                f"{len(replicates['seeds'])} independent replicates, each with its own seed for "
                f"the maps and the chains and {replicates['chains']:,} chains per sample: per "
                f"problem, d times the smallest KS p-value over its d coordinates (capped at 1; "
                f"equality is rejected below the dashed level {study.alpha}); the star is the "
                f"main run of the sections above, which is not one of the replicates.")
    return f"{_NO_PAPER_FIGURE} {what} Profile `{profile}`."


def _verdict(test: dict) -> str:
    return "rejected" if test["rejected"] else "not rejected"


def page_numbers(study: StationaryStudy, results: dict, replicates: dict) -> dict:
    """Every number (and verdict) the page's conclusion quotes, by glue key.

    Settings: ``chains``, ``steps``, ``half_step``, ``early_step``, ``alpha``, ``wrong_scale``,
    ``replicates``, ``replicate_chains``. Per problem (``<problem>_`` prefix, `PROBLEMS`): for
    each KS comparison of the table (``main``, ``early_same``, ``early_limit``, ``widened`` and,
    for the quadratic, ``exact_forward``, ``exact_backward``, ``wrong_law``) the largest distance
    ``_D``, the smallest p ``_p`` and ``_verdict`` ("rejected" / "not rejected"); ``_level``
    (alpha / d); the contraction factor ``_k``, the median fitted rate ``_rate`` over
    ``_rate_chains`` chains; the largest backward and median forward move between N/2 and N
    (``_backward_drift_max``, ``_forward_drift_median``); one forward chain's spread over time
    over the spread across backward limits (``_single_chain_ratio``, median over coordinates of
    the medians over chains); and the replicates' ``_rep_rejections``, ``_rep_expected`` and
    ``_rep_tail_p``. Across problems: ``rep_rejections``, ``rep_tests``, ``rep_expected``,
    ``rep_tail_p``; ``regression_moment_gap`` (largest distance of a sample's mean or sd from
    the exact one); ``network_k_start`` (the tanh unit's factor at θ_0).
    """
    numbers: dict = {"chains": study.chains, "steps": study.steps, "half_step": study.steps // 2,
                     "early_step": study.early_step, "alpha": study.alpha,
                     "wrong_scale": study.wrong_scale, "replicates": len(replicates["seeds"]),
                     "replicate_chains": replicates["chains"]}
    summaries = _replicate_summaries(replicates, study.alpha)
    for name in PROBLEMS:
        r = results[name]
        for test in r["tests"]:
            prefix = f"{name}_{test['key']}"
            numbers.update({f"{prefix}_D": max(test["D"]), f"{prefix}_p": min(test["p"]),
                            f"{prefix}_verdict": _verdict(test)})
        numbers.update({
            f"{name}_level": study.alpha / r["dim"], f"{name}_k": r["k"],
            f"{name}_rate": r["rates"].get("median", float("nan")),
            f"{name}_rate_chains": r["rates"]["chains"],
            f"{name}_backward_drift_max": r["backward_drift"]["max"],
            f"{name}_forward_drift_median": r["forward_drift"]["median"],
            f"{name}_single_chain_ratio": float(np.median(
                np.array(r["single_chain_sd"]) / np.array(r["backward_sd"]))),
            f"{name}_rep_rejections": summaries[name]["rejections"],
            f"{name}_rep_expected": summaries[name]["expected"],
            f"{name}_rep_tail_p": summaries[name]["tail_p"]})
    # the problems' replicates draw on disjoint streams, so all their tests are independent
    everything = [t["rejected"] for entry in replicates["problems"].values()
                  for t in entry["tests"]]
    total = rejection_summary(everything, study.alpha)
    numbers.update({"rep_rejections": total["rejections"], "rep_tests": total["replicates"],
                    "rep_expected": total["expected"], "rep_tail_p": total["tail_p"]})
    ls = results["regression"]
    numbers["regression_moment_gap"] = float(max(
        np.max(np.abs(np.array(ls[f"{source}_{stat}"]) - np.array(ls[f"exact_{stat}"])))
        for source in ("forward", "backward") for stat in ("mean", "sd")))
    numbers["network_k_start"] = results["network"]["k_start"]
    return numbers


class StationaryPage(NamedTuple):
    study: StationaryStudy
    replicates: int
    replicate_chains: int


def page_setup(values: dict) -> StationaryPage:
    """The Theorem 2.6 page's study and its replicates, from the template's parameter values."""
    names = {f.name for f in dataclasses.fields(StationaryStudy)}
    return StationaryPage(StationaryStudy(**{k: v for k, v in values.items() if k in names}),
                          values["replicates"], values["replicate_chains"])


def page_loads(page: StationaryPage, runtime: Runtime) -> list:
    return [(repr(page.study), lambda: run_study(page.study, runtime)),
            (f"replicates of {page.study!r}", lambda: run_replicates(
                page.study, page.replicates, page.replicate_chains, runtime))]
