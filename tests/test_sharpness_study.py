"""The sharpness page's statistics against their definitions, on a few tiny probed runs."""
import dataclasses
import math

import numpy as np
import pytest

from iteration_order import Runtime, TrajectoryConfig
from iteration_order.sharpness import Probe
from iteration_order.book.sharpness_study import (SharpnessExperiment, coincidence_table, intervals,
                                             tail_sharpness)

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=6, lr=0.05, batch_size=4, steps=12,
                        seed=3)
TINY_PROBE = Probe(every=4, batch=16, eigenpairs=2, tol=1e-6, curve_every=2)


def runtime(path):
    return Runtime(device="cpu", threads=1, results_dir=path, progress=False)


@pytest.mark.slow  # four probed runs: about 3 s alone, up to 9 s on the shared 2-core machine
def test_statistics_follow_their_definitions(tmp_path):
    probe = dataclasses.replace(TINY_PROBE, every=3, curve_every=1)
    experiment = SharpnessExperiment(TINY, seeds=[3, 4], probe=probe)
    results = experiment.run(runtime(tmp_path))
    forward = results[(3, "forward")]
    table = intervals(forward)
    assert list(table["start"]) == [0, 3, 6, 9] and list(table["end"]) == [3, 6, 9, 12]
    assert table["rotation"].iloc[1] == pytest.approx(1 - forward["overlap"][2])
    assert table["jump"].iloc[0] == pytest.approx(math.log(forward["probe_loss"][1]
                                                           / forward["probe_loss"][0]))
    curve = dict(zip(forward["curve_steps"], forward["curve_loss"]))
    assert table["spike"].iloc[3] == pytest.approx(
        math.log(max(curve[10], curve[11], curve[12]) / forward["probe_loss"][3]))
    assert intervals(results[(3, "backward")])["spike"].isna().all()  # no curve between probes
    settle = tail_sharpness(experiment, results)
    backward = results[(4, "backward")]
    assert settle.loc[(4, "backward"), "tail probes"] == 2  # steps 9 and 12 are >= 0.75 * 12
    assert settle.loc[(4, "backward"), "λ_max / (2/h)"] == pytest.approx(
        (backward["sharpness"][-1] + backward["sharpness"][-2]) / 2 * 0.05 / 2)
    assert settle.loc[(4, "forward"), "ratio to forward"] == pytest.approx(1.0)
    rho = coincidence_table(experiment, results)
    assert rho.loc[("forward", "all"), "intervals"] == 6  # 4 per seed, the first one left out
    assert math.isnan(rho.loc[("forward", 3), "ρ(rotation, spike)"])  # 3 pairs: too few to rank
    from scipy.stats import spearmanr
    pooled = np.concatenate([intervals(results[(s, "forward")])[["rotation", "spike"]].to_numpy()[1:]
                             for s in (3, 4)])
    assert rho.loc[("forward", "all"), "ρ(rotation, spike)"] == pytest.approx(
        spearmanr(pooled[:, 0], pooled[:, 1]).statistic)
    starts = [3, 6, 9] * 2
    assert rho.loc[("forward", "all"), "ρ(step, rotation)"] == pytest.approx(
        spearmanr(starts, pooled[:, 0]).statistic)
