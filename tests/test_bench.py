"""The benchmark's machinery on tiny cases: the ratios exist and are positive, the table renders.
(The speeds themselves are measured by `make bench`, not asserted: timing is noise in CI.)"""
import pytest

from iteration_order import TrajectoryConfig
from iteration_order.bench import (CASES, EVALUATION_CASES, PROCESS_CASES, bench_case,
                                   bench_processes, evaluation_throughput, render)

TINY = TrajectoryConfig(dataset="synthetic-cos10", depth=1, width=8, batch_size=1, lr=0.02,
                        steps=6, order="backward")
RATIOS = {"engine / hand loop (speed)", "batched / sequential (speed)",
          "batched / hand loop (speed)", "achieved / ceiling (examples/s)",
          "two threads / one thread (speed)", "predicted / measured, sequential (time)",
          "predicted / measured, batched (time)"}


@pytest.mark.slow
def test_a_tiny_case_gives_every_ratio_and_a_table():
    case = bench_case("tiny", TINY, "cpu", repeats=1, group_size=2)
    assert case.applications == 6 * 7 // 2  # full backward over 6 steps
    assert set(case.ratios()) == RATIOS
    assert all(v > 0 for v in case.ratios().values())
    processes = {"tiny": bench_processes(TINY, "cpu", repeats=2)}
    assert processes["tiny"]["repeats"] == 2
    assert processes["tiny"]["two processes / one process (throughput)"] > 0
    evaluation = {"tiny": evaluation_throughput(TINY.replace(dataset="fashionmnist",
                                                             fake_data=True), "cpu", repeats=1)}
    assert evaluation["tiny"]["examples"] == 8192 + 256  # repeated fake rows, then the test set
    assert evaluation["tiny"]["evaluation / ceiling (examples/s)"] > 0
    synthetic = evaluation_throughput(TINY, "cpu", repeats=1)
    assert synthetic["examples"] == 101 + 100  # a synthetic set at its own size
    table = render([case], processes, "cpu", evaluation)
    assert "| tiny (group 2) | 21 |" in table and "- tiny: " in table
    assert "| tiny | 8448 | 2048 |" in table


@pytest.mark.slow
@pytest.mark.parametrize("family", [dict(optimizer="adam", lr=1e-3),
                                    # TINY's MLP fields back at their defaults: a ResNet refuses them
                                    dict(dataset="cifar10", fake_data=True, model="resnet18",
                                         depth=3, width=300, batch_size=2, steps=2)],
                         ids=["adam", "resnet18"])
def test_the_new_families_run_on_every_engine(family):
    case = bench_case("family", TINY.replace(**{"steps": 3, **family}), "cpu", repeats=1,
                      group_size=2)
    assert set(case.ratios()) == RATIOS and all(v > 0 for v in case.ratios().values())


def test_the_bench_covers_a_resnet_and_adam():
    assert any(c.model == "resnet18" for c in CASES.values())
    assert any(c.optimizer == "adam" for c in CASES.values())
    assert set(PROCESS_CASES) <= set(CASES) and set(EVALUATION_CASES) <= set(CASES)
