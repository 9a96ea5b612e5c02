"""Sharpness along forward and backward trajectories: the loss Hessian on a fixed probe batch.

Example 2.1 says full-batch gradient descent contracts near a minimum when h < 2/λ_max, with λ_max
the largest Hessian eigenvalue (the *sharpness*). Wang & Roberts (the flatness-bias companion
paper) argue that instabilities push training towards flatter regions and come with rotations of
the leading Hessian eigenvectors. This module measures both along the iterates of one
`TrajectoryConfig`, in any order:

* a `HessianProbe` evaluates, at a parameter state, the loss on a fixed *probe batch* (drawn once
  per seed from the ``sharpness/probe-batch`` stream, so every order of a seed is probed on the same
  examples), the top ``eigenpairs`` eigenvalues of its Hessian and the leading eigenvector;
* `run_probes` produces the iterates at the probe steps 0, k, 2k, … with ``iterates(run.maps,
  run.state0, order, at=...)`` and records, per probe, the eigenvalues, the probe-batch loss and
  three overlaps with the previous probe (``None`` at the first):

  - ``overlap`` = |⟨v_t, v_{t+k}⟩| of the leading unit eigenvectors (1 − overlap is the
    *leading-vector rotation*);
  - ``subspace_similarity`` = (1/m) Σ_i cos² φ_i over the m = ``eigenpairs`` principal angles φ_i
    between the top-m eigenvector subspaces U_t and U_{t+k} (for orthonormal bases,
    ‖U_tᵀ U_{t+k}‖_F² / m; 1 − it is the *subspace rotation*). It is 1 when the top-m
    subspace stayed put, whatever happened inside it, and 0 when the new one is orthogonal to the
    old. Two nearly equal eigenvalues that swap places turn the leading vector by up to 90° (a
    leading-vector rotation near 1) but leave the subspace, and its rotation near 0; a direction
    that leaves the subspace moves both. An exchange across its edge (the m-th eigenvalue against
    the (m+1)-th) does count as a subspace rotation, of up to 1/m;
  - ``subspace_overlap`` = ‖U_{t+k}ᵀ v_t‖: how much of the old leading vector lies in the new
    top-m subspace, and ``reverse_subspace_overlap`` = ‖U_tᵀ v_{t+k}‖: how much of the new leading
    vector lay in the old one. Both near 1 with a leading-vector rotation near 1: the sharpest
    direction changed places with another of the top m; the reverse one well below 1: the new
    sharpest direction came from outside the old top m.

  The forward order also records the probe-batch loss every ``curve_every`` steps, which costs no
  restart, to see spikes between probes. Eigenvectors live in memory only for these overlaps:
  results files hold numbers, never vectors.

Libraries: Hessian-vector products and Lanczos come from `hessian` (``torch.func`` forward-over-
reverse, ``scipy.sparse.linalg.eigsh(which="LA")``), each Lanczos start vector from its own named
stream (``sharpness/lanczos/<step>``), so probing never moves the training streams or the global
generators. The book page's experiment over seeds, orders and problems, its tables and figures
are in `iteration_order.book.sharpness`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from .cache import InvalidResult, cached, code_fingerprint, config_hash, jsonable, nan_for_null
from .evaluation import loss_function
from .hessian import BatchLoss, top_eigenpairs
from .orders import as_order, iterates
from .seeding import generator
from .devices import device_type
from .trajectory import TRAJECTORY_MODULES, Runtime, TrajectoryConfig, prepare

__all__ = ["Probe", "SharpnessRun", "HessianProbe", "Reading", "probe_steps",
           "probe_batch_rows", "overlap", "subspace_overlap", "subspace_similarity",
           "probe_iteration", "run_probes", "sharpness_path"]

RESULTS_SUBDIR = "sharpness"
# What determines a probe result: the trajectory's code, the Hessian tools and this module.
MODULES = (*TRAJECTORY_MODULES, "hessian", "sharpness")
# None at the first probe
_OVERLAPS = ("overlap", "subspace_overlap", "reverse_subspace_overlap", "subspace_similarity")
_PER_PROBE = ("eigenvalues", "sharpness", "probe_loss", *_OVERLAPS)


# ------------------------------------------------------------------------------------------------
# What is probed, and where
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    every: int = 50            # k: steps between probes (probes at 0, k, 2k, ... <= steps)
    batch: int = 2048          # examples in the probe batch, drawn once per seed; 0 = training set
    eigenpairs: int = 3        # top Hessian eigenvalues per probe: λ_max and the next ones
    tol: float = 1e-3          # Lanczos relative tolerance (eigsh's tol)
    maxiter: int | None = None  # Lanczos iteration cap; None = scipy's default
    curve_every: int = 1       # forward only: steps between probe-batch losses (no restart cost)
    chunk: int = 1024          # examples per pass of a Hessian-vector product (memory, not result)

    def __post_init__(self):
        for name in ("every", "eigenpairs", "curve_every", "chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Probe.{name} must be an integer >= 1; got {value!r}")
        if not isinstance(self.batch, int) or self.batch < 0:
            raise ValueError(f"Probe.batch must be an integer >= 0 (0 = the whole training set); "
                             f"got {self.batch!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0 and math.isfinite(self.tol)):
            raise ValueError(f"Probe.tol must be a finite number > 0; got {self.tol!r}")
        if self.maxiter is not None and (not isinstance(self.maxiter, int) or self.maxiter < 1):
            raise ValueError(f"Probe.maxiter must be None or an integer >= 1; got {self.maxiter!r}")


def probe_steps(total: int, every: int) -> list[int]:
    """0, k, 2k, ... up to ``total``: the steps a `Probe` with ``every = k`` measures."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"the probe spacing k must be an integer >= 1; got {every!r}")
    if every > total:
        raise ValueError(f"probe spacing k = {every} puts every probe step outside 1..{total} "
                         f"(the number of training steps)")
    return list(range(0, total + 1, every))


def probe_batch_rows(num_train: int, size: int, seed: int) -> torch.Tensor:
    """The probe batch: ``size`` training rows drawn once per seed (all rows if 0 or too many)."""
    if size == 0 or size >= num_train:
        return torch.arange(num_train)
    rows = torch.randperm(num_train, generator=generator(seed, "sharpness/probe-batch"))[:size]
    return rows.sort().values


# ------------------------------------------------------------------------------------------------
# One probe of one state
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    step: int
    eigenvalues: np.ndarray  # descending
    vectors: np.ndarray      # [dim, eigenpairs], unit columns, flattened in the state's key order
    loss: float


class HessianProbe:
    """The loss and top Hessian eigenpairs of ``model`` on fixed rows, at any parameter state.

    Evaluates through `hessian.BatchLoss` (functional calls): the model, the states it is given
    and every random stream except the per-step Lanczos start vector are left as they were.
    """

    def __init__(self, model, loss_fn, inputs, targets, rows: torch.Tensor, probe: Probe,
                 seed: int):
        self.loss = BatchLoss(model, loss_fn, inputs, targets, rows, chunk=probe.chunk)
        self.probe, self.seed = probe, seed

    def loss_value(self, state: dict) -> float:
        return self.loss.value(state)

    def __call__(self, step: int, state: dict) -> Reading:
        values, vectors = top_eigenpairs(
            self.loss, state, k=self.probe.eigenpairs,
            generator=generator(self.seed, f"sharpness/lanczos/{step}"),
            tol=self.probe.tol, maxiter=self.probe.maxiter)
        return Reading(step, values, vectors, self.loss_value(state))


def overlap(u: np.ndarray, v: np.ndarray) -> float:
    """|⟨u, v⟩| / (‖u‖‖v‖): 1 for the same direction (whatever the sign), 0 for orthogonal ones."""
    u, v = np.ravel(u), np.ravel(v)
    norms = np.linalg.norm(u) * np.linalg.norm(v)
    if norms == 0:
        raise ValueError("overlap of a zero vector is undefined")
    return float(abs(u @ v) / norms)


def subspace_overlap(u: np.ndarray, basis: np.ndarray) -> float:
    """‖Bᵀu‖ / ‖u‖ for a basis B of orthonormal columns: how much of u lies in their span."""
    u = np.ravel(u)
    return float(np.linalg.norm(basis.T @ u) / np.linalg.norm(u))


def subspace_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The mean squared cosine of the principal angles between the column spans of ``a`` and
    ``b`` (``[dim, m]`` each, full column rank): 1 for the same subspace, whatever basis either
    uses, 0 for orthogonal ones. The columns are orthonormalised first (QR), so Lanczos vectors
    that are orthogonal only to its tolerance are measured as the subspace they span; the cosines
    are then the singular values of QₐᵀQ_b, and the mean of their squares is ‖QₐᵀQ_b‖_F² / m."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or not 1 <= a.shape[1] <= a.shape[0]:
        raise ValueError(f"subspace_similarity needs two [dim, m] arrays of the same shape with "
                         f"1 <= m <= dim; got shapes {a.shape} and {b.shape}")
    qa, ra = np.linalg.qr(a)
    qb, rb = np.linalg.qr(b)
    for name, r in (("a", ra), ("b", rb)):
        diag = np.abs(np.diag(r))
        if diag.min() <= 1e-12 * max(diag.max(), 1e-300):
            raise ValueError(f"subspace_similarity: the columns of {name} are linearly dependent "
                             f"(they span fewer than {a.shape[1]} dimensions)")
    return float(np.sum((qa.T @ qb) ** 2) / a.shape[1])


# ------------------------------------------------------------------------------------------------
# Probing the iterates of a run
# ------------------------------------------------------------------------------------------------

def probe_iteration(states, probe: HessianProbe, steps, curve_steps=()) -> dict:
    """Probe the ``(n, state)`` pairs whose n is in ``steps``; losses only at ``curve_steps``.

    ``states`` must yield every step of both lists (in increasing order). The overlaps of probe j
    are with probe j-1 (``None`` for the first).
    """
    steps, curve_steps = set(steps), set(curve_steps)
    out = {k: [] for k in ("steps", "eigenvalues", "sharpness", "probe_loss", *_OVERLAPS,
                           "curve_steps", "curve_loss")}
    previous: Reading | None = None
    for n, state in states:
        if n in steps:
            reading = probe(n, state)
            out["steps"].append(n)
            out["eigenvalues"].append([float(x) for x in reading.eigenvalues])
            out["sharpness"].append(float(reading.eigenvalues[0]))
            out["probe_loss"].append(reading.loss)
            out["overlap"].append(None if previous is None else
                                  overlap(previous.vectors[:, 0], reading.vectors[:, 0]))
            out["subspace_overlap"].append(None if previous is None else
                                           subspace_overlap(previous.vectors[:, 0], reading.vectors))
            out["reverse_subspace_overlap"].append(
                None if previous is None else subspace_overlap(reading.vectors[:, 0],
                                                               previous.vectors))
            out["subspace_similarity"].append(None if previous is None else
                                              subspace_similarity(previous.vectors, reading.vectors))
            previous = reading
        if n in curve_steps:
            out["curve_steps"].append(n)
            out["curve_loss"].append(out["probe_loss"][-1] if n in steps else probe.loss_value(state))
    missing = steps - set(out["steps"])
    if missing:
        raise ValueError(f"the iteration never reached probe steps {sorted(missing)[:5]}")
    return out


@dataclass(frozen=True)
class SharpnessRun:
    """One cached result: a trajectory (its seed and order included) and how it is probed."""
    trajectory: TrajectoryConfig
    probe: Probe

    def __post_init__(self):
        if self.trajectory.optimizer != "sgd":
            raise ValueError(f"sharpness is compared with 2/h, the stability threshold of plain "
                             f"SGD; optimizer must be 'sgd', got {self.trajectory.optimizer!r}")
        probe_steps(self.trajectory.steps, self.probe.every)  # validates the spacing

    def steps(self) -> list[int]:
        return probe_steps(self.trajectory.steps, self.probe.every)

    def curve_steps(self) -> list[int]:
        """Forward iterates cost one map each, so its loss is tracked between probes too."""
        if as_order(self.trajectory.order).spec() != "forward":
            return self.steps()
        between = range(0, self.trajectory.steps + 1, self.probe.curve_every)
        return sorted(set(between) | set(self.steps()))


def sharpness_path(run: SharpnessRun, runtime: Runtime) -> Path:
    device = device_type(runtime.device)
    return Path(runtime.results_dir) / RESULTS_SUBDIR / f"{config_hash(run)}-{device}.json"


def _check_probes(run: SharpnessRun, result: dict) -> None:
    """A stored record probes exactly the run's steps, with one entry per probe and per curve
    step; raises `InvalidResult` otherwise."""
    for key, steps, per_step in (("steps", run.steps(), _PER_PROBE),
                                 ("curve_steps", run.curve_steps(), ("curve_loss",))):
        if result.get(key) != steps:
            raise InvalidResult(f"holds {key} other than the {len(steps)} the run plans")
        for name in per_step:
            if not isinstance(result.get(name), list) or len(result[name]) != len(steps):
                raise InvalidResult(f"has no list of {len(steps)} entries in {name!r}")


def run_probes(run: SharpnessRun, runtime: Runtime = Runtime()) -> dict:
    """Probe one trajectory at its probe steps (or load the cached result) and return the record.
    A stored record is used only while valid for this run and code (`cache`; ``runtime.cache``)."""
    return _decoded(cached(sharpness_path(run, runtime), jsonable(run), code_fingerprint(MODULES),
                           lambda: _probe(run, runtime), lambda r: _check_probes(run, r),
                           runtime.cache, repr(run)))


def _decoded(result: dict) -> dict:
    """The nulls strict JSON wrote for non-finite numbers back as NaN. Only the overlaps are
    legitimately None, at the first probe (nothing to compare with), and stay so."""
    numbers = {key: nan_for_null(result[key])
               for key in ("eigenvalues", "sharpness", "probe_loss", "curve_loss")}
    overlaps = {key: result[key][:1] + nan_for_null(result[key][1:]) for key in _OVERLAPS}
    return {**result, **numbers, **overlaps}


def _probe(run: SharpnessRun, runtime: Runtime) -> dict:
    config = run.trajectory
    prepared = prepare(config, runtime)
    data = prepared.data
    rows = probe_batch_rows(data.num_train, run.probe.batch, config.seed)
    probe = HessianProbe(prepared.model, loss_function(data.task), data.x_train, data.y_train,
                         rows, run.probe, config.seed)
    steps, curve_steps = run.steps(), run.curve_steps()  # the curve includes every probe step
    start = time.perf_counter()
    iteration = iterates(prepared.maps, prepared.state0, config.order,
                         at=[n for n in curve_steps if n > 0], group_size=prepared.group_size)
    record = probe_iteration(chain([(0, prepared.state0)], iteration), probe, steps, curve_steps)
    return {
        "key": sharpness_path(run, runtime).stem,
        "engine": prepared.engine,
        "data": data.note,
        "probe_rows": len(rows),
        "threshold": 2 / config.lr,
        **record,
        "applications": iteration.applications,
        "runtime": {"device": str(prepared.device), "threads": prepared.threads,
                    "torch": torch.__version__, "wall_seconds": time.perf_counter() - start},
    }
