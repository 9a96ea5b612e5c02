"""Benchmark of backward SGD: ``python -m iteration_order.bench`` (or ``make bench``).

In one process and one session, for four cases (the synthetic MLP 3×300 at batch 1; the
FashionMNIST-shaped MLP 5×500 at batch 8 on fake data, with SGD and with Adam; ResNet-18 with
BatchNorm on CIFAR-shaped noise at batch 2), it times full backward SGD over N steps
(N(N+1)/2 map applications) with

* the minimal hand-written PyTorch restart loop (load θ_0 and a fresh optimiser, then
  zero_grad/forward/backward/step),
* the package's sequential engine (``iterates(maps, θ_0, "backward")``),
* the package's batched engine (vmap over groups of trajectories),

plus the big-batch training-step throughput (the hardware ceiling), one vs two threads, what the
cost model (`cost.estimate_costs`) predicted for each engine against what was measured, the
evaluation throughput against the forward-pass ceiling, and two seeds in two single-thread
processes against the same two seeds one after the other (the two MLP SGD cases). Only ratios
measured in the same run are reported: absolute seconds on a shared machine are noise. Each timing
is the best of ``--repeats`` (default 5) interleaved, short repetitions, which is much steadier on
a shared machine than one long run.
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .cache import atomic_write_json
from .cost import estimate_costs
from .devices import requested_device
from .evaluation import Evaluator
from .maps import OptimizerMaps
from .orders import iterates
from .seeding import set_threads
from .trajectory import Prepared, Runtime, TrajectoryConfig, prepare

__all__ = ["main", "CASES", "PROCESS_CASES"]

CASES = {
    "synthetic MLP 3x300, batch 1": TrajectoryConfig(
        dataset="synthetic-cos10", depth=3, width=300, batch_size=1, lr=0.02, steps=70,
        order="backward"),
    "FashionMNIST-shaped MLP 5x500, batch 8": TrajectoryConfig(
        dataset="fashionmnist", fake_data=True, depth=5, width=500, batch_size=8, lr=0.001,
        steps=30, order="backward"),
    "FashionMNIST-shaped MLP 5x500, Adam, batch 8": TrajectoryConfig(
        dataset="fashionmnist", fake_data=True, depth=5, width=500, batch_size=8, lr=0.0001,
        optimizer="adam", steps=20, order="backward"),
    # BatchNorm; batch 2 and 4 steps keep a CPU run to seconds (one step takes about 0.15 s)
    "ResNet-18 (BatchNorm), CIFAR-shaped, batch 2": TrajectoryConfig(
        dataset="cifar10", fake_data=True, model="resnet18", batch_size=2, lr=0.01, steps=4,
        order="backward"),
}
PROCESS_CASES = tuple(CASES)[:2]  # two processes against one: the MLP SGD cases only (time)
EVALUATION_CASES = tuple(CASES)[:2]  # a ResNet evaluation of thousands of images takes minutes
_EVAL_EXAMPLES = 8192  # training examples of a fake evaluation set (its rows repeated)
# two threads on a 2-core machine busy with other work ran up to 14 times slower than one: two
# repetitions are enough to show it, and five of them took minutes
_TWO_THREAD_REPEATS = 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def hand_loop(run: Prepared, last: int | None = None,
              restarts: Iterable[int] | None = None) -> None:
    """The minimal restart loop a person would write: no engine, no functional calls. A fresh
    optimiser per restart (momentum and Adam restart their state with the parameters).
    Restart n computes the backward iterate of step n (n map applications); ``restarts`` names
    the ones to run (default every n in 1..``last``, i.e. full backward SGD)."""
    model = copy.deepcopy(run.model).train()
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    make = (run.maps.make_optimizer if isinstance(run.maps, OptimizerMaps)
            else lambda p: torch.optim.SGD(p, lr=run.config.lr))
    loss_fn = run.maps.loss_fn
    x, y, rows = run.data.x_train, run.data.y_train, run.maps.rows
    for n in restarts if restarts is not None else range(1, (last or len(rows)) + 1):
        model.load_state_dict(theta0)
        optimizer = make(model.parameters())
        for i in range(n - 1, -1, -1):
            optimizer.zero_grad()
            loss_fn(model(x[rows[i]]), y[rows[i]]).backward()
            optimizer.step()


def engine(run: Prepared, group_size: int = 0, last: int | None = None) -> None:
    steps = range(1, (last or len(run.maps)) + 1)
    for _ in iterates(run.maps, run.state0, "backward", at=steps, group_size=group_size):
        pass


def ceiling(run: Prepared, batch: int = 0, repeats: int = 5) -> float:
    """Examples per second of plain training steps on one big batch: what the hardware allows.
    ``batch`` 0: 4096 for an MLP, 16 for the convolutional models (a 4096-image ResNet step
    takes minutes on a CPU, and 16 images already fill its cores)."""
    batch = batch or (4096 if run.config.model == "mlp" else 16)
    model = copy.deepcopy(run.model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=run.config.lr)
    rows = torch.arange(batch, device=run.device) % run.data.num_train
    x, y = run.data.x_train[rows], run.data.y_train[rows]

    def step():
        optimizer.zero_grad()
        run.maps.loss_fn(model(x), y).backward()
        optimizer.step()

    step()
    return batch / min(_timed(step, run.device) for _ in range(repeats))


@dataclass
class CaseResult:
    name: str
    applications: int
    batch: int
    hand: float
    sequential: float
    batched: float
    group_size: int
    ceiling_examples_per_s: float
    sequential_two_threads: float
    predicted_sequential: float  # seconds the cost model predicted for the timed runs
    predicted_batched: float

    def ratios(self) -> dict:
        achieved = self.applications * self.batch / self.sequential
        return {
            "engine / hand loop (speed)": self.hand / self.sequential,
            "batched / sequential (speed)": self.sequential / self.batched,
            "batched / hand loop (speed)": self.hand / self.batched,
            "achieved / ceiling (examples/s)": achieved / self.ceiling_examples_per_s,
            "two threads / one thread (speed)": self.sequential / self.sequential_two_threads,
            "predicted / measured, sequential (time)": self.predicted_sequential / self.sequential,
            "predicted / measured, batched (time)": self.predicted_batched / self.batched,
        }


def bench_case(name: str, config: TrajectoryConfig, device: str, repeats: int,
               group_size: int) -> CaseResult:
    run = prepare(config, Runtime(device=device, threads=1, progress=False))
    dev = run.device
    timings = {"hand": [], "sequential": [], "batched": [], "two_threads": []}
    # warm-up: allocator, autograd and vmap caches
    warm = min(8, config.steps)
    hand_loop(run, last=warm), engine(run, last=warm), engine(run, group_size, last=warm)
    for repeat in range(repeats):  # interleaved, so a slow moment hurts every method alike
        set_threads(1)
        timings["hand"].append(_timed(lambda: hand_loop(run), dev))
        timings["sequential"].append(_timed(lambda: engine(run), dev))
        timings["batched"].append(_timed(lambda: engine(run, group_size), dev))
        if repeat < _TWO_THREAD_REPEATS:
            set_threads(2)
            timings["two_threads"].append(_timed(lambda: engine(run), dev))
    set_threads(1)
    best = {k: min(v) for k, v in timings.items()}
    return CaseResult(name, run.planned, config.batch_size, best["hand"], best["sequential"],
                      best["batched"], group_size, ceiling(run), best["two_threads"],
                      *predicted_map_seconds(config, device, group_size))


def predicted_map_seconds(config: TrajectoryConfig, device: str, group_size: int
                          ) -> tuple[float, float]:
    """What the cost model predicts, before running, for the map applications the bench times
    (sequential, then batched at ``group_size``): the warm-ups of `cost.estimate_costs`."""
    predictions = []
    for engine in ("sequential", "batched"):
        runtime = Runtime(device=device, threads=1, engine=engine,
                          group_size=group_size if engine == "batched" else 0, progress=False)
        predictions.append(estimate_costs([config], runtime, evaluations=False)[0].map_seconds)
    set_threads(1)
    return predictions[0], predictions[1]


def evaluation_throughput(config: TrajectoryConfig, device: str, repeats: int,
                          data_root: str | None = None) -> dict:
    """Examples per second of a full evaluation (`Evaluator`, train and test sets, or the
    config's ``eval_train_size``/``eval_test_size`` subsets when set) against the forward-pass
    ceiling: plain ``model(x)`` on one chunk of the evaluator's size, no loss, no metrics. Fake
    data's training rows are repeated to ``_EVAL_EXAMPLES`` examples (a real image set has tens
    of thousands); a synthetic set is evaluated at its own size (201). ``data_root``: where a
    real image set is read (default ``$DATA_ROOT``)."""
    run = prepare(config, Runtime(device=device, threads=1, data_root=data_root, progress=False))
    data = run.data
    if config.fake_data and len(data.x_train) < _EVAL_EXAMPLES:
        rows = torch.arange(_EVAL_EXAMPLES, device=run.device) % len(data.x_train)
        data = replace(data, x_train=data.x_train[rows], y_train=data.y_train[rows])
    evaluator = Evaluator(run.model, data, config.seed, config.eval_train_size,
                          config.eval_test_size)
    model = copy.deepcopy(run.model).eval()
    batch = data.x_train[:min(evaluator.chunk, len(data.x_train))]

    @torch.no_grad()
    def forward():
        model(batch)

    evaluator(run.state0), forward()  # warm-up
    evaluation, plain = [], []
    for _ in range(repeats):  # interleaved, like the engine timings
        evaluation.append(_timed(lambda: evaluator(run.state0), run.device))
        plain.append(_timed(forward, run.device))
    achieved = evaluator.examples / min(evaluation)
    ceiling_rate = len(batch) / min(plain)
    return {"examples": evaluator.examples, "chunk": evaluator.chunk,
            "evaluation seconds": min(evaluation),
            "evaluation examples/s": achieved, "forward ceiling examples/s": ceiling_rate,
            "evaluation / ceiling (examples/s)": achieved / ceiling_rate}


def _seed_worker(config: TrajectoryConfig, device: str, index: int, repeats: int, barrier,
                 out) -> None:
    """One single-thread worker: prepared and warmed up once, then, per repetition, a turn alone
    (the workers take turns: the serial baseline) and a run side by side with the other worker."""
    run = prepare(config, Runtime(device=device, threads=1, progress=False))
    engine(run)  # warm-up: first-call allocations are not part of the throughput
    for repeat in range(repeats):
        for turn in range(2):
            barrier.wait()  # the other worker waits here until this turn is over
            if turn == index:
                start = time.time()
                engine(run)
                out.put(("serial", repeat, start, time.time()))
        barrier.wait()
        start = time.time()
        engine(run)
        out.put(("parallel", repeat, start, time.time()))


def bench_processes(config: TrajectoryConfig, device: str, repeats: int) -> dict:
    """Two seeds in two single-thread processes at once against the same two processes taking
    turns: best of ``repeats`` for each, after a warm-up, with no process start-up in the timing."""
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(2)
    workers = [ctx.Process(target=_seed_worker,
                           args=(config.replace(seed=seed), device, seed, repeats, barrier, queue))
               for seed in (0, 1)]
    for w in workers:
        w.start()
    records = [queue.get() for _ in range(4 * repeats)]  # read before join: the queue may block
    for w in workers:
        w.join()
    serial = min(sum(end - start for kind, r, start, end in records
                     if kind == "serial" and r == repeat) for repeat in range(repeats))
    spans = []
    for repeat in range(repeats):
        both = [(start, end) for kind, r, start, end in records
                if kind == "parallel" and r == repeat]
        spans.append(max(e for _, e in both) - min(s for s, _ in both))
    parallel = min(spans)
    return {"serial_seconds": serial, "parallel_seconds": parallel, "repeats": repeats,
            "two processes / one process (throughput)": serial / parallel}


def render(results: list[CaseResult], processes: dict, device: str,
           evaluations: dict | None = None) -> str:
    lines = [f"Backward SGD benchmark on {device} ({platform.machine()}, torch {torch.__version__});"
             " speeds as ratios measured in one run.", "",
             "| case | map applications | " + " | ".join(results[0].ratios()) + " |",
             "|---|---:|" + "---:|" * len(results[0].ratios())]
    for r in results:
        cells = " | ".join(f"{v:.2f}" for v in r.ratios().values())
        lines.append(f"| {r.name} (group {r.group_size}) | {r.applications} | {cells} |")
    if evaluations:
        lines += ["", "Evaluation throughput (train and test sets, one host transfer per "
                  "evaluation) against the forward-pass ceiling (plain forward of one chunk):", "",
                  "| case | examples | chunk | evaluation / ceiling (examples/s) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {name} | {e['examples']} | {e['chunk']} | "
                  f"{e['evaluation / ceiling (examples/s)']:.2f} |"
                  for name, e in evaluations.items()]
    lines += ["", "Two seeds in two single-thread processes at once against the same processes "
              "taking turns (throughput ratio, best of the repetitions after a warm-up):", ""]
    lines += [f"- {name}: {p['two processes / one process (throughput)']:.2f}"
              for name, p in processes.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m iteration_order.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many (default 5)")
    parser.add_argument("--group-size", type=int, default=32,
                        help="trajectories per vmap group for the batched engine (default 32)")
    parser.add_argument("--out", default="results/bench", help="prefix of the .json/.md output")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.group_size < 2:
        parser.error("--repeats must be >= 1 and --group-size >= 2")
    device = requested_device(args.device)

    results = [bench_case(name, config, device, args.repeats, args.group_size)
               for name, config in CASES.items()]
    evaluations = {name: evaluation_throughput(CASES[name], device, args.repeats)
                   for name in EVALUATION_CASES}
    processes = {name: bench_processes(CASES[name], device, min(args.repeats, 2))
                 for name in PROCESS_CASES}
    table = render(results, processes, device, evaluations)
    payload = {"device": device, "machine": platform.machine(), "torch": torch.__version__,
               "command": "python -m iteration_order.bench " + " ".join(argv or []),
               "cases": [{**r.__dict__, "ratios": r.ratios()} for r in results],
               "evaluation": evaluations, "processes": processes}
    atomic_write_json(Path(f"{args.out}-{device}.json"), payload)
    Path(f"{args.out}-{device}.md").write_text(table + "\n")
    print(table)
    if device == "cuda":
        # the GPU target is >= 50x at page scale; these cases are smaller (bench scale)
        print("\nGPU target (at page scale: >= 50x the hand loop); at this bench's scale:")
        for r in results:
            print(f"- {r.name}: batched / hand loop {r.ratios()['batched / hand loop (speed)']:.1f}x")
    return payload


if __name__ == "__main__":
    main()
