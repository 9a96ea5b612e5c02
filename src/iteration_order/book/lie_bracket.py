"""Appendix C's book page: backward SGD against forward SGD and its Lie-bracket correction.

`LieStudy` is the page's frozen config: a `TrajectoryConfig` (network, data, schedule, h), a sweep
of learning rates as multiples of h, the steps at which the sweep is measured, and the activation,
dtype and method of `lie.corrections`. `run_study` measures ‖θ^B_n − θ_n‖ and ‖θ^B_n − θ̃_n‖ for
the sweep of h and along the training run, and caches the numbers under ``results/lie/``. From a
result:

* `fitted_slope`, `crossover`, `useful_limit` — the log-log slope of an error against h
  (least squares, ``numpy.polyfit``), and where the correction stops helping;
* `h3_line`, `leaves_h3_line`, `rule_table`, `rule_numbers` — where the corrected error leaves its
  h³ line, against the first h at which a hidden unit changes sign (the page's kink rule, checked);
* `sweep_table`, `steps_table`, `rule_table` and `shown` — the page's tables (`shown`: rounded to
  3 significant figures, as strings, for the HTML page and nbval);
* `plot_sweeps`, `plot_steps` and their captions — the page's figures;
* `page_numbers` — every number the page's conclusion quotes, by glue key.
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
from ..devices import device_type
from ..trajectory import TRAJECTORY_MODULES, Runtime, TrajectoryConfig, parse_record, prepare
from ..validation import check_choice, check_int, check_list, check_number

__all__ = ["LieStudy", "run_study", "fitted_slope", "crossover", "useful_limit", "h3_line",
           "leaves_h3_line", "sweep_table", "steps_table", "rule_table", "rule_numbers", "shown",
           "describe", "run_key", "plot_sweeps", "sweep_caption", "plot_steps", "steps_caption",
           "page_numbers", "LEAVE_FACTOR", "SLOPE_TOLERANCE"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# What determines the study's numbers: the trajectory's code, Appendix C's method, the ratio of
# `stability` and this module.
MODULES = (*TRAJECTORY_MODULES, "hessian", "lie", "stability", "book.lie_bracket")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
# "The corrected error leaves its h³ line" at the first h where it is off the line c·h³ by more
# than this factor either way. On the book's small ReLU network a departure is a jump by more than
# an order of magnitude from one h to the next, so the factor hardly matters there; a smooth (tanh)
# field bends away gradually through its higher-order terms, and 2 is where we call that "off the
# line".
LEAVE_FACTOR = 2.0
# The line exists only where the corrected error's slope on the smallest h is 3 to within this:
# at float64 round-off (about 1e-14 for these parameter vectors) the slope is near 0 instead.
SLOPE_TOLERANCE = 0.1


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
    """The smallest h of the sweep with a positive count of sign changes (end points: `sign_changes`
    of `_Problem`; points where a gradient is taken: its `kinks`); NaN if there is none (a
    diverged run, NaN, counts as none)."""
    changed = [lr for lr, c in zip(lrs, sign_changes) if c > 0]
    return min(changed) if changed else math.nan


def _check_fit(fit_points: int, lrs, factor: float = LEAVE_FACTOR,
               tolerance: float = SLOPE_TOLERANCE) -> None:
    check_int("fit_points", fit_points, 2, len(lrs))
    check_number("factor", factor, 1, low_open=True)
    check_number("tolerance", tolerance, 0, low_open=True)


def h3_line(lrs, errors, fit_points: int, tolerance: float = SLOPE_TOLERANCE) -> float:
    """c of the line c·h³ through the corrected errors at the ``fit_points`` smallest h (the
    geometric mean of error/h³ there), when those errors are finite, positive and their fitted
    log-log slope is within ``tolerance`` of 3; NaN otherwise: there is no h³ regime in the sweep
    (in the larger networks the smallest errors sit at float64 round-off, slope near 0).
    ``lrs`` ascending, as in a study."""
    _check_fit(fit_points, lrs, tolerance=tolerance)
    h = np.asarray(lrs, float)[:fit_points]
    e = np.asarray(errors, float)[:fit_points]
    if not np.all(np.isfinite(e) & (e > 0)) or abs(fitted_slope(h, e) - 3) > tolerance:
        return math.nan
    return float(np.exp(np.mean(np.log(e / h ** 3))))


def leaves_h3_line(lrs, errors, fit_points: int, factor: float = LEAVE_FACTOR,
                   tolerance: float = SLOPE_TOLERANCE) -> float:
    """The smallest h of the sweep at which the corrected error is off its `h3_line` by more than
    ``factor`` either way, or not finite (a diverged run); NaN if that never happens in the sweep
    or there is no line (then `h3_line` is NaN too)."""
    _check_fit(fit_points, lrs, factor, tolerance)
    c = h3_line(lrs, errors, fit_points, tolerance)
    if math.isnan(c):
        return math.nan
    for lr, e in zip(lrs, errors):
        off = e / (c * lr ** 3) if math.isfinite(e) else math.inf
        if not (1 / factor <= off <= factor):
            return float(lr)
    return math.nan


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

    def kinks(self, lr: float, steps: list[int]) -> dict[int, int | float]:
        """For the MLP, per step n: how many (map application, example, hidden unit) triples of
        the forward and the backward composition up to n apply T_i at a point where the unit's
        pre-activation on an example of batch i has another sign than at θ_0.

        Only these points enter θ_n and θ^B_n: ∇L_i is taken there, on batch i's examples. For ReLU
        each triple is a kink of ∇L_i between θ_0 and that point, so the Taylor expansion of ∇L_i at
        θ_0 that Theorem C.2 rests on no longer describes that step. (`sign_changes` looks at the
        end points θ_n and θ^B_n, which enter no gradient.) NaN for other models, and once a
        composition leaves the finite numbers."""
        if not isinstance(self.model, MLP):
            return dict.fromkeys(steps, math.nan)
        maps = sgd_maps(self.model, loss_function(self.data.task), self.data.x_train,
                        self.data.y_train, self.schedule, lr)
        theta0 = initial_state(self.model)
        batches = [self.data.x_train[self.schedule[i]] for i in range(max(steps))]
        start = [_hidden_signs(self.model, theta0, x) for x in batches]

        def crossed(state: State, i: int) -> int | float:  # T_{i+1} applied at ``state``
            if not _finite(state):
                return math.nan
            return int((_hidden_signs(self.model, state, batches[i]) != start[i]).sum())

        forward, state, out = {}, theta0, {}
        total = 0
        for i in range(max(steps)):  # θ_{i+1} = T_{i+1}(θ_i): one path serves every n
            total += crossed(state, i)
            state = maps[i](state)
            forward[i + 1] = total
        for n in steps:
            state, total = theta0, forward[n]
            for i in reversed(range(n)):  # θ^B_n = T_1(...T_n(θ_0))
                total += crossed(state, i)
                state = maps[i](state)
            out[n] = total
        return out


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
    test losses of the three iterates. ``sweep`` (per step of ``sweep_at``): for every h both
    errors, the sign changes at the end points and the kinks in a gradient (`_Problem.kinks`);
    the errors' log-log slopes on the ``fit_points`` smallest h, and the `crossover` h. A stored study is used only while valid for this study and code (`cache`;
    ``runtime.cache``).
    """
    device = device_type(runtime.device)
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
    device = device_type(runtime.device)
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
    sweep = {n: {key: [] for key in (*keys, "kinks")} for n in sweep_at}
    for lr in study.lrs:
        for n, measured in problem.compare(lr, sweep_at, C).items():
            for key in keys:
                sweep[n][key].append(measured[key])
        for n, count in problem.kinks(lr, sweep_at).items():
            sweep[n]["kinks"].append(count)
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
        # the order engine's iterates, one map at a time (the provenance names the engine)
        "runtime": {"device": device, "engine": "sequential", "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "wall_seconds": time.perf_counter() - start,
                    "correction_seconds": correction_seconds},
    }


def describe(result: dict, lr: bool = True) -> str:
    """A study's network, data and (unless ``lr`` is False: a check, whose sweep is the point)
    learning rate in a few words, for titles and table labels."""
    study, t = result["study"], result["study"]["trajectory"]
    kind = "MLP" if study["activation"] == "relu" else f"{study['activation']} MLP"
    return (f"{t['dataset']}, {kind} {t['depth']}×{t['width']}"
            + (f", h = {t['lr']:g}" if lr else "") + f", batch {t['batch_size']}")


def run_key(result: dict) -> str:
    """The glue-key prefix of a training run: its data set's name in letters and digits, without
    'synthetic' (``cos10``, ``fashionmnist``)."""
    name = result["study"]["trajectory"]["dataset"].removeprefix("synthetic-")
    return "".join(c for c in name if c.isalnum())


def sweep_table(results: dict[str, dict]) -> pd.DataFrame:
    """Per study (keyed by a label) and step n of its sweep: the fitted slopes, the ratio
    ‖θ^B_n − θ̃_n‖ / ‖θ^B_n − θ_n‖ at the smallest h, `useful_limit` and `crossover`."""
    rows = []
    for label, result in results.items():
        lrs = result["lrs"]
        for n, s in result["sweep"].items():
            f, a = s["forward_error"], s["approx_error"]
            rows.append({"study": label, "n": int(n), "slope of ‖θB−θ‖": s["forward_slope"],
                         "slope of ‖θB−θ̃‖": s["approx_slope"],
                         "ratio ‖θB−θ̃‖/‖θB−θ‖ at smallest h": stability.ratio(a[0], f[0]),
                         "correction halves the gap up to h": useful_limit(lrs, f, a),
                         "crossover h": s["crossover"]})
    return pd.DataFrame(rows).set_index(["study", "n"])


SWEEP_MISSING = {"correction halves the gap up to h": "not even at the smallest h",
                 "crossover h": "not in the sweep"}


def steps_table(result: dict) -> pd.DataFrame:
    """Along the run at its own h: both errors, their ratio, the correction's size, the sign
    changes and the train loss of θ_n, θ^B_n and θ̃_n."""
    along = result["along"]
    return pd.DataFrame({
        "n": along["step"], "‖θB−θ‖": along["forward_error"], "‖θB−θ̃‖": along["approx_error"],
        "ratio ‖θB−θ̃‖/‖θB−θ‖": along["ratio"], "h²‖C_n‖": along["correction"],
        "sign changes at θ_n, θB_n": along["sign_changes"],
        "train loss θ_n": along["forward_train_loss"],
        "train loss θB_n": along["backward_train_loss"],
        "train loss θ̃_n": along["approx_train_loss"]}).set_index("n")


def helps_at(result: dict) -> tuple[list[int], list[int]]:
    """The steps along the run where the correction brings θ_n closer to θ^B_n (ratio < 1), and
    those where it does not (ratio ≥ 1, or a diverged run); n = 1, where the ratio is undefined
    because the three iterates coincide, is in neither."""
    along = result["along"]
    helps = [n for n, r in zip(along["step"], along["ratio"]) if r < 1]
    hurts = [n for n, r, f in zip(along["step"], along["ratio"], along["forward_error"])
             if not r < 1 and not (f == 0)]
    return helps, hurts


def _same(a: float, b: float) -> bool:
    """Equal h, or neither found in the sweep."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def _verdict(leaves: float, first: float, line: float, activation: str) -> str:
    """Does 'the corrected error leaves its h³ line at the first h with a sign change' hold?"""
    if activation != "relu":
        return "n/a (no kinks)"
    if math.isnan(line):
        return "untestable (no h³ line)"
    if _same(leaves, first):
        return "holds"
    if math.isnan(leaves):
        return "fails (stays on the line)"
    if math.isnan(first):
        return "fails (leaves, no sign change)"
    return "fails (leaves later)" if leaves > first else "fails (leaves earlier)"


def rule_table(results: dict[str, dict], factor: float = LEAVE_FACTOR,
               tolerance: float = SLOPE_TOLERANCE) -> pd.DataFrame:
    """Per study (keyed by a label) and step n of its sweep: where the corrected error leaves its
    h³ line (`leaves_h3_line`), the first h with a hidden unit's sign changed at the end points
    θ_n or θ^B_n (``sign_changes``) and at a point where a gradient is taken (``kinks``), and
    whether the page's rule — 'with ReLU the corrected error leaves the h³ line at the first h
    where a hidden unit changes sign' — holds with either meaning of the sign change."""
    rows = []
    for label, result in results.items():
        lrs, k = result["lrs"], result["study"]["fit_points"]
        activation = result["study"]["activation"]
        for n, s in result["sweep"].items():
            a = s["approx_error"]
            line = h3_line(lrs, a, k, tolerance)
            leaves = leaves_h3_line(lrs, a, k, factor, tolerance)
            first_end = _first_sign_change(lrs, s["sign_changes"])
            first_kink = _first_sign_change(lrs, s["kinks"])
            rows.append({"study": label, "n": int(n), "activation": activation,
                         "h³ line c (‖θB−θ̃‖ ≈ c·h³)": line,
                         "leaves the h³ line at h": leaves,
                         "first sign change at θ_n or θB_n, h": first_end,
                         "first kink in a gradient, h": first_kink,
                         "rule, sign change at the end points": _verdict(leaves, first_end, line,
                                                                         activation),
                         "rule, kink in a gradient": _verdict(leaves, first_kink, line,
                                                              activation)})
    return pd.DataFrame(rows).set_index(["study", "n"])


RULE_MISSING = {"h³ line c (‖θB−θ̃‖ ≈ c·h³)": "none (round-off)",
                "leaves the h³ line at h": "not in the sweep",
                "first sign change at θ_n or θB_n, h": "none in the sweep",
                "first kink in a gradient, h": "none in the sweep"}


def _h_text(h: float) -> str:
    return "none in the sweep" if math.isnan(h) else f"{h:.3g}"


def rule_numbers(table: pd.DataFrame) -> dict:
    """The rule check in numbers (glue keys ``rule_*``): the ReLU cases where it can be tested
    (``rule_n``), how many of them it holds in with a sign change at the end points
    (``rule_endpoint_k``) and with a kink in a gradient (``rule_kink_k``), the ReLU cases without
    an h³ line (``rule_untestable``), and the failing cases in words (``rule_*_failures``)."""
    relu = table[table["activation"] == "relu"]
    testable = relu[relu["rule, kink in a gradient"] != "untestable (no h³ line)"]
    out = {"rule_n": len(testable), "rule_untestable": len(relu) - len(testable),
           "rule_factor": LEAVE_FACTOR, "rule_tolerance": SLOPE_TOLERANCE}
    for short, column, first in (
            ("endpoint", "rule, sign change at the end points", "first sign change at θ_n or θB_n, h"),
            ("kink", "rule, kink in a gradient", "first kink in a gradient, h")):
        holds = testable[column] == "holds"
        out[f"rule_{short}_k"] = int(holds.sum())
        failures = [f"{study}, n = {n}: first at h = {_h_text(testable.loc[(study, n), first])}, "
                    f"leaves the line at h = "
                    f"{_h_text(testable.loc[(study, n), 'leaves the h³ line at h'])}"
                    for study, n in testable.index[~holds]]
        out[f"rule_{short}_failures"] = "; ".join(failures) if failures else "none"
    return out


def shown(table: pd.DataFrame, missing: Mapping[str, str] | None = None,
          default: str = "n/a") -> pd.DataFrame:
    """A table as the page shows it: numbers as text with 3 significant figures (whole numbers in
    full), so that the HTML and nbval's comparison stay stable; a NaN reads as ``missing[column]``
    or ``default``."""
    missing = dict(missing or {})

    def text(value, column):
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return missing.get(column, default)
        value = float(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.3g}"

    return pd.DataFrame({c: [text(v, c) for v in table[c]] for c in table.columns},
                        index=table.index)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

_APPROX_COLOUR = ORDER_COLOURS["reset"]  # a third colour of the same colour-blind palette


def plot_sweeps(results: list[dict], titles: list[str], factor: float = LEAVE_FACTOR,
                tolerance: float = SLOPE_TOLERANCE):
    """Errors against h on log-log axes, one row per study and one panel per step of its sweep:
    a slope-2 guide through the smallest h, the `h3_line` where there is one and the h where the
    corrected error leaves it (×), the crossover (dashed) and, for ReLU, the range of h from the
    first kink in a gradient on (shaded)."""
    if len(results) != len(titles) or not results:
        raise ValueError(f"one title per study; got {len(results)} studies, {len(titles)} titles")
    columns = max(len(r["sweep"]) for r in results)
    # one sub-figure per study, so that its name heads its row (constrained layout keeps it clear
    # of the panel titles), and one legend for all rows below them
    fig = plt.figure(figsize=(min(8.0, 2.7 * columns), 2.7 * len(results) + 0.8),
                     layout="constrained")
    rows = [sub.subplots(1, columns, squeeze=False, sharey=True)[0]
            for sub in np.atleast_1d(fig.subfigures(len(results), 1))]
    for row, result, title in zip(rows, results, titles):
        _sweep_row(row, result, title, factor, tolerance)
    _sweeps_legend(fig, rows)
    return fig


def _sweep_row(row, result: dict, title: str, factor: float, tolerance: float) -> None:
    """One study's row of `plot_sweeps`: a `_sweep_panel` per step of its sweep (spare panels
    hidden), one y range for the row and the study's title over it."""
    lrs = np.asarray(result["lrs"])
    relu = result["study"]["activation"] == "relu"
    for ax, (n, s) in zip(row, result["sweep"].items()):
        _sweep_panel(ax, lrs, result["study"]["fit_points"], relu, n, s, factor, tolerance)
    for ax in row[len(result["sweep"]):]:
        ax.set_visible(False)
    errors = np.array([e for s in result["sweep"].values()
                       for e in (*s["forward_error"], *s["approx_error"])], float)
    errors = errors[np.isfinite(errors) & (errors > 0)]
    if errors.size:  # one range per row, so that no panel's points are cut off
        row[0].set_ylim(errors.min() / 3, errors.max() * 3)
    row[0].set_ylabel("distance to $\\theta^B_n$", fontsize=8)
    row[0].figure.suptitle(title, fontsize=9, weight="bold")


def _sweep_panel(ax, lrs: np.ndarray, k: int, relu: bool, n: str, s: dict, factor: float,
                 tolerance: float) -> None:
    """One panel of `plot_sweeps`, step n of a sweep ``s``: both errors against h, the slope-2
    guide, `_h3_marks` (k: the study's fit_points), the crossover and, for ReLU, the shaded range
    of h from the first kink in a gradient on; the fitted slopes in the title."""
    f, a = np.asarray(s["forward_error"], float), np.asarray(s["approx_error"], float)
    ax.loglog(lrs, f, "o-", ms=3, color=ORDER_COLOURS["forward"],
              label=r"forward: $\|\theta^B_n-\theta_n\|$")
    ax.loglog(lrs, a, "s-", ms=3, color=_APPROX_COLOUR,
              label=r"corrected: $\|\theta^B_n-\tilde\theta_n\|$")
    if np.isfinite(f[0]) and f[0] > 0:
        ax.loglog(lrs, f[0] * (lrs / lrs[0]) ** 2, ":", color="0.5", lw=1,
                  label="slope 2 from the smallest h")
    _h3_marks(ax, lrs, a, k, factor, tolerance)
    if math.isfinite(s["crossover"]):
        ax.axvline(s["crossover"], color="0.3", lw=1, ls="-.", label="crossover")
    kink = _first_sign_change(lrs, s["kinks"])
    if relu and math.isfinite(kink):
        ax.axvspan(kink, lrs[-1], color="0.85", alpha=0.5, lw=0,
                   label="a ReLU kink enters a gradient")
    ax.set_title(f"n = {n}: slopes {s['forward_slope']:.2f} and {s['approx_slope']:.2f}",
                 fontsize=8)
    ax.set_xlabel("learning rate h", fontsize=8)
    ax.tick_params(which="both", labelsize=7)


def _h3_marks(ax, lrs: np.ndarray, a: np.ndarray, k: int, factor: float,
              tolerance: float) -> None:
    """The corrected errors' `h3_line` (dashed, where there is one) and the h where they leave
    it (×; on the line where the error there is not finite)."""
    c = h3_line(lrs, a, k, tolerance)
    if math.isfinite(c):
        ax.loglog(lrs, c * lrs ** 3, "--", color=_APPROX_COLOUR, lw=0.8, alpha=0.7,
                  label=f"$h^3$ line fitted on the {k} smallest h")
    leaves = leaves_h3_line(lrs, a, k, factor, tolerance)
    if math.isfinite(leaves):
        at = a[list(lrs).index(leaves)]
        ax.loglog([leaves], [at if math.isfinite(at) else c * leaves ** 3], "x",
                  color="black", ms=7, mew=1.5,
                  label=f"leaves the $h^3$ line (factor {factor:g})")


def _sweeps_legend(fig, rows) -> None:
    """One legend below all rows of `plot_sweeps`: each label once, in the order first drawn."""
    handles = {}
    for row in rows:
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=7,
               frameon=False)


def _h_range(result: dict) -> str:
    lrs = result["lrs"]
    return f"{len(lrs)} values of h from {min(lrs):.3g} to {max(lrs):.3g}"


def sweep_caption(results: list[dict], titles: list[str], profile: str,
                  factor: float = LEAVE_FACTOR, tolerance: float = SLOPE_TOLERANCE) -> str:
    """The caption under a `plot_sweeps` figure: that the paper has none, what is drawn, the
    sweeps' learning rates, and the profile."""
    rows = "; ".join(f"{title} ({_h_range(r)}, steps n = {_listed(r['sweep'])})"
                     for r, title in zip(results, titles))
    k = sorted({r["study"]["fit_points"] for r in results})
    return (f"Not a figure of the paper: Appendix C states Theorem C.2 and has no experiment. "
            f"One row per network, one panel per step n: {rows}; both axes logarithmic, float64. "
            f"Blue circles: the forward iterate's distance to the backward iterate, "
            f"‖θ^B_n − θ_n‖; green squares: the corrected iterate's, ‖θ^B_n − θ̃_n‖. Dotted: slope "
            f"2 through the smallest h. Green dashed, where the corrected error's slope on the "
            f"{' or '.join(map(str, k))} smallest h is 3 to within {tolerance:g}: the h³ line "
            f"fitted there; ×: the first h at which the corrected error is off that line by more "
            f"than a factor {factor:g}. Dash-dotted: the crossover, the first h at which θ̃_n is "
            f"no closer to θ^B_n than θ_n. Shaded (ReLU only): from the first h at which some "
            f"hidden unit of a batch example has another sign than at θ_0 at a point where that "
            f"batch's gradient is taken. Panel titles: the slopes of both errors fitted on the "
            f"smallest h. Seed 0, {profile} profile.")


def plot_steps(results: list[dict], titles: list[str]):
    """Along each run at its own h: the two errors against n (left) and their ratio (right)."""
    fig, axes = plt.subplots(len(results), 2, figsize=(8.0, 2.9 * len(results)), squeeze=False)
    for (left, right), result, title in zip(axes, results, titles):
        along = result["along"]
        steps = np.asarray(along["step"])

        def positive(key):  # at n = 1 the distances are 0, which a log axis cannot show
            values = np.asarray(along[key], float)
            return np.where(values > 0, values, np.nan)

        left.loglog(steps, positive("forward_error"), "o-", ms=3, color=ORDER_COLOURS["forward"],
                    label=r"forward: $\|\theta^B_n-\theta_n\|$")
        left.loglog(steps, positive("approx_error"), "s-", ms=3, color=_APPROX_COLOUR,
                    label=r"corrected: $\|\theta^B_n-\tilde\theta_n\|$")
        left.loglog(steps, positive("correction"), "--", color="0.5", lw=1,
                    label=r"correction size $h^2\|C_n\|$")
        left.set_xlabel("step n", fontsize=8)
        left.set_ylabel("distance", fontsize=8)
        left.set_title(title, fontsize=8)
        left.legend(fontsize=7)
        right.loglog(steps, along["ratio"], "s-", ms=3, color=_APPROX_COLOUR)
        right.axhline(1, color="0.3", lw=1, ls="--")
        right.set_xlabel("step n", fontsize=8)
        right.set_ylabel(r"$\|\theta^B_n-\tilde\theta_n\| \,/\, \|\theta^B_n-\theta_n\|$",
                         fontsize=8)
        right.set_title("below 1: the correction helps", fontsize=8)
        for ax in (left, right):
            ax.tick_params(which="both", labelsize=7)
    fig.tight_layout()
    return fig


def steps_caption(results: list[dict], titles: list[str], profile: str) -> str:
    """The caption under a `plot_steps` figure."""
    rows = "; ".join(f"{title} ({len(r['along']['step'])} steps from {r['along']['step'][0]} to "
                     f"{r['along']['step'][-1]}, log-spaced)" for r, title in zip(results, titles))
    return (f"Not a figure of the paper: Appendix C states Theorem C.2 and has no experiment. "
            f"One row per training run at its own learning rate: {rows}; float64, both axes "
            f"logarithmic. Left: the forward iterate's distance to the backward iterate "
            f"‖θ^B_n − θ_n‖ (blue circles), the corrected iterate's ‖θ^B_n − θ̃_n‖ (green squares) "
            f"and the size of the correction h²‖C_n‖ (grey dashed) at the steps where backward "
            f"SGD was computed. Right: the ratio of the two distances, below the dashed line at 1 "
            f"where the correction brings θ_n closer to θ^B_n; at n = 1 the three iterates "
            f"coincide and the ratio is undefined. Seed 0, {profile} profile.")


# ------------------------------------------------------------------------------------------------
# The numbers of the page's conclusion
# ------------------------------------------------------------------------------------------------

def _listed(values) -> str:
    """'2', '2 and 4', '2, 4 and 7'; 'none' for no values."""
    values = [str(v) for v in values]
    if not values:
        return "none"
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _count(value) -> int | float:
    """A count as an int (so that it reads '13', not '13.0'); NaN stays NaN."""
    value = _float(value)
    return int(value) if math.isfinite(value) else value


def page_numbers(checks: Mapping[str, dict], runs: list[dict], factor: float = LEAVE_FACTOR,
                 tolerance: float = SLOPE_TOLERANCE) -> dict:
    """Every number the page's conclusion quotes, by glue key.

    ``checks``: the small network's results by activation; ``runs``: the training runs' results.
    Keys: the check's settings (``check_*``, its sweep's steps by position ``check_step_<i>``,
    as the runs' ``<run>_sweep_step_<i>``); per activation and step n of its sweep
    (``check_<activation>_n<n>_``) the fitted slopes, `useful_limit` and `crossover` (and each times
    n, ``_nh``), where the corrected error leaves its h³ line and the first h with a sign change
    at the end points and with a kink in a gradient; the range of the slopes over all checks;
    `rule_numbers` over checks and runs; per run (prefix `run_key`) its settings, the ratio at
    every recorded step (``_ratio_n<n>``), where the correction helps (``_helps_steps``, and with
    the ratios ``_helps_text``), where it first does not, the last step's numbers,
    and per step of its sweep the same as for the checks plus the corrected error at the smallest
    h (``_approx_smallest``) and how far below the run's h the first kink lies
    (``_kink_below_lr``); the studies' compute time (``compute_minutes``). The slopes' range over
    all checks is also given in words (``check_slope_<kind>_range``)."""
    if not checks or not runs:
        raise ValueError(f"page_numbers needs checks and runs; got {len(checks)} checks and "
                         f"{len(runs)} runs")
    numbers = _check_numbers(checks, factor, tolerance)
    numbers.update(_slope_ranges(checks))
    labelled = {f"check, {a}": r for a, r in checks.items()}
    labelled.update({describe(r): r for r in runs})
    numbers.update(rule_numbers(rule_table(labelled, factor, tolerance)))
    keys = [run_key(r) for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two runs share a glue prefix: {keys}")
    for key, result in zip(keys, runs):
        numbers.update(_run_numbers(key, result, factor, tolerance))
    numbers["compute_minutes"] = sum(r["runtime"]["wall_seconds"]
                                     for r in (*checks.values(), *runs)) / 60
    numbers["studies_n"] = len(checks) + len(runs)
    return numbers


def _check_numbers(checks: Mapping[str, dict], factor: float, tolerance: float) -> dict:
    """The check's numbers: its settings (those of the first activation's study), its sweep's
    steps by position, and per activation and step n `_sweep_numbers` (``check_<a>_n<n>_``)."""
    first = next(iter(checks.values()))
    t = first["study"]["trajectory"]
    numbers = dict(check_depth=t["depth"], check_width=t["width"], check_batch=t["batch_size"],
                   check_h_min=min(first["lrs"]), check_h_max=max(first["lrs"]),
                   check_h_count=len(first["lrs"]), check_steps=_listed(first["sweep"]),
                   fit_points=first["study"]["fit_points"])
    numbers.update({f"check_step_{i}": int(n) for i, n in enumerate(first["sweep"], 1)})
    for activation, result in checks.items():
        for n, s in result["sweep"].items():
            numbers.update(_sweep_numbers(f"check_{activation}_n{n}_", result, n, s, factor,
                                          tolerance))
    return numbers


def _sweep_numbers(prefix: str, result: dict, n: str, s: dict, factor: float,
                   tolerance: float) -> dict:
    """Step n of a study's sweep ``s``, keys under ``prefix``: the fitted slopes, `useful_limit`
    and `crossover` (each also times n), where the corrected error leaves its h³ line, the first
    h with a sign change at the end points and with a kink in a gradient, and the corrected error
    at the smallest h."""
    lrs, k = result["lrs"], result["study"]["fit_points"]
    f, a = s["forward_error"], s["approx_error"]
    useful = useful_limit(lrs, f, a)
    return {
        f"{prefix}slope_forward": s["forward_slope"], f"{prefix}slope_approx": s["approx_slope"],
        f"{prefix}useful": useful, f"{prefix}useful_nh": useful * int(n),
        f"{prefix}crossover": s["crossover"], f"{prefix}crossover_nh": s["crossover"] * int(n),
        f"{prefix}leaves": leaves_h3_line(lrs, a, k, factor, tolerance),
        f"{prefix}first_sign": _first_sign_change(lrs, s["sign_changes"]),
        f"{prefix}first_kink": _first_sign_change(lrs, s["kinks"]),
        f"{prefix}approx_smallest": _float(a[0])}


def _slope_ranges(checks: Mapping[str, dict]) -> dict:
    """Per error (forward, approx): the smallest and largest fitted slope over all checks'
    sweeps, and their range in words."""
    numbers = {}
    for kind in ("forward", "approx"):
        values = [s[f"{kind}_slope"] for result in checks.values()
                  for s in result["sweep"].values()]
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        numbers[f"check_slope_{kind}_min"], numbers[f"check_slope_{kind}_max"] = low, high
        # in words: "2.00", or "1.98 to 2.00" when the slopes differ at two decimals
        numbers[f"check_slope_{kind}_range"] = (f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}"
                                                else f"{low:.2f} to {high:.2f}")
    return numbers


def _run_numbers(key: str, result: dict, factor: float, tolerance: float) -> dict:
    """A training run's numbers under its glue prefix ``key``: its settings, `_along_numbers`,
    `_last_step_numbers` and per step n of its sweep its position, `_sweep_numbers`
    (``<key>_n<n>_``) and how far below the run's h the first kink in a gradient lies."""
    t = result["study"]["trajectory"]
    numbers = {f"{key}_depth": t["depth"], f"{key}_width": t["width"], f"{key}_lr": t["lr"],
               f"{key}_batch": t["batch_size"], f"{key}_steps": t["steps"]}
    numbers.update(_along_numbers(key, result))
    numbers.update(_last_step_numbers(key, result["along"]))
    for i, (n, s) in enumerate(result["sweep"].items(), 1):
        numbers[f"{key}_sweep_step_{i}"] = int(n)
        prefix = f"{key}_n{n}_"
        numbers.update(_sweep_numbers(prefix, result, n, s, factor, tolerance))
        numbers[f"{prefix}kink_below_lr"] = t["lr"] / numbers[f"{prefix}first_kink"]
    return numbers


def _along_numbers(key: str, result: dict) -> dict:
    """Along a run: the ratio at every recorded step, the steps where the correction helps (and
    in words with their ratios), and the first step where it does not with its ratio."""
    along = result["along"]
    numbers = {f"{key}_ratio_n{n}": _float(ratio) for n, ratio in zip(along["step"],
                                                                       along["ratio"])}
    helps, hurts = helps_at(result)
    numbers[f"{key}_helps_steps"] = _listed(helps)
    numbers[f"{key}_helps_text"] = _listed(f"{_ratio_at(along, n):.3g} at n = {n}"
                                           for n in helps)
    numbers[f"{key}_first_hurt"] = hurts[0] if hurts else math.nan
    numbers[f"{key}_ratio_first_hurt"] = _ratio_at(along, hurts[0]) if hurts else math.nan
    return numbers


def _ratio_at(along: dict, n: int) -> float:
    """The ratio ‖θ^B_n − θ̃_n‖ / ‖θ^B_n − θ_n‖ recorded along a run at step n."""
    return _float(along["ratio"][along["step"].index(n)])


def _last_step_numbers(key: str, along: dict) -> dict:
    """A run's last recorded step: the step, the ratio, the gap ‖θ^B_n − θ_n‖, the correction's
    size and its share of the gap, the three train losses, and the sign changes at step 1."""
    last = -1
    gap, correction = _float(along["forward_error"][last]), _float(along["correction"][last])
    return {f"{key}_last_step": along["step"][last],
            f"{key}_ratio_last": _float(along["ratio"][last]),
            f"{key}_gap_last": gap, f"{key}_correction_last": correction,
            f"{key}_correction_over_gap_last": stability.ratio(correction, gap),
            f"{key}_loss_forward_last": _float(along["forward_train_loss"][last]),
            f"{key}_loss_backward_last": _float(along["backward_train_loss"][last]),
            f"{key}_loss_approx_last": _float(along["approx_train_loss"][last]),
            f"{key}_sign_changes_step1": _count(along["sign_changes"][0])}


def page_setup(values: dict) -> tuple[dict, list]:
    """The Appendix C page's studies from the template's parameter values: the check on the
    one-hidden-layer network, one per activation, and the studies of the page's runs."""
    checks = {a: LieStudy(**values["check"], lr_factors=values["check_factors"],
                          fit_points=values["fit_points"], activation=a)
              for a in values["activations"]}
    studies = [LieStudy(**run, lr_factors=values["run_factors"], fit_points=values["fit_points"])
               for run in values["runs"]]
    return checks, studies


def page_loads(setup: tuple[dict, list], runtime: Runtime) -> list:
    checks, studies = setup
    return [(repr(s), lambda s=s: run_study(s, runtime)) for s in [*checks.values(), *studies]]
