"""The benchmark's machinery on a tiny case: the ratios exist and are positive, the table renders.
(The speeds themselves are measured by `make bench`, not asserted: timing is noise in CI.)"""
import pytest

from iteration_order import TrajectoryConfig
from iteration_order.bench import bench_case, bench_processes, render

TINY = TrajectoryConfig(dataset="synthetic-cos10", depth=1, width=8, batch_size=1, lr=0.02,
                        steps=6, order="backward")


@pytest.mark.slow
def test_a_tiny_case_gives_every_ratio_and_a_table():
    case = bench_case("tiny", TINY, "cpu", repeats=1, group_size=2)
    assert case.applications == 6 * 7 // 2  # full backward over 6 steps
    assert set(case.ratios()) == {"engine / hand loop (speed)", "batched / sequential (speed)",
                                  "batched / hand loop (speed)",
                                  "achieved / ceiling (examples/s)",
                                  "two threads / one thread (speed)"}
    assert all(v > 0 for v in case.ratios().values())
    processes = {"tiny": bench_processes(TINY, "cpu", repeats=2)}
    assert processes["tiny"]["repeats"] == 2
    assert processes["tiny"]["two processes / one process (throughput)"] > 0
    table = render([case], processes, "cpu")
    assert "| tiny (group 2) | 21 |" in table and "- tiny: " in table
