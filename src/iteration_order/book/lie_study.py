"""Appendix C's book page: backward SGD against forward SGD and its Lie-bracket correction.

`LieStudy` is the page's frozen config: a `TrajectoryConfig` (network, data, schedule, h), a sweep
of learning rates as multiples of h, the steps at which the sweep is measured, and the activation,
dtype and method of `lie.corrections`. `run_study` measures ‖θ^B_n − θ_n‖ and ‖θ^B_n − θ̃_n‖ for
the sweep of h and along the training run, and caches the numbers under ``results/lie/``. From a
result:

* `fitted_slope`, `crossover`, `useful_limit` — the log-log slope of an error against h
  (least squares, ``numpy.polyfit``), and where the correction stops helping;
* `sweep_table`, `steps_table` — the page's tables;
* `plot_sweep`, `plot_steps` — the page's figures.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import stability
from ..cache import InvalidResult, cached, code_fingerprint, config_hash, jsonable, nan_for_null
from ..data import Dataset
from ..evaluation import Evaluator, loss_function
from ..hessian import flatten
from ..lie import METHODS, State, _corrected, corrections
from ..maps import initial_state, sgd_maps
from ..models import MLP
from ..orders import iterates
from .plots import ORDER_COLOURS
from ..trajectory import (TRAJECTORY_MODULES, Runtime, TrajectoryConfig, parse_record, prepare,
                          resolve_device)
from ..validation import check_choice, check_int, check_list, check_number

__all__ = ["LieStudy", "run_study", "fitted_slope", "crossover", "useful_limit", "sweep_table",
           "steps_table", "plot_sweep", "plot_steps"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# What determines the study's numbers: the trajectory's code, Appendix C's method, the ratio of
# `stability` and this module.
MODULES = (*TRAJECTORY_MODULES, "hessian", "lie", "stability", "book.lie_study")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


# ------------------------------------------------------------------------------------------------
# The study of the book page: Theorem C.2's orders, and the approximation along training
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LieStudy:
    """θ_n, θ̃_n and θ^B_n compared on one network, one data set and one batch schedule.

    Along the run, at the learning rate ``trajectory.lr``, at the steps ``trajectory.record``
    names; and for the sweep h = factor·``trajectory.lr`` at the steps ``sweep_at``. Of the
    trajectory's fields, the order, ``record_forward`` and the optimiser (SGD only) play no part.
    """

    trajectory: TrajectoryConfig   # data, network, init, seed, schedule, h; record = steps compared
                                   # (a dict of its fields is converted)
    lr_factors: tuple[float, ...]  # the sweep of h, as multiples of trajectory.lr
    sweep_at: tuple[int, ...]      # steps n at which the sweep is measured
    fit_points: int = 4            # log-log slopes use this many smallest h of the sweep
    activation: str = "relu"       # relu (the book's MLP) | tanh (its ReLUs swapped: smooth fields)
    dtype: str = "float64"         # float64 keeps round-off far below the h³ term
    method: str = "running-sum"    # how C_n is computed (see METHODS)

    def __post_init__(self):
        t = self.trajectory
        if isinstance(t, Mapping):  # a page's plain values
            t = TrajectoryConfig.from_fields(t, "trajectory")
            object.__setattr__(self, "trajectory", t)
        if not isinstance(t, TrajectoryConfig):
            raise ValueError(f"trajectory must be a TrajectoryConfig or a dict of its fields; "
                             f"got {t!r}")
        if t.optimizer != "sgd" or t.update != "sgd":
            raise ValueError(f"the correction of Definition C.3 is for plain SGD; got "
                             f"optimizer={t.optimizer!r}, update={t.update!r}")
        factors = check_list("lr_factors", self.lr_factors, [0.01, 0.1, 1.0],
                             lambda name, f: check_number(name, f, 0, low_open=True))
        if not factors:
            raise ValueError("lr_factors must name at least one multiple of lr; got []")
        object.__setattr__(self, "lr_factors", tuple(sorted(set(map(float, factors)))))
        sweep = check_list("sweep_at", self.sweep_at, [10, t.steps],
                           lambda name, n: check_int(name, n, 1, t.steps))
        if not sweep:
            raise ValueError(f"sweep_at must name at least one step in 1..{t.steps}; got []")
        object.__setattr__(self, "sweep_at", tuple(sorted(set(sweep))))
        distinct = len(self.lr_factors)  # a repeated factor is one point of the fit
        check_int(f"fit_points (at most the {distinct} distinct lr_factors)", self.fit_points, 2,
                  distinct)
        check_choice("activation", self.activation, ACTIVATIONS)
        if self.activation != "relu" and t.model != "mlp":
            raise ValueError(f"activation={self.activation!r} swaps the ReLUs of the MLP; "
                             f"model {t.model!r} keeps its own")
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("method", self.method, METHODS)

    def identity(self) -> dict:
        """What names the cached result: the trajectory's own identity (fields added to it later
        count only away from their defaults, so earlier results keep their names) and ours."""
        return {**dataclasses.asdict(self), "trajectory": self.trajectory.identity()}

    @property
    def steps(self) -> list[int]:
        """The steps compared along the run at the trajectory's learning rate."""
        return parse_record(self.trajectory.record, self.trajectory.steps)

    @property
    def lrs(self) -> list[float]:
        return [f * self.trajectory.lr for f in self.lr_factors]


def _distance(a: State, b: State) -> float:
    return float((flatten(a) - flatten(b)).norm())


def fitted_slope(lrs, errors) -> float:
    """Least-squares slope of log(error) against log(h); NaN unless two finite, positive errors."""
    x, y = np.log(np.asarray(lrs, float)), np.asarray(errors, float)
    keep = np.isfinite(y) & (y > 0)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(x[keep], np.log(y[keep]), 1)[0])


def crossover(lrs, forward_errors, approx_errors) -> float:
    """The smallest h of the sweep at which θ̃_n stops being closer to θ^B_n than θ_n is
    (‖θ^B_n − θ̃_n‖ ≥ ‖θ^B_n − θ_n‖, or a diverged run); NaN if it never happens in the sweep."""
    for lr, f, a in zip(lrs, forward_errors, approx_errors):
        if not (math.isfinite(f) and math.isfinite(a) and a < f):
            return float(lr)
    return math.nan


def useful_limit(lrs, forward_errors, approx_errors, ratio: float = 0.5) -> float:
    """The largest h of the sweep up to which, from its smallest h on, the correction shrinks the
    distance to θ^B_n by at least ``ratio`` (‖θ^B_n − θ̃_n‖ ≤ ratio·‖θ^B_n − θ_n‖); NaN if it
    does not even at the smallest h. Unlike `crossover`, robust when the two errors nearly agree."""
    limit = math.nan
    for lr, f, a in zip(lrs, forward_errors, approx_errors):
        if not (math.isfinite(f) and math.isfinite(a) and a <= ratio * f):
            break
        limit = float(lr)
    return limit


def _first_sign_change(lrs, sign_changes) -> float:
    """The smallest h of the sweep at which some hidden unit changed sign (for ReLU: a kink
    crossed); NaN if none did or the run diverged."""
    changed = [lr for lr, c in zip(lrs, sign_changes) if c > 0]
    return min(changed) if changed else math.nan


def _finite(state: State) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values())


@dataclass
class _Problem:
    """One study's network, data and schedule, in the study's dtype."""

    model: nn.Module
    data: Dataset
    schedule: torch.Tensor
    evaluate: Evaluator

    def compare(self, lr: float, steps: list[int], C: dict[int, State]) -> dict[int, dict]:
        """θ_n (one forward pass), θ^B_n (the order engine's backward) and θ̃_n = θ_n + h²C_n at
        ``steps``: their distances, and the iterates themselves under ``"states"``."""
        maps = sgd_maps(self.model, loss_function(self.data.task), self.data.x_train,
                        self.data.y_train, self.schedule, lr)
        theta0 = initial_state(self.model)
        forward = dict(iterates(maps, theta0, "forward", at=steps))
        backward = dict(iterates(maps, theta0, "backward", at=steps))
        out = {}
        for n in steps:
            approx = _corrected(forward[n], C[n], lr)
            out[n] = {**self._distances(n, theta0, forward[n], backward[n], approx),
                      "states": {"forward": forward[n], "backward": backward[n], "approx": approx}}
        return out

    def _distances(self, n: int, theta0: State, forward: State, backward: State,
                   approx: State) -> dict:
        if not (_finite(forward) and _finite(backward)):  # a diverged run: nothing to compare
            return dict.fromkeys(("forward_error", "approx_error", "travel", "sign_changes"),
                                 math.nan)
        return {"forward_error": _distance(backward, forward),
                "approx_error": _distance(backward, approx),
                "travel": _distance(backward, theta0),
                "sign_changes": self.sign_changes(n, theta0, forward, backward)}

    def sign_changes(self, n: int, theta0: State, *states: State) -> int | float:
        """For the MLP: how many (example of batches 1..n, hidden unit) pairs have a pre-activation
        whose sign differs between θ_0 and any of ``states``. For ReLU each is a kink crossed, where
        the gradient field is not differentiable and the Taylor expansion behind Theorem C.2 fails."""
        if not isinstance(self.model, MLP):
            return math.nan
        x = self.data.x_train[self.schedule[:n].reshape(-1)]
        start = _hidden_signs(self.model, theta0, x)
        changed = torch.zeros_like(start)
        for state in states:
            changed |= start != _hidden_signs(self.model, state, x)
        return int(changed.sum())


def _hidden_signs(model: MLP, state: State, x: torch.Tensor) -> torch.Tensor:
    """Which hidden pre-activations of the MLP are positive at ``state``, for every row of ``x``."""
    layers, signs = list(model), []
    with torch.no_grad():
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                x = nn.functional.linear(x, state[f"{i}.weight"], state[f"{i}.bias"])
                if i < len(layers) - 1:
                    signs.append((x > 0).reshape(-1))
            else:
                x = layer(x)
    return torch.cat(signs)


def _problem(study: LieStudy, runtime: Runtime) -> _Problem:
    """The run's network, data and schedule (those of `prepare`), cast to the study's dtype."""
    run = prepare(study.trajectory, runtime)
    dtype = DTYPES[study.dtype]
    model = copy.deepcopy(run.model).to(dtype)
    if study.activation != "relu":
        for i, layer in enumerate(model):
            if isinstance(layer, nn.ReLU):
                model[i] = ACTIVATIONS[study.activation]()
    cast = (lambda y: y.to(dtype)) if run.data.task == "regression" else (lambda y: y)
    data = dataclasses.replace(run.data, x_train=run.data.x_train.to(dtype),
                               y_train=cast(run.data.y_train), x_test=run.data.x_test.to(dtype),
                               y_test=cast(run.data.y_test))
    evaluate = Evaluator(model, data, study.trajectory.seed, study.trajectory.eval_train_size,
                         study.trajectory.eval_test_size)
    return _Problem(model, data, run.schedule.to(data.x_train.device), evaluate)


def run_study(study: LieStudy, runtime: Runtime = Runtime()) -> dict:
    """Measure the study (or load it from ``<runtime.results_dir>/lie/<hash>-<device>.json``).

    ``along`` (at h = trajectory.lr, per step of ``trajectory.record``): ‖θ^B_n − θ_n‖
    (``forward_error``), ‖θ^B_n − θ̃_n‖ (``approx_error``), their ratio, ‖θ^B_n − θ_0‖
    (``travel``), the correction's size h²‖C_n‖, the sign changes of hidden units, and the train and
    test losses of the three iterates. ``sweep`` (per step of ``sweep_at``): both errors and the
    sign changes for every h, the errors' log-log slopes on the ``fit_points`` smallest h, and the
    `crossover` h. A stored study is used only while valid for this study and code (`cache`;
    ``runtime.cache``).
    """
    device = resolve_device(runtime.device).type
    path = Path(runtime.results_dir) / "lie" / f"{config_hash(study.identity())}-{device}.json"
    result = cached(path, jsonable(study), code_fingerprint(MODULES),
                    lambda: _measure(study, runtime, path.stem), lambda r: _check_study(study, r),
                    runtime.cache, repr(study))
    # nothing in these two is None when computed: a null read back is a NaN (strict JSON)
    return {**result, "along": nan_for_null(result["along"]),
            "sweep": nan_for_null(result["sweep"])}


def _check_study(study: LieStudy, result: dict) -> None:
    """A stored study has one entry per step along the run and per h of every sweep; raises
    `InvalidResult` otherwise."""
    along, sweep = result.get("along"), result.get("sweep")
    if not isinstance(along, dict) or along.get("step") != study.steps:
        raise InvalidResult(f"does not hold the steps {study.steps} along the run")
    if any(not isinstance(v, list) or len(v) != len(study.steps) for v in along.values()):
        raise InvalidResult(f"has a curve along the run without {len(study.steps)} entries")
    if not isinstance(sweep, dict) or list(sweep) != [str(n) for n in study.sweep_at]:
        raise InvalidResult(f"does not hold the sweep at the steps {list(study.sweep_at)}")
    for n, s in sweep.items():
        if any(not isinstance(s.get(k), list) or len(s[k]) != len(study.lrs)
               for k in ("forward_error", "approx_error", "sign_changes")):
            raise InvalidResult(f"has a sweep at n = {n} without {len(study.lrs)} entries per h")


def _measure(study: LieStudy, runtime: Runtime, key: str) -> dict:
    """The study's numbers, computed (the cache adds config and fingerprint)."""
    device = resolve_device(runtime.device).type
    start = time.perf_counter()
    problem = _problem(study, runtime)
    along, sweep_at = study.steps, list(study.sweep_at)
    tic = time.perf_counter()
    C = corrections(problem.model, loss_function(problem.data.task), problem.data.x_train,
                    problem.data.y_train, problem.schedule, sorted(set(along) | set(sweep_at)),
                    study.method)
    correction_seconds = time.perf_counter() - tic

    h = study.trajectory.lr
    rows = []
    for n, measured in problem.compare(h, along, C).items():
        states = measured.pop("states")
        row = {"step": n, **measured, "correction": h ** 2 * float(flatten(C[n]).norm())}
        # NaN at n = 1, where both errors vanish
        row["ratio"] = stability.ratio(row["approx_error"], row["forward_error"])
        for name, state in states.items():
            metrics = problem.evaluate(state)
            row[f"{name}_train_loss"] = metrics["train_loss"]
            row[f"{name}_test_loss"] = metrics["test_loss"]
        rows.append(row)

    keys = ("forward_error", "approx_error", "sign_changes")
    sweep = {n: {key: [] for key in keys} for n in sweep_at}
    for lr in study.lrs:
        for n, measured in problem.compare(lr, sweep_at, C).items():
            for key in keys:
                sweep[n][key].append(measured[key])
    k = study.fit_points
    for s in sweep.values():
        s["forward_slope"] = fitted_slope(study.lrs[:k], s["forward_error"][:k])
        s["approx_slope"] = fitted_slope(study.lrs[:k], s["approx_error"][:k])
        s["crossover"] = crossover(study.lrs, s["forward_error"], s["approx_error"])

    return {
        "study": dataclasses.asdict(study),
        "key": key,
        "data": problem.data.note,
        "parameters": sum(p.numel() for p in problem.model.parameters()),
        "lrs": study.lrs,
        "along": {key: [r[key] for r in rows] for key in rows[0]},
        "sweep": {str(n): s for n, s in sweep.items()},
        "runtime": {"device": device, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "wall_seconds": time.perf_counter() - start,
                    "correction_seconds": correction_seconds},
    }


def sweep_table(results: dict[str, dict]) -> pd.DataFrame:
    """Per study (keyed by a label) and step n of its sweep: the fitted slopes, the ratio
    ‖θ^B_n − θ̃_n‖ / ‖θ^B_n − θ_n‖ at the smallest h, `useful_limit`, `crossover`, and the smallest
    h at which a hidden unit changed sign (for ReLU: a kink crossed)."""
    rows = []
    for label, result in results.items():
        lrs = result["lrs"]
        for n, s in result["sweep"].items():
            f, a = s["forward_error"], s["approx_error"]
            rows.append({"study": label, "n": int(n), "slope forward": s["forward_slope"],
                         "slope corrected": s["approx_slope"],
                         "ratio at smallest h": stability.ratio(a[0], f[0]),
                         "halves gap up to h": useful_limit(lrs, f, a),
                         "crossover h": s["crossover"],
                         "first h with a sign change": _first_sign_change(lrs, s["sign_changes"])})
    return pd.DataFrame(rows).set_index(["study", "n"])


def steps_table(result: dict) -> pd.DataFrame:
    """Along the run at its own h: both errors, their ratio, the correction's size, the sign
    changes and the train loss of θ_n, θ^B_n and θ̃_n."""
    along = result["along"]
    return pd.DataFrame({
        "n": along["step"], "|θB-θ|": along["forward_error"], "|θB-θ~|": along["approx_error"],
        "ratio": along["ratio"], "h²|C|": along["correction"], "sign changes": along["sign_changes"],
        "loss θ": along["forward_train_loss"], "loss θB": along["backward_train_loss"],
        "loss θ~": along["approx_train_loss"]}).set_index("n")


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

_APPROX_COLOUR = ORDER_COLOURS["reset"]  # a third colour of the same colour-blind palette


def plot_sweep(result: dict, title: str = ""):
    """Errors against h on log-log axes, one panel per step of the sweep, with slope-2 and
    slope-3 guides through the smallest h, the crossover (dashed) and, for ReLU, the range of h
    in which some hidden unit changed sign (shaded)."""
    lrs = np.asarray(result["lrs"])
    steps = list(result["sweep"])
    fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 3.6), squeeze=False,
                             sharey=True)
    for ax, n in zip(axes[0], steps):
        s = result["sweep"][n]
        f, a = np.asarray(s["forward_error"], float), np.asarray(s["approx_error"], float)
        ax.loglog(lrs, f, "o-", color=ORDER_COLOURS["forward"],
                  label=r"forward: $\|\theta^B_n-\theta_n\|$")
        ax.loglog(lrs, a, "s-", color=_APPROX_COLOUR,
                  label=r"corrected: $\|\theta^B_n-\tilde\theta_n\|$")
        guides = [(values, power) for values, power in ((f, 2), (a, 3))
                  if np.isfinite(values[0]) and values[0] > 0]
        for k, (values, power) in enumerate(guides):
            ax.loglog(lrs, values[0] * (lrs / lrs[0]) ** power, ":", color="0.5", lw=1,
                      label="slopes 2 and 3 from the smallest h" if k == 0 else None)
        if math.isfinite(s["crossover"]):
            ax.axvline(s["crossover"], color="0.3", lw=1, ls="--")
        changed_from = _first_sign_change(lrs, s["sign_changes"])
        if math.isfinite(changed_from) and result["study"]["activation"] == "relu":
            ax.axvspan(changed_from, lrs[-1], color="0.85", alpha=0.5, lw=0,
                       label="some ReLU changed sign")
        ax.set_title(f"n = {n}: slopes {s['forward_slope']:.2f} and {s['approx_slope']:.2f}",
                     fontsize=10)
        ax.set_xlabel("learning rate h")
    errors = np.array([e for s in result["sweep"].values()
                       for e in (*s["forward_error"], *s["approx_error"])], float)
    errors = errors[np.isfinite(errors) & (errors > 0)]
    if errors.size:  # one range for the shared axis, so that no panel's points are cut off
        axes[0][0].set_ylim(errors.min() / 3, errors.max() * 3)
    axes[0][0].set_ylabel("distance to the backward iterate")
    axes[0][0].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_steps(results: list[dict], titles: list[str]):
    """Along each run at its own h: the two errors against n (left) and their ratio (right)."""
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.3 * len(results)), squeeze=False)
    for (left, right), result, title in zip(axes, results, titles):
        along = result["along"]
        steps = np.asarray(along["step"])
        left.loglog(steps, along["forward_error"], "o-", color=ORDER_COLOURS["forward"],
                    label=r"forward: $\|\theta^B_n-\theta_n\|$")
        left.loglog(steps, along["approx_error"], "s-", color=_APPROX_COLOUR,
                    label=r"corrected: $\|\theta^B_n-\tilde\theta_n\|$")
        left.loglog(steps, along["correction"], "--", color="0.5", lw=1,
                    label=r"correction size $h^2\|C_n\|$")
        left.set_xlabel("step n")
        left.set_ylabel("distance")
        left.set_title(title, fontsize=10)
        left.legend(fontsize=8)
        right.loglog(steps, along["ratio"], "s-", color=_APPROX_COLOUR)
        right.axhline(1, color="0.3", lw=1, ls="--")
        right.set_xlabel("step n")
        right.set_ylabel(r"$\|\theta^B_n-\tilde\theta_n\| \,/\, \|\theta^B_n-\theta_n\|$")
        right.set_title("below 1: the correction helps", fontsize=10)
    fig.tight_layout()
    return fig
