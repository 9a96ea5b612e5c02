"""The sharpness page's statistics against their definitions, on a few tiny probed runs."""
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from iteration_order import Runtime, TrajectoryConfig
from iteration_order.sharpness import Probe
from iteration_order.book.sharpness import (
    SharpnessExperiment, coincidence_caption, coincidence_table, intervals, largest_rotations,
    rotation_table,
    sharpness_caption, sharpness_numbers, significant, tail_sharpness)

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=6, lr=0.05, batch_size=4, steps=12,
                        seed=3)
TINY_PROBE = Probe(every=4, batch=16, eigenpairs=2, tol=1e-6, curve_every=2)


def runtime(path):
    return Runtime(device="cpu", threads=1, results_dir=path, progress=False)


@pytest.mark.slow  # four probed runs: about 3 s alone, up to 9 s on the shared 2-core machine
def test_statistics_follow_their_definitions(tmp_path):
    probe = dataclasses.replace(TINY_PROBE, every=3, curve_every=1)
    experiment = SharpnessExperiment(TINY, seeds=[3, 4], probe=probe)
    results = experiment.run(runtime=runtime(tmp_path))
    forward = results[(3, "forward")]
    table = intervals(forward)
    assert list(table["start"]) == [0, 3, 6, 9] and list(table["end"]) == [3, 6, 9, 12]
    assert table["rotation"].iloc[1] == pytest.approx(1 - forward["overlap"][2])
    assert table["subspace rotation"].iloc[1] == pytest.approx(
        1 - forward["subspace_similarity"][2])
    assert table["leading escape"].iloc[2] == pytest.approx(1 - forward["subspace_overlap"][3])
    assert table["leading entry"].iloc[2] == pytest.approx(
        1 - forward["reverse_subspace_overlap"][3])
    gaps = [(v[0] - v[1]) / v[0] for v in forward["eigenvalues"]]
    assert table["gap"].iloc[0] == pytest.approx(min(gaps[0], gaps[1]))
    assert table["jump"].iloc[0] == pytest.approx(math.log(forward["probe_loss"][1]
                                                           / forward["probe_loss"][0]))
    curve = dict(zip(forward["curve_steps"], forward["curve_loss"]))
    assert table["spike"].iloc[3] == pytest.approx(
        math.log(max(curve[10], curve[11], curve[12]) / forward["probe_loss"][3]))
    assert intervals(results[(3, "backward")])["spike"].isna().all()  # no curve between probes
    settle = tail_sharpness(experiment, results)
    backward = results[(4, "backward")]
    assert settle.loc[(4, "backward"), "tail probes"] == 2  # steps 9 and 12 are >= 0.75 * 12
    assert settle.loc[(4, "backward"), "tail median λ_max / (2/h)"] == pytest.approx(
        (backward["sharpness"][-1] + backward["sharpness"][-2]) / 2 * 0.05 / 2)
    assert settle.loc[(4, "forward"), "ratio to forward"] == pytest.approx(1.0)
    assert settle.loc[(4, "backward"), "max λ_max / (2/h)"] == pytest.approx(
        max(backward["sharpness"]) * 0.05 / 2)
    rotations = rotation_table(experiment, results)
    kept = table.iloc[1:]  # the first interval is left out
    assert rotations.loc[("forward", 3), "intervals"] == 3
    assert rotations.loc[("forward", 3), "leading: median"] == pytest.approx(
        kept["rotation"].median())
    assert rotations.loc[("forward", 3), "subspace: max"] == pytest.approx(
        kept["subspace rotation"].max())
    both = [intervals(results[(s, "backward")])["subspace rotation"].iloc[1:] for s in (3, 4)]
    assert rotations.loc[("backward", "all"), "subspace: min"] == pytest.approx(
        min(t.min() for t in both))
    rho = coincidence_table(experiment, results)
    assert rho.loc[("forward", "all"), "intervals"] == 6  # 4 per seed, the first one left out
    assert rho.loc[("forward", 3), "loss change"] == "spike"
    assert rho.loc[("backward", 3), "loss change"] == "jump"
    assert math.isnan(rho.loc[("forward", 3), "ρ(rotation, loss change)"])  # 3 pairs: too few
    from scipy.stats import spearmanr
    columns = ["rotation", "subspace rotation", "spike"]
    pooled = np.concatenate([intervals(results[(s, "forward")])[columns].to_numpy()[1:]
                             for s in (3, 4)])
    assert rho.loc[("forward", "all"), "ρ(rotation, loss change)"] == pytest.approx(
        spearmanr(pooled[:, 0], pooled[:, 2]).statistic)
    assert rho.loc[("forward", "all"), "ρ(subspace rotation, loss change)"] == pytest.approx(
        spearmanr(pooled[:, 1], pooled[:, 2]).statistic)
    assert rho.loc[("forward", "all"), "p (subspace)"] == pytest.approx(
        spearmanr(pooled[:, 1], pooled[:, 2]).pvalue)
    starts = [3, 6, 9] * 2
    assert rho.loc[("forward", "all"), "ρ(step, rotation)"] == pytest.approx(
        spearmanr(starts, pooled[:, 0]).statistic)
    jumps = np.concatenate([intervals(results[(s, "backward")])["jump"].to_numpy()[1:]
                            for s in (3, 4)])
    assert rho.loc[("backward", "all"), "median loss change"] == pytest.approx(np.median(jumps))

    numbers = sharpness_numbers(experiment, results, "tiny")
    assert numbers["tiny_probes"] == 5 and numbers["tiny_tail_probes"] == 2
    assert numbers["tiny_threshold"] == pytest.approx(40)
    assert numbers["tiny_tail_frac_max"] == pytest.approx(
        settle["tail median λ_max / (2/h)"].max())
    assert numbers["tiny_peak_frac"] == pytest.approx(settle["max λ_max / (2/h)"].max())
    assert numbers["tiny_forward_sub_med_min"] == pytest.approx(
        rotations.xs("forward", level="order").drop(index="all")["subspace: median"].min())
    assert numbers["tiny_forward_rot_max"] == pytest.approx(
        rotations.loc[("forward", "all"), "leading: max"])
    ratios = settle.xs("backward", level="order")["ratio to forward"]
    assert numbers["tiny_backward_flatter_k"] == int((ratios < 1).sum())
    assert numbers["tiny_backward_rho_rot_text"].startswith(
        f"ρ = {rho.loc[('backward', 'all'), 'ρ(rotation, loss change)']:.2f}")
    assert "not tested per seed (3 intervals each" in numbers["tiny_backward_rho_rot_text"]
    # the interval of the largest leading-vector rotation, and its subspace rotation
    pooled_forward = pd.concat([intervals(results[(s, "forward")]).iloc[1:].assign(seed=s)
                                for s in (3, 4)])
    top = pooled_forward.loc[pooled_forward["rotation"] == pooled_forward["rotation"].max()].iloc[0]
    assert numbers["tiny_forward_rot_max_where"] == (
        f"seed {int(top['seed'])}, steps {int(top['start'])}–{int(top['end'])}")
    assert numbers["tiny_forward_rot_max_sub"] == pytest.approx(top["subspace rotation"])
    assert numbers["tiny_forward_rot_max_entry"] == pytest.approx(top["leading entry"])
    largest = largest_rotations(experiment, results)
    assert largest.loc["forward", "rotation"] == pytest.approx(top["rotation"])
    assert (largest.loc["forward", "start"], largest.loc["forward", "seed"]) == (
        top["start"], top["seed"])
    assert largest.loc["backward", "loss change"] == "jump"
    caption = sharpness_caption(experiment, results, "smoke", "tiny")
    assert caption.startswith("Not a figure of the paper") and "smoke profile" in caption
    assert "every 3rd step from step 0 to 12, 5 per run" in caption
    assert "forward's loss every step" in caption
    caption = coincidence_caption(experiment, results, "smoke", "tiny")
    assert "seeds 3 and 4 pooled" in caption and "top-2 subspace" in caption


def test_significant_rounds_to_significant_digits_and_keeps_the_rest():
    table = pd.DataFrame({"x": [380.8123, 6.769e-05, 0.0, float("nan")], "n": [1, 2, 3, 4],
                          "s": ["a", "b", "c", "d"]})
    shown = significant(table, 3)
    assert list(shown["x"]) == ["381", "0.0000677", "0", "n/a"]  # no "0.500000"-style zeros
    assert significant(pd.DataFrame({"x": [0.5, 12.5]}), 3)["x"].tolist() == ["0.5", "12.5"]
    assert list(shown["n"]) == [1, 2, 3, 4] and list(shown["s"]) == list("abcd")
    with pytest.raises(ValueError, match="digits"):
        significant(table, 0)
