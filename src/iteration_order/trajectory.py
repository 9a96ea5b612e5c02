"""One training trajectory in one order: config → data, model, schedule, maps → recorded curves.

A run is fully described by a frozen `TrajectoryConfig` (the science) and a `Runtime` (where and
how it executes). Its result is cached as JSON under ``results/<config hash>-<device>.json``,
written atomically, with the full config, the engine and the fingerprint of the code that
determines a trajectory (`TRAJECTORY_MODULES`). A rerun with the same config and device loads it
instead of training only if it is valid: see `cache` for the check and the cache modes
(``Runtime(cache=...)`` or ``$ITERATION_ORDER_CACHE``: use, refresh, only).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .cache import (DEFAULT_RESULTS, InvalidResult, cache_mode, cached, code_fingerprint, config_hash,
                    jsonable, nan_for_null, read_valid)
from .devices import check_device, device_type, torch_device
from .data import DATASET_NAMES, SYNTHETIC, Dataset, load_dataset
from .evaluation import Evaluator, loss_function
from .families import update_family
from .memory import trajectory_bytes
from .models import CONV_MODELS, INITS, MODEL_NAMES, build_model
from .orders import (Forward, GroupedMaps, as_order, iterates, order_for_steps,
                     planned_applications)
from .schedule import batch_schedule
from .seeding import generator, seed_everything
from .validation import (MAX_RECORDED, MAX_STEPS, check_bool, check_choice, check_int,
                         check_number, check_path, check_str, record_points_bound)

__all__ = ["TrajectoryConfig", "Runtime", "run_trajectory", "recorded_steps",
           "OPTIMIZERS", "ENGINES", "result_path", "parse_record", "prepare", "Prepared",
           "choose_engine", "TRAJECTORY_MODULES", "trajectory_fingerprint", "stored_trajectory",
           "describe_config", "CURVES", "MLP_FIELDS", "Shard", "shard_plan", "run_shard",
           "merge_shards", "shard_path"]

OPTIMIZERS = ("sgd", "momentum", "adam")
ENGINES = ("auto", "sequential", "batched")
_RECORD_FORMS = ("'every:K', 'log:M' (M log-spaced steps), 'at:S1,S2,...', 'range:A:B:K' (A, A+K, "
                 "... up to B), or several of these joined by '+'")
_PROGRESS_DELAY_SECONDS = 3  # the bar appears only once a run has lasted this long
_GROUP_MEMORY_FRACTION = 0.25  # share of free GPU memory a batched group may take
_MAX_GROUP = 256
# field -> its default, which must never change
_ADDED_LATER = {"init": "torch", "update": "sgd", "micro_batches": 1, "reg_lambda": 0.0,
                "base_channels": 64}
_MAX_STORED_SCHEDULE = 50_000  # larger schedules are stored as a digest: results stay small
MLP_FIELDS = ("depth", "width", "init")  # used by model="mlp" only
CONV_FIELDS = ("base_channels",)  # used by the convolutional models only
# A direct run planning more map applications than this is priced by the cost model before it
# starts, and refused above cost.LONG_RUN_HOURS without consent (Runtime.allow_long).
_CONSENT_CHECK_APPLICATIONS = 10_000_000

# The modules whose code determines a trajectory's numbers: a cached result is used only while
# their fingerprint (`cache.code_fingerprint`: code, not comments or docstrings) is unchanged.
# Plots, pages, the benchmark, the cost model and the statistics are left out on purpose, so that
# changing how results are shown never throws away hours of runs.
TRAJECTORY_MODULES = (
    "data",           # the examples and their standardisation
    "models",         # architectures and their initialisation
    "schedule",       # which examples form each batch
    "seeding",        # the random streams of initialisation, schedule and evaluation subsets
    "maps",           # the training step itself (SGD, torch.optim optimisers)
    "families",       # which maps an ``update`` builds (the plug-in table)
    "orders",         # the order engine: which maps are applied to which iterate
    "evaluation",     # the recorded losses and accuracies
    "trajectory",     # this runner: what is recorded, divergence, engine choice
    "order_average",  # registers Appendix D's updates, whose maps it builds
    "functional_optim",  # momentum and Adam as the batched engine applies them
    "memory",         # the batched engine's group width, which decides how steps are grouped
)
# Added for the runs of the convolutional models only: the synthetic and MLP runs never build
# them, so a change to those architectures does not throw away their results.
CONV_MODULES = ("cifar_models",)
# The curves of a result, one entry per recorded step (step 0 first).
CURVES = ("train_loss", "test_loss", "train_acc", "test_acc", "displacement")
# Curves never None when computed: a null read back is a non-finite value, and reads as NaN.
# (Accuracies are None for a regression task, so they keep their nulls.)
_FLOAT_CURVES = ("train_loss", "test_loss", "displacement")


def parse_record(spec: str, steps: int, name: str = "a record spec") -> list[int]:
    """The steps n >= 1 a record spec names, sorted; ``every`` and ``log`` include the last step.
    ``name`` is the field the spec came from, for the message.

    Specs joined by '+' record the union of their steps: ``"every:40+range:1500:2000:10"`` is
    sparse early and dense in the window that the stability statistics use, which costs a
    backward run far less than recording every 10th step throughout (step n costs n maps).
    """
    if not isinstance(spec, str):
        raise ValueError(f"{name} must be a string, one of {_RECORD_FORMS}; got {spec!r}")
    _check_size(spec, steps, name)
    if "+" in spec:
        return sorted(set().union(*(parse_record(part, steps, name) for part in spec.split("+"))))
    kind, _, value = spec.partition(":")
    try:
        if kind == "every":
            k = int(value)
            if k < 1:
                raise ValueError("K must be >= 1")
            return sorted(set(range(k, steps + 1, k)) | {steps})
        if kind == "log":
            m = int(value)
            if m < 2:
                raise ValueError("M must be >= 2")
            grid = np.unique(np.round(np.logspace(0, math.log10(steps), m)).astype(int))
            return sorted(set(grid.tolist()) | {steps})
        if kind == "at":
            chosen = sorted({int(s) for s in value.split(",")})
            bad = [n for n in chosen if not 1 <= n <= steps]
            if bad:
                raise ValueError(f"steps {bad[:5]} lie outside 1..steps={steps}")
            return chosen
        if kind == "range":
            first, last, k = (int(s) for s in value.split(":"))
            if not (1 <= first <= last <= steps and k >= 1):
                raise ValueError(f"need 1 <= A <= B <= steps={steps} and K >= 1")
            return list(range(first, last + 1, k))
    except ValueError as err:
        raise ValueError(f"bad record spec {spec!r}: {err}. Allowed: {_RECORD_FORMS}") from None
    raise ValueError(f"unknown record spec {spec!r}; allowed: {_RECORD_FORMS}")


def _check_size(spec: str, steps: int, name: str) -> None:
    """Refuse, before anything is enumerated, steps above `validation.MAX_STEPS` and a spec naming
    more than `validation.MAX_RECORDED` steps (10**9 steps once took 9.6 GB to refuse)."""
    check_int("steps", steps, 1, MAX_STEPS)
    bound = record_points_bound(spec, steps)
    if bound is not None and bound > MAX_RECORDED:
        raise ValueError(f"{name}={spec!r} records up to {bound:,} steps of {steps:,}; at most "
                         f"{MAX_RECORDED:,} (validation.MAX_RECORDED)")


@dataclass(frozen=True)
class TrajectoryConfig:
    dataset: str = "synthetic-x2"  # see data.DATASET_NAMES
    fake_data: bool = False        # image sets only: noise with the real shapes (smoke runs)
    model: str = "mlp"             # see models.MODEL_NAMES
    depth: int = 3                 # MLP hidden layers
    width: int = 300               # MLP hidden units per layer
    init: str = "torch"            # MLP initialisation: torch (PyTorch default) | he
    base_channels: int = 64        # conv models: first stage's channels (64 = the paper's width)
    optimizer: str = "sgd"         # sgd | momentum (heavy ball) | adam
    lr: float = 0.05
    momentum: float = 0.9          # used by optimizer="momentum" only
    batch_size: int = 1
    steps: int = 1400
    seed: int = 0
    order: str = "forward"         # forward | backward | reset:every=K | reset:at=S,... | switch:S
    record: str = "every:1"        # steps evaluated for costly orders: every:K | log:M | at:S,...
    record_forward: str = "every:1"  # the same for the forward order, whose iterates are cheap
    eval_train_size: int = 0       # fixed training subset for train metrics; 0 = whole set
    eval_test_size: int = 0        # fixed test subset for test metrics; 0 = whole set
    update: str = "sgd"            # map per batch (App. D): sgd | small | regularised | average
    micro_batches: int = 1         # c: equal micro-batches per batch, for the updates but sgd
    reg_lambda: float = 0.0        # λ of update="regularised" (absolute, not in units of lr²)

    def __post_init__(self):
        self._check_fields()
        self._check_unused()
        object.__setattr__(self, "order", order_for_steps(self.order, self.steps).spec())
        self._check_update()
        parse_record(self.record, self.steps, "record")
        parse_record(self.record_forward, self.steps, "record_forward")

    @classmethod
    def from_fields(cls, fields: Mapping, what: str = "trajectory") -> "TrajectoryConfig":
        """A config from a page's plain values, naming any key that is not a field."""
        if not isinstance(fields, Mapping):
            raise ValueError(f"{what} must be a mapping of TrajectoryConfig fields such as "
                             f"{{'dataset': 'synthetic-x2', 'steps': 100}}; got {fields!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(names), key=str)
        if unknown:
            raise ValueError(f"{what}: {unknown} are not TrajectoryConfig fields; allowed: "
                             f"{', '.join(names)}")
        return cls(**fields)

    def _check_fields(self) -> None:
        """Each field's type and range, one by one (exact types: a bool is not an int)."""
        check_str("dataset", self.dataset)
        if self.dataset not in DATASET_NAMES[:-1] and not (
                self.dataset.startswith("npz:") and len(self.dataset) > 4):
            raise ValueError(f"unknown data set {self.dataset!r}; allowed: "
                             f"{', '.join(DATASET_NAMES)}")
        check_bool("fake_data", self.fake_data)
        check_choice("model", self.model, MODEL_NAMES)
        check_choice("init", self.init, INITS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_int("steps", self.steps, 1, MAX_STEPS)
        for name in ("batch_size", "depth", "width", "base_channels"):
            check_int(name, getattr(self, name), 1)
        for name in ("seed", "eval_train_size", "eval_test_size"):
            check_int(name, getattr(self, name), 0)
        check_number("lr", self.lr, 0, low_open=True)
        check_number("momentum", self.momentum, 0, 1, high_open=True)

    def _check_unused(self) -> None:
        """Refuse values that would change the cache name but not the run (the way to say
        'not used' is the field's default)."""
        if self.fake_data and self.dataset in SYNTHETIC:
            raise ValueError(f"fake_data=True has no effect on {self.dataset!r}, which is "
                             f"generated, not read from files: use fake_data=False")
        for name in CONV_FIELDS if self.model == "mlp" else ():
            if getattr(self, name) != _DEFAULTS[name]:
                raise ValueError(f"{name}={getattr(self, name)!r} is used by the convolutional "
                                 f"models only ({', '.join(CONV_MODELS)}) and model='mlp' ignores "
                                 f"it: leave {name} at its default {_DEFAULTS[name]!r}")
        if self.model != "mlp":
            for name in MLP_FIELDS:
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ValueError(f"{name}={getattr(self, name)!r} is used by model='mlp' only "
                                     f"and model={self.model!r} ignores it: leave {name} at its "
                                     f"default {_DEFAULTS[name]!r}")
        if self.optimizer != "momentum" and self.momentum != _DEFAULTS["momentum"]:
            raise ValueError(f"momentum={self.momentum!r} is used by optimizer='momentum' only; "
                             f"got optimizer={self.optimizer!r}: leave momentum at its default "
                             f"{_DEFAULTS['momentum']!r}")

    def _check_update(self) -> None:
        """The fields of the map family named by ``update``, checked before any data is loaded
        (the family's own check: `families`; Appendix D's updates register in `order_average`)."""
        check_int("micro_batches", self.micro_batches, 1)
        check_number("reg_lambda", self.reg_lambda, 0)
        update_family(check_str("update", self.update)).check(self)

    def replace(self, **changes) -> "TrajectoryConfig":
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict:
        """The fields that name a result in the cache. A field added after results were first
        cached counts only when it differs from its default, so earlier results keep their names
        (and the default is never changed, which would silently re-label them)."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items()
                if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}


# the field defaults, which are also how a config says "not used" (see _check_unused)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrajectoryConfig)}


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"                   # auto (cuda if present) | cpu | cuda | cuda:N
    threads: int = 0                       # torch intra-op threads; 0 = all cores
    engine: str = "auto"                   # auto | sequential | batched (see choose_engine)
    group_size: int = 0                    # trajectories per vmap group; 0 = fit to GPU memory
    data_root: str | None = None           # default: $DATA_ROOT
    download: bool = False                 # let torchvision fetch missing data (needs internet)
    results_dir: Path = field(default=DEFAULT_RESULTS)
    progress: bool = True                  # a bar, shown once a run has lasted a few seconds
    cache: str | None = None               # use | refresh | only (see `cache`); None: the
                                           # value of $ITERATION_ORDER_CACHE, else use
    allow_long: bool | None = None         # consent to a run estimated above cost.LONG_RUN_HOURS;
                                           # None: $ITERATION_ORDER_ALLOW_LONG (see `cost`)

    def __post_init__(self):
        check_device("device", self.device)
        check_int("threads (0 = all cores)", self.threads, 0)
        check_choice("engine", self.engine, ENGINES)
        check_int("group_size (0 = fit to GPU memory)", self.group_size, 0)
        check_path("data_root", self.data_root, optional=True)
        check_bool("download", self.download)
        check_path("results_dir", self.results_dir)
        check_bool("progress", self.progress)
        if self.cache is not None:  # None defers to the environment when a run starts
            cache_mode(self.cache)
        if self.allow_long is not None:
            check_bool("allow_long", self.allow_long)


def recorded_steps(config: TrajectoryConfig) -> list[int]:
    """Steps n >= 1 whose iterate is evaluated (step 0, the initial point, always is)."""
    spec = config.record_forward if as_order(config.order) == Forward() else config.record
    return parse_record(spec, config.steps)


def result_path(config: TrajectoryConfig, runtime: Runtime) -> Path:
    device = device_type(runtime.device)
    return Path(runtime.results_dir) / f"{config_hash(config.identity())}-{device}.json"


def trajectory_fingerprint(config: TrajectoryConfig) -> str:
    """The fingerprint a trajectory result of ``config`` carries: the code of `TRAJECTORY_MODULES`,
    and of `CONV_MODULES` for a convolutional model."""
    extra = CONV_MODULES if config.model in CONV_MODELS else ()
    return code_fingerprint(TRAJECTORY_MODULES + extra)


def describe_config(config: TrajectoryConfig) -> str:
    """A config by the fields that differ from the defaults: short enough for a log or an error,
    complete enough to rebuild it."""
    default = TrajectoryConfig()
    changed = [f"{f.name}={getattr(config, f.name)!r}" for f in dataclasses.fields(config)
               if getattr(config, f.name) != getattr(default, f.name)]
    return f"TrajectoryConfig({', '.join(changed)})"


def _check_curves(config: TrajectoryConfig, result: dict, shard: Shard | None = None) -> None:
    """A stored trajectory (or shard of one) has the steps its config plans (up to
    ``diverged_at`` for a diverged run) and one entry per recorded step in every curve; raises
    `InvalidResult` otherwise."""
    missing = [k for k in ("recorded_steps", "diverged_at", "engine", *CURVES) if k not in result]
    if missing:
        raise InvalidResult(f"lacks {', '.join(missing)}")
    plan, steps = [0] + recorded_steps(config), result["recorded_steps"]
    if shard is not None:
        plan = plan[shard.first:shard.stop]
    diverged = result["diverged_at"]
    if diverged is not None and diverged not in plan:
        raise InvalidResult(f"diverged_at={diverged!r} is not a step the config records")
    expected = plan if diverged is None else plan[:plan.index(diverged) + 1]
    if steps != expected:
        planned = f"the {len(expected)} steps the config plans" + (
            "" if diverged is None else f" up to its divergence at {diverged}")
        if not isinstance(steps, list) or len(steps) != len(expected):
            size = len(steps) if isinstance(steps, list) else repr(steps)
            raise InvalidResult(f"records {size} steps, not {planned}")
        n, m = next((a, b) for a, b in zip(steps, expected) if a != b)
        raise InvalidResult(f"records other steps than {planned} (step {n!r} where {m} is planned)")
    for key in CURVES:
        curve = result[key]
        if not isinstance(curve, list) or len(curve) != len(steps):
            size = len(curve) if isinstance(curve, list) else type(curve).__name__
            raise InvalidResult(f"has {size} entries in {key!r} for {len(steps)} recorded steps")


def stored_trajectory(config: TrajectoryConfig, runtime: Runtime) -> dict | None:
    """The valid cached result of ``config``, or None where `run_trajectory` would compute it
    (with one warning for an invalid file; ``cache='only'`` raises instead). The one check of a
    stored trajectory: `run_trajectory` and `run_many` both use it."""
    result = read_valid(result_path(config, runtime), jsonable(config),
                        trajectory_fingerprint(config),
                        lambda r: _check_curves(config, r), runtime.cache, describe_config(config))
    return None if result is None else _decoded({**result, "from_cache": True})


def _decoded(result: dict) -> dict:
    """A stored result as its readers expect it: the nulls that strict JSON wrote for non-finite
    losses and displacements (a diverged run's last step) back as NaN."""
    return {**result, **{key: nan_for_null(result[key]) for key in _FLOAT_CURVES}}


# ------------------------------------------------------------------------------------------------
# Building a run: data, model, schedule, maps
# ------------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    config: TrajectoryConfig
    device: torch.device
    threads: int
    data: Dataset
    model: torch.nn.Module
    schedule: torch.Tensor
    maps: object
    state0: dict
    evaluate: Evaluator
    steps: list[int]
    engine: str
    group_size: int

    @property
    def planned(self) -> int:
        return planned_applications(self.config.order, len(self.maps), self.steps)


def _maps_and_state(config: TrajectoryConfig, model, data: Dataset, schedule):
    """The config's map family builds the maps (one per schedule row) and the initial state."""
    return update_family(config.update).build(config, model, loss_function(data.task),
                                              data.x_train, data.y_train, schedule)


def choose_engine(runtime: Runtime, device: torch.device, config: TrajectoryConfig, maps,
                  model) -> tuple[str, int]:
    """Sequential (in-place restarts) or batched (vmap over trajectories), and the group size.

    The batched engine runs every family whose maps have a grouped path and whose model and
    optimiser it can carry (``maps.grouping_problem()`` is None): plain SGD, momentum and Adam,
    Appendix D's updates, on the MLP, VGG-19 and the BatchNorm ResNets. ``auto`` takes it on CUDA
    only: on this project's 2-core CPU the batched engine was slower for every family of the
    benchmark (batched / sequential 0.49–0.83 for the MLPs with SGD and Adam and for ResNet-18;
    an earlier session measured 1.1–1.5 on the MLPs; see the README). The forward order has no
    restarts to batch, so it always runs sequentially. The group width fills a quarter of the
    free GPU memory with trajectories as `memory.trajectory_bytes` counts them, at most 256.
    """
    if as_order(config.order) == Forward():
        return "sequential", 0
    problem = (maps.grouping_problem() if isinstance(maps, GroupedMaps)
               and hasattr(maps, "grouping_problem") else "these maps have no batched path")
    wanted = runtime.engine == "batched" or (runtime.engine == "auto" and device.type == "cuda")
    if runtime.engine == "batched" and problem is not None:
        raise ValueError(f"engine='batched' cannot run model={config.model!r}, "
                         f"optimizer={config.optimizer!r}, update={config.update!r}: {problem}; "
                         f"use engine='sequential' or 'auto'")
    if not wanted or problem is not None:
        return "sequential", 0
    if runtime.group_size:
        return "batched", runtime.group_size
    per_trajectory = trajectory_bytes(model, maps, maps.inputs[:1])
    fits = int(_GROUP_MEMORY_FRACTION * _free_bytes(device) // per_trajectory)
    return "batched", max(2, min(_MAX_GROUP, fits))


def _free_bytes(device: torch.device) -> int:
    """Free memory the batched engine sizes its groups from (1 GiB assumed on a CPU)."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 2 ** 30


def prepare(config: TrajectoryConfig, runtime: Runtime = Runtime()) -> Prepared:
    """Everything a run needs, on its device, seeded; no training happens here."""
    device = torch_device(runtime.device)
    threads = seed_everything(config.seed, runtime.threads)
    data = load_dataset(config.dataset, runtime.data_root, device, runtime.download,
                        config.fake_data, config.seed)
    model = build_model(config.model, data.input_shape, data.num_outputs, config.seed,
                        config.depth, config.width, config.init, config.base_channels).to(device)
    schedule = batch_schedule(data.num_train, config.batch_size, config.steps,
                              generator(config.seed, "schedule"))
    maps, state0 = _maps_and_state(config, model, data, schedule)
    evaluate = Evaluator(model, data, config.seed, config.eval_train_size, config.eval_test_size)
    engine, group_size = choose_engine(runtime, device, config, maps, model)
    return Prepared(config, device, threads, data, model, schedule, maps, state0, evaluate,
                    recorded_steps(config), engine, group_size)


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------

def run_trajectory(config: TrajectoryConfig, runtime: Runtime = Runtime()) -> dict:
    """Train one trajectory (or load it from the cache) and return its recorded curves.

    The result holds the config, the engine, the code fingerprint, the schedule, and per recorded
    step (step 0 first): train/test loss and accuracy on the fixed evaluation subsets, and
    ``displacement`` = ‖θ_n − θ_prev‖ between consecutive recorded iterates. A NaN/inf loss stops
    the run; ``diverged_at`` records the step (the file holds null for the non-finite values, which
    read back as NaN). ``runtime.cache`` says whether a stored result may be used (`cache`).
    """
    path = result_path(config, runtime)
    return _decoded(cached(path, jsonable(config), trajectory_fingerprint(config),
                           lambda: _train(config, runtime, path.stem),
                           lambda r: _check_curves(config, r), runtime.cache,
                           describe_config(config)))


# ------------------------------------------------------------------------------------------------
# Shards: a backward-type run cut into independent pieces of its recorded steps
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """Recorded steps ``plan[first:stop]`` of a run, where ``plan = [0] + recorded_steps(config)``.

    Every backward iterate depends only on θ_0 and its own batches, so the shards of a run share
    nothing and can run anywhere. A shard that does not start at step 0 also computes the iterate
    of the recorded step before it (not evaluated), so that its first ``displacement`` is the one
    the whole run records: merged in order, the shards are the unsharded result.
    """
    first: int
    stop: int

    def __post_init__(self):
        check_int("first", self.first, 0)
        check_int("stop", self.stop, self.first + 1)


def shard_plan(config: TrajectoryConfig, shards: int) -> list[Shard]:
    """Cut a run's recorded steps into at most ``shards`` contiguous shards of about equal cost.

    Producing step n costs its map applications (n − base(n), plus those of bases it needs; n for
    backward), so the cost of a backward run grows like n²: equal ranges of steps would leave the
    last shard with most of the work. Forward runs are cheap and sequential: one shard."""
    check_int("shards", shards, 1)
    plan = [0] + recorded_steps(config)
    order = as_order(config.order)
    if shards == 1 or order == Forward() or len(plan) < 2:
        return [Shard(0, len(plan))]
    # a step's applications plus one evaluation (counted as one application)
    cumulative = np.cumsum([1] + [planned_applications(order, config.steps, [n]) + 1
                                  for n in plan[1:]])
    # cut where the cumulative cost is nearest to each k/shards of the total
    cuts = {int(np.abs(cumulative - cumulative[-1] * k / shards).argmin()) + 1
            for k in range(1, shards)}
    bounds = [0] + sorted(c for c in cuts if 0 < c < len(plan))
    return [Shard(a, b) for a, b in zip(bounds, bounds[1:] + [len(plan)])]


def shard_path(config: TrajectoryConfig, runtime: Runtime, shard: Shard) -> Path:
    whole = result_path(config, runtime)
    return whole.with_name(f"{whole.stem}.shard-{shard.first}-{shard.stop}.json")


def run_shard(config: TrajectoryConfig, runtime: Runtime, shard: Shard) -> dict:
    """One shard of a run, cached on its own (see `Shard`); `merge_shards` joins them."""
    identity = {**jsonable(config), "shard": [shard.first, shard.stop]}
    return _decoded(cached(shard_path(config, runtime, shard), identity,
                           trajectory_fingerprint(config),
                           lambda: _train(config, runtime, result_path(config, runtime).stem,
                                          shard),
                           lambda r: _check_curves(config, r, shard), runtime.cache,
                           f"{describe_config(config)}, shard {shard.first}:{shard.stop}"))


def merge_shards(config: TrajectoryConfig, runtime: Runtime, parts: list[dict]) -> dict:
    """The whole run from its shards (in order), stored as `run_trajectory` stores it and equal to
    the unsharded result: curves concatenated up to the first divergence, which ends the run as
    it ends an unsharded one; applications and wall time summed over the shards."""
    def merged() -> dict:
        ordered = sorted(parts, key=lambda r: r["shard"][0])
        covered = [r["shard"] for r in ordered]
        expected = [[a.first, a.stop] for a in
                    _contiguous(covered, len([0] + recorded_steps(config)))]
        if covered != expected:
            raise ValueError(f"shards {covered} do not cover the run's recorded steps in order")
        out = {k: v for k, v in ordered[0].items()
               if k not in ("format", "config", "code_fingerprint", "from_cache", "shard")}
        for key in ("recorded_steps", *CURVES):
            out[key] = []
        out["applications"] = out["planned_applications"] = 0
        out["runtime"] = {**out["runtime"], "wall_seconds": 0.0, "shards": len(ordered)}
        for part in ordered:
            for key in ("recorded_steps", *CURVES):
                out[key] += [None if isinstance(v, float) and not math.isfinite(v) else v
                             for v in part[key]]
            out["applications"] += part["applications"]
            out["planned_applications"] += part["planned_applications"]
            out["runtime"]["wall_seconds"] += part["runtime"]["wall_seconds"]
            out["diverged_at"] = part["diverged_at"]
            if part["diverged_at"] is not None:
                break
        return out

    path = result_path(config, runtime)
    return _decoded(cached(path, jsonable(config), trajectory_fingerprint(config), merged,
                           lambda r: _check_curves(config, r), runtime.cache,
                           describe_config(config)))


def _contiguous(covered: list, total: int) -> list[Shard]:
    """The shards ``covered`` would be if they tiled 0..total in order (for the merge's check)."""
    starts = [c[0] for c in covered]
    return [Shard(a, b) for a, b in zip(starts, starts[1:] + [total])] if starts else []


def _require_consent(config: TrajectoryConfig, runtime: Runtime) -> None:
    """A direct run that plans many map applications is priced first and refused above
    `cost.LONG_RUN_HOURS` without consent (`run_many` prices its runs itself and passes its
    consent on). Cheap runs are not priced: pricing times a few steps."""
    if runtime.allow_long or planned_applications(
            config.order, config.steps, recorded_steps(config)) <= _CONSENT_CHECK_APPLICATIONS:
        return
    from .cost import check_consent, estimate_costs  # cost imports this module
    check_consent(estimate_costs([config], runtime)[0].seconds, 1, runtime.allow_long)


def _train(config: TrajectoryConfig, runtime: Runtime, key: str,
           shard: Shard | None = None) -> dict:
    """The recorded curves of one run (or of one shard of it), computed (the cache adds config
    and fingerprint)."""
    if shard is None:
        _require_consent(config, runtime)
    run = prepare(config, runtime)
    plan = [0] + run.steps
    shard = shard or Shard(0, len(plan))
    if shard.stop > len(plan):
        raise ValueError(f"shard {shard.first}:{shard.stop} lies beyond the run's {len(plan)} "
                         f"recorded steps (step 0 included)")
    wanted = [n for n in plan[shard.first:shard.stop] if n > 0]
    before = plan[shard.first - 1] if shard.first > 0 else None  # its iterate: displacement
    at = ([before] if before else []) + wanted
    # The bar counts map applications, so its ETA is the cost model's, not a per-step guess.
    bar = tqdm(total=planned_applications(config.order, len(run.maps), at) if at else 0,
               disable=not runtime.progress, unit="map", leave=False,
               delay=_PROGRESS_DELAY_SECONDS, desc=f"{config.order} seed {config.seed}")
    iteration = iterates(run.maps, run.state0, config.order, at=at,
                         on_application=bar.update if runtime.progress else None,
                         group_size=run.group_size) if at else None
    curves = {k: [] for k in ("step", "train_loss", "test_loss", "train_acc", "test_acc",
                              "displacement")}
    start = time.perf_counter()
    previous = run.evaluate.params_vector(run.state0)
    diverged_at = None
    states = _with_initial(run.state0, iteration or ()) if shard.first == 0 else iteration
    for n, state in states:
        vector = run.evaluate.params_vector(state)
        if n == before and before not in wanted:
            previous = vector  # the step before the shard: only its parameters are needed
            continue
        metrics = run.evaluate(state)
        curves["step"].append(n)
        curves["displacement"].append(float((vector - previous).norm()))
        for k, v in metrics.items():
            curves[k].append(v)
        previous = vector
        if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["test_loss"])):
            diverged_at = n
            break
    bar.close()

    result = {
        "key": key,
        "engine": run.engine,
        "data": run.data.note,
        "runtime": {"device": str(run.device), "threads": run.threads, "engine": run.engine,
                    "group_size": run.group_size, "torch": torch.__version__,
                    "python": platform.python_version(), "machine": platform.machine(),
                    "wall_seconds": time.perf_counter() - start},
        "recorded_steps": curves.pop("step"),
        **curves,
        "applications": iteration.applications if iteration else 0,
        "planned_applications": iteration.planned if iteration else 0,
        "diverged_at": diverged_at,
        **_stored_schedule(run.schedule),
    }
    if shard != Shard(0, len(plan)):
        result["shard"] = [shard.first, shard.stop]
    return result


def _stored_schedule(schedule: torch.Tensor) -> dict:
    """The schedule itself when small, else (batches of thousands) a digest of it."""
    digest = hashlib.sha256(schedule.numpy().tobytes()).hexdigest()
    small = schedule.numel() <= _MAX_STORED_SCHEDULE
    return {"schedule": schedule.tolist() if small else None, "schedule_sha256": digest}


def _with_initial(state0, iteration):
    yield 0, state0
    yield from iteration
