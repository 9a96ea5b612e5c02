"""One training trajectory in one order: config → data, model, schedule, maps → recorded curves.

A run is fully described by a frozen `TrajectoryConfig` (the science) and a `Runtime` (where and
how it executes). Its result is cached as JSON under ``results/<config hash>-<device>.json``,
written atomically, and a rerun with the same config and device loads it instead of training.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .cache import DEFAULT_RESULTS, atomic_write_json, config_hash, read_json
from .data import DATASET_NAMES, Dataset, load_dataset
from .evaluation import Evaluator, loss_function
from .families import update_family
from .memory import trajectory_bytes
from .models import INITS, MODEL_NAMES, build_model
from .orders import Forward, GroupedMaps, as_order, iterates, planned_applications
from .schedule import batch_schedule
from .seeding import generator, seed_everything

__all__ = ["TrajectoryConfig", "Runtime", "run_trajectory", "recorded_steps", "resolve_device",
           "OPTIMIZERS", "ENGINES", "result_path", "parse_record", "prepare", "Prepared",
           "choose_engine"]

OPTIMIZERS = ("sgd", "momentum", "adam")
ENGINES = ("auto", "sequential", "batched")
_RECORD_FORMS = "'every:K', 'log:M' (M log-spaced steps) or 'at:S1,S2,...'"
_PROGRESS_DELAY_SECONDS = 3  # the bar appears only once a run has lasted this long
_GROUP_MEMORY_FRACTION = 0.25  # share of free GPU memory a batched group may take
_MAX_GROUP = 256
# field -> its default, which must never change
_ADDED_LATER = {"init": "torch", "update": "sgd", "micro_batches": 1, "reg_lambda": 0.0}
_MAX_STORED_SCHEDULE = 50_000  # larger schedules are stored as a digest: results stay small


def parse_record(spec: str, steps: int) -> list[int]:
    """The steps n >= 1 a record spec names, sorted; ``every`` and ``log`` include the last step."""
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
    except ValueError as err:
        raise ValueError(f"bad record spec {spec!r}: {err}. Allowed: {_RECORD_FORMS}") from None
    raise ValueError(f"unknown record spec {spec!r}; allowed: {_RECORD_FORMS}")


@dataclass(frozen=True)
class TrajectoryConfig:
    dataset: str = "synthetic-x2"  # see data.DATASET_NAMES
    fake_data: bool = False        # image sets only: noise with the real shapes (smoke runs)
    model: str = "mlp"             # see models.MODEL_NAMES
    depth: int = 3                 # MLP hidden layers
    width: int = 300               # MLP hidden units per layer
    init: str = "torch"            # MLP initialisation: torch (PyTorch default) | he
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
        if self.dataset not in DATASET_NAMES[:-1] and not self.dataset.startswith("npz:"):
            raise ValueError(f"unknown data set {self.dataset!r}; allowed: "
                             f"{', '.join(DATASET_NAMES)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; allowed: {', '.join(INITS)}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(MODEL_NAMES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: "
                             f"{', '.join(OPTIMIZERS)}")
        for name in ("steps", "batch_size", "depth", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        for name in ("seed", "eval_train_size", "eval_test_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")
        object.__setattr__(self, "order", as_order(self.order).spec())
        self._check_update()
        parse_record(self.record, self.steps)
        parse_record(self.record_forward, self.steps)

    def _check_update(self) -> None:
        """The fields of the map family named by ``update``, checked before any data is loaded
        (the family's own check: `families`; Appendix D's updates register in `order_average`)."""
        c = self.micro_batches
        if not isinstance(c, int) or isinstance(c, bool) or c < 1:
            raise ValueError(f"micro_batches must be an integer >= 1; got {c!r}")
        if not (isinstance(self.reg_lambda, (int, float)) and math.isfinite(self.reg_lambda)
                and self.reg_lambda >= 0):
            raise ValueError(f"reg_lambda must be a finite number >= 0; got {self.reg_lambda!r}")
        update_family(self.update).check(self)

    def replace(self, **changes) -> "TrajectoryConfig":
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict:
        """The fields that name a result in the cache. A field added after results were first
        cached counts only when it differs from its default, so earlier results keep their names
        (and the default is never changed, which would silently re-label them)."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items()
                if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}


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

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; allowed: {', '.join(ENGINES)}")
        if not isinstance(self.group_size, int) or self.group_size < 0:
            raise ValueError(f"group_size must be an integer >= 0; got {self.group_size!r}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; "
                         f"use device='cpu' or 'auto'")
    return dev


def recorded_steps(config: TrajectoryConfig) -> list[int]:
    """Steps n >= 1 whose iterate is evaluated (step 0, the initial point, always is)."""
    spec = config.record_forward if as_order(config.order) == Forward() else config.record
    return parse_record(spec, config.steps)


def result_path(config: TrajectoryConfig, runtime: Runtime) -> Path:
    device = resolve_device(runtime.device).type
    return Path(runtime.results_dir) / f"{config_hash(config.identity())}-{device}.json"


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
    device = resolve_device(runtime.device)
    threads = seed_everything(config.seed, runtime.threads)
    data = load_dataset(config.dataset, runtime.data_root, device, runtime.download,
                        config.fake_data, config.seed)
    model = build_model(config.model, data.input_shape, data.num_outputs, config.seed,
                        config.depth, config.width, config.init).to(device)
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

    The result holds the config, the schedule, and per recorded step (step 0 first): train/test
    loss and accuracy on the fixed evaluation subsets, and ``displacement`` = ‖θ_n − θ_prev‖ between
    consecutive recorded iterates. A NaN/inf loss stops the run; ``diverged_at`` records the step.
    """
    path = result_path(config, runtime)
    if path.is_file():
        return {**read_json(path), "from_cache": True}

    run = prepare(config, runtime)
    # The bar counts map applications, so its ETA is the cost model's, not a per-step guess.
    bar = tqdm(total=run.planned, disable=not runtime.progress, unit="map", leave=False,
               delay=_PROGRESS_DELAY_SECONDS, desc=f"{config.order} seed {config.seed}")
    iteration = iterates(run.maps, run.state0, config.order, at=run.steps,
                         on_application=bar.update if runtime.progress else None,
                         group_size=run.group_size)
    curves = {k: [] for k in ("step", "train_loss", "test_loss", "train_acc", "test_acc",
                              "displacement")}
    start = time.perf_counter()
    previous = run.evaluate.params_vector(run.state0)
    diverged_at = None
    for n, state in _with_initial(run.state0, iteration):
        vector = run.evaluate.params_vector(state)
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
        "config": dataclasses.asdict(config),
        "key": path.stem,
        "data": run.data.note,
        "runtime": {"device": str(run.device), "threads": run.threads, "engine": run.engine,
                    "group_size": run.group_size, "torch": torch.__version__,
                    "python": platform.python_version(), "machine": platform.machine(),
                    "wall_seconds": time.perf_counter() - start},
        "recorded_steps": curves.pop("step"),
        **curves,
        "applications": iteration.applications,
        "planned_applications": iteration.planned,
        "diverged_at": diverged_at,
        **_stored_schedule(run.schedule),
    }
    atomic_write_json(path, result)
    # Return what a rerun would load, so fresh and cached results are indistinguishable.
    return {**read_json(path), "from_cache": False}


def _stored_schedule(schedule: torch.Tensor) -> dict:
    """The schedule itself when small, else (batches of thousands) a digest of it."""
    digest = hashlib.sha256(schedule.numpy().tobytes()).hexdigest()
    small = schedule.numel() <= _MAX_STORED_SCHEDULE
    return {"schedule": schedule.tolist() if small else None, "schedule_sha256": digest}


def _with_initial(state0, iteration):
    yield 0, state0
    yield from iteration
