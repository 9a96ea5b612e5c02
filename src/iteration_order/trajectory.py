"""One training trajectory in one order: config → data, model, schedule, maps → recorded curves.

A run is fully described by a frozen `TrajectoryConfig` (the science) and a `Runtime` (where and
how it executes). Its result is cached as JSON under ``results/<config hash>-<device>.json``,
written atomically, and a rerun with the same config and device loads it instead of training.
"""
from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call
from torch.nn import functional as F
from tqdm.auto import tqdm

from .cache import DEFAULT_RESULTS, atomic_write_json, config_hash, read_json
from .data import DATASET_NAMES, Dataset, load_dataset
from .maps import initial_optimizer_state, initial_state, optimizer_maps, sgd_maps
from .models import MODEL_NAMES, build_model
from .orders import as_order, iterates, planned_applications
from .schedule import batch_schedule
from .seeding import generator, seed_everything

__all__ = ["TrajectoryConfig", "Runtime", "run_trajectory", "recorded_steps", "resolve_device",
           "OPTIMIZERS", "result_path"]

OPTIMIZERS = ("sgd", "momentum", "adam")
_PROGRESS_DELAY_SECONDS = 3  # the bar appears only once a run has lasted this long


@dataclass(frozen=True)
class TrajectoryConfig:
    dataset: str = "synthetic-x2"  # see data.DATASET_NAMES
    fake_data: bool = False        # image sets only: noise with the real shapes (smoke runs)
    model: str = "mlp"             # see models.MODEL_NAMES
    depth: int = 3                 # MLP hidden layers
    width: int = 300               # MLP hidden units per layer
    optimizer: str = "sgd"         # sgd | momentum (heavy ball) | adam
    lr: float = 0.05
    momentum: float = 0.9          # used by optimizer="momentum" only
    batch_size: int = 1
    steps: int = 1400
    seed: int = 0
    order: str = "forward"         # forward | backward | reset:every=K | reset:at=S,... | switch:S
    eval_every: int = 1            # record every k-th step (and the last); step 0 always
    eval_steps: tuple[int, ...] = ()  # explicit steps to record instead of eval_every
    eval_train_size: int = 0       # fixed training subset for train metrics; 0 = whole set
    eval_test_size: int = 0        # fixed test subset for test metrics; 0 = whole set

    def __post_init__(self):
        known = DATASET_NAMES[:-1]
        if self.dataset not in known and not self.dataset.startswith("npz:"):
            raise ValueError(f"unknown data set {self.dataset!r}; allowed: "
                             f"{', '.join(DATASET_NAMES)}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(MODEL_NAMES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: "
                             f"{', '.join(OPTIMIZERS)}")
        for name in ("steps", "batch_size", "eval_every", "depth", "width"):
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
        object.__setattr__(self, "eval_steps", tuple(sorted(set(self.eval_steps))))
        bad = [n for n in self.eval_steps if not isinstance(n, int) or not 1 <= n <= self.steps]
        if bad:
            raise ValueError(f"eval_steps {bad[:5]} lie outside 1..steps={self.steps}")

    def replace(self, **changes) -> "TrajectoryConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"                   # auto (cuda if present) | cpu | cuda | cuda:N
    threads: int = 0                       # torch intra-op threads; 0 = all cores
    data_root: str | None = None           # default: $DATA_ROOT
    download: bool = False                 # let torchvision fetch missing data (needs internet)
    results_dir: Path = field(default=DEFAULT_RESULTS)
    progress: bool = True                  # a bar, shown once a run has lasted a few seconds


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; "
                         f"use device='cpu' or 'auto'")
    return dev


def recorded_steps(config: TrajectoryConfig) -> list[int]:
    """Steps n >= 1 whose iterate is evaluated (step 0, the initial point, is always evaluated)."""
    if config.eval_steps:
        return list(config.eval_steps)
    return sorted(set(range(config.eval_every, config.steps + 1, config.eval_every))
                  | {config.steps})


def result_path(config: TrajectoryConfig, runtime: Runtime) -> Path:
    return Path(runtime.results_dir) / f"{config_hash(config)}-{resolve_device(runtime.device).type}.json"


# ------------------------------------------------------------------------------------------------
# Evaluation on fixed subsets
# ------------------------------------------------------------------------------------------------

def _loss_fn(task: str):
    return F.cross_entropy if task == "classification" else F.mse_loss


def _flat(state: dict) -> dict[str, torch.Tensor]:
    """The network tensors of either state form (sgd_maps' flat one or optimizer_maps' nested)."""
    return {**state["params"], **state["buffers"]} if "optimizer" in state else state


class _Evaluator:
    def __init__(self, model, data: Dataset, config: TrajectoryConfig, chunk: int = 2048):
        self.model, self.data, self.chunk = model, data, chunk
        g = generator(config.seed, "eval-subsets")
        self.train_rows = self._subset(len(data.x_train), config.eval_train_size, g)
        self.test_rows = self._subset(len(data.x_test), config.eval_test_size, g)
        self.param_names = [n for n, _ in model.named_parameters()]

    def _subset(self, n: int, size: int, g: torch.Generator) -> torch.Tensor:
        rows = torch.randperm(n, generator=g)[:size] if 0 < size < n else torch.arange(n)
        return rows.sort().values.to(self.data.x_train.device)

    @torch.no_grad()
    def _split(self, tensors, x, y, rows):
        total_loss, correct = 0.0, 0
        for start in range(0, len(rows), self.chunk):
            idx = rows[start:start + self.chunk]
            out = functional_call(self.model, tensors, (x[idx],))
            total_loss += float(_loss_fn(self.data.task)(out, y[idx], reduction="sum"))
            if self.data.task == "classification":
                correct += int((out.argmax(1) == y[idx]).sum())
        per_output = 1 if self.data.task == "classification" else y.shape[1]
        loss = total_loss / (len(rows) * per_output)
        acc = correct / len(rows) if self.data.task == "classification" else None
        return loss, acc

    def __call__(self, state: dict) -> dict:
        tensors = _flat(state)
        self.model.eval()  # BatchNorm: use the running statistics carried in the state
        train_loss, train_acc = self._split(tensors, self.data.x_train, self.data.y_train,
                                            self.train_rows)
        test_loss, test_acc = self._split(tensors, self.data.x_test, self.data.y_test,
                                          self.test_rows)
        return {"train_loss": train_loss, "test_loss": test_loss, "train_acc": train_acc,
                "test_acc": test_acc}

    def params_vector(self, state: dict) -> torch.Tensor:
        tensors = _flat(state)
        return torch.cat([tensors[n].reshape(-1) for n in self.param_names])


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------

def _maps_and_state(config: TrajectoryConfig, model, data: Dataset, schedule):
    loss_fn = _loss_fn(data.task)
    args = (model, loss_fn, data.x_train, data.y_train, schedule)
    if config.optimizer == "sgd":
        return sgd_maps(*args, lr=config.lr), initial_state(model)
    if config.optimizer == "momentum":
        make = lambda p: torch.optim.SGD(p, lr=config.lr, momentum=config.momentum)  # noqa: E731
    else:
        make = lambda p: torch.optim.Adam(p, lr=config.lr)  # noqa: E731
    return optimizer_maps(*args, make_optimizer=make), initial_optimizer_state(model)


def run_trajectory(config: TrajectoryConfig, runtime: Runtime = Runtime()) -> dict:
    """Train one trajectory (or load it from the cache) and return its recorded curves.

    The result holds the config, the schedule, and per recorded step (step 0 first): train/test
    loss and accuracy on the fixed evaluation subsets, and ``displacement`` = ‖θ_n − θ_prev‖ between
    consecutive recorded iterates. A NaN/inf loss stops the run; ``diverged_at`` records the step.
    """
    device = resolve_device(runtime.device)
    path = result_path(config, runtime)
    if path.is_file():
        result = read_json(path)
        result["from_cache"] = True
        return result

    threads = seed_everything(config.seed, runtime.threads)
    data = load_dataset(config.dataset, runtime.data_root, device, runtime.download,
                        config.fake_data, config.seed)
    model = build_model(config.model, data.input_shape, data.num_outputs, config.seed,
                        config.depth, config.width).to(device)
    schedule = batch_schedule(data.num_train, config.batch_size, config.steps,
                              generator(config.seed, "schedule"))
    maps, state0 = _maps_and_state(config, model, data, schedule)
    evaluate = _Evaluator(model, data, config)

    steps = recorded_steps(config)
    planned = planned_applications(config.order, len(maps), steps)
    # The bar counts map applications, so its ETA is the cost model's, not a per-step guess.
    bar = tqdm(total=planned, disable=not runtime.progress, unit="map", leave=False,
               delay=_PROGRESS_DELAY_SECONDS, desc=f"{config.order} seed {config.seed}")
    run = iterates(maps, state0, config.order, at=steps,
                   on_application=bar.update if runtime.progress else None)

    curves = {k: [] for k in ("step", "train_loss", "test_loss", "train_acc", "test_acc",
                              "displacement")}
    start = time.perf_counter()
    previous = evaluate.params_vector(state0)
    diverged_at = None
    for n, state in _chain(state0, run):
        vector = evaluate.params_vector(state)
        metrics = evaluate(state)
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
        "data": data.note,
        "runtime": {"device": str(device), "threads": threads, "torch": torch.__version__,
                    "python": platform.python_version(), "machine": platform.machine(),
                    "wall_seconds": time.perf_counter() - start},
        "recorded_steps": curves.pop("step"),
        **curves,
        "applications": run.applications,
        "planned_applications": run.planned,
        "diverged_at": diverged_at,
        "schedule": schedule.tolist(),
    }
    atomic_write_json(path, result)
    # Return what a rerun would load, so fresh and cached results are indistinguishable.
    return {**read_json(path), "from_cache": False}


def _chain(state0, run):
    yield 0, state0
    yield from run
