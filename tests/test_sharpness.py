"""Sharpness probes against explicit Hessians, and their freedom from side effects."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from iteration_order import Runtime, TrajectoryConfig, initial_state, iterates, prepare, sgd_maps
from iteration_order.hessian import flatten, unflatten
from iteration_order.sharpness import (HessianProbe, Probe, SharpnessRun, overlap, probe_batch_rows,
                                       probe_iteration, probe_steps, run_probes, sharpness_path,
                                       subspace_overlap, subspace_similarity)

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=6, lr=0.05, batch_size=4, steps=12,
                        seed=3)
TINY_PROBE = Probe(every=4, batch=16, eigenpairs=2, tol=1e-6, curve_every=2)


def explicit_hessian(model, state, x, y, rows):
    def loss(flat):
        return F.mse_loss(functional_call(model, unflatten(flat, state), (x[rows],)), y[rows])
    return torch.autograd.functional.hessian(loss, flatten(state))


def runtime(path):
    return Runtime(device="cpu", threads=1, results_dir=path, progress=False)


def test_probe_matches_the_eigendecomposition_of_the_explicit_hessian(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = schedule[:4].reshape(-1)
    probe = HessianProbe(model, F.mse_loss, x, y, rows, Probe(eigenpairs=3, tol=1e-10), seed=0)
    reading = probe(5, state)
    exact = torch.linalg.eigh(explicit_hessian(model, state, x, y, rows))
    np.testing.assert_allclose(reading.eigenvalues, exact.eigenvalues.flip(0)[:3].numpy(),
                               rtol=1e-8)
    assert overlap(reading.vectors[:, 0], exact.eigenvectors[:, -1].numpy()) == pytest.approx(
        1.0, abs=1e-8)
    with torch.no_grad():
        expected_loss = float(F.mse_loss(model(x[rows]), y[rows]))
    assert reading.loss == pytest.approx(expected_loss, rel=1e-12)


def test_overlap_is_one_for_a_direction_zero_across_and_blind_to_sign_and_scale():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(50, generator=g, dtype=torch.float64).numpy()
    w = torch.randn(50, generator=g, dtype=torch.float64).numpy()
    w_orth = w - (w @ v) / (v @ v) * v
    assert overlap(v, v) == pytest.approx(1.0, abs=1e-15)
    assert overlap(v, -3 * v) == pytest.approx(1.0, abs=1e-15)
    assert overlap(v, w_orth) == pytest.approx(0.0, abs=1e-12)
    assert overlap(v, w) == pytest.approx(abs(v @ w) / np.linalg.norm(v) / np.linalg.norm(w))
    assert 0.0 < overlap(v, w) < 1.0
    basis = np.linalg.qr(np.stack([v, w], axis=1))[0]
    assert subspace_overlap(v + 2 * w, basis) == pytest.approx(1.0, abs=1e-12)
    assert subspace_overlap(-w_orth, basis[:, :1]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="zero vector"):
        overlap(v, 0 * v)


def _orthonormal(dim, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return np.linalg.qr(torch.randn(dim, m, generator=g, dtype=torch.float64).numpy())[0]


def test_a_swap_inside_the_subspace_turns_the_leading_vector_but_not_the_subspace():
    u = _orthonormal(40, 3)
    swapped = u[:, [1, 0, 2]] * np.array([1.0, -1.0, 1.0])  # new order, one sign flipped
    assert 1 - overlap(u[:, 0], swapped[:, 0]) == pytest.approx(1.0, abs=1e-12)
    assert 1 - subspace_similarity(u, swapped) == pytest.approx(0.0, abs=1e-12)
    # any other basis of the same span: still no subspace rotation, whatever the leading vector does
    mixed = u @ np.linalg.qr(np.array([[1.0, 2, 0], [0.5, -1, 3], [2, 0, 1]]))[0]
    assert subspace_similarity(u, mixed) == pytest.approx(1.0, abs=1e-12)
    assert 0 < 1 - overlap(u[:, 0], mixed[:, 0]) < 1


def test_a_rotation_out_of_the_subspace_moves_both_measures():
    full = _orthonormal(40, 6, seed=1)
    u, away = full[:, :3], full[:, 3:]  # away is orthogonal to u
    assert 1 - overlap(u[:, 0], away[:, 0]) == pytest.approx(1.0, abs=1e-12)
    assert 1 - subspace_similarity(u, away) == pytest.approx(1.0, abs=1e-12)
    # the leading vector turned by an angle a out of the span, the others stayed: one principal
    # angle a, two of 0, so the subspace rotation is sin²(a)/3 and the leading one 1 - cos(a)
    a = 0.7
    turned = u.copy()
    turned[:, 0] = np.cos(a) * u[:, 0] + np.sin(a) * away[:, 0]
    assert 1 - overlap(u[:, 0], turned[:, 0]) == pytest.approx(1 - np.cos(a), abs=1e-12)
    assert 1 - subspace_similarity(u, turned) == pytest.approx(np.sin(a) ** 2 / 3, abs=1e-12)
    assert subspace_similarity(turned, u) == pytest.approx(subspace_similarity(u, turned), abs=1e-12)
    # an exchange across the edge of the subspace (the third vector for the fourth): 1/3
    edge = np.concatenate([u[:, :2], away[:, :1]], axis=1)
    assert 1 - subspace_similarity(u, edge) == pytest.approx(1 / 3, abs=1e-12)
    # columns that are not orthonormal are measured as the subspace they span
    assert subspace_similarity(u, 3 * u + u[:, [1, 2, 0]]) == pytest.approx(1.0, abs=1e-12)


def test_subspace_similarity_refuses_mismatched_or_degenerate_bases():
    u = _orthonormal(10, 3)
    with pytest.raises(ValueError, match=r"same shape.*\(10, 3\) and \(10, 2\)"):
        subspace_similarity(u, u[:, :2])
    with pytest.raises(ValueError, match="linearly dependent"):
        subspace_similarity(u, u[:, [0, 1, 1]])


def _plain_and_probed(tiny_problem, order):
    model, x, y, schedule = tiny_problem
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, lr=0.1)
    state0 = initial_state(model)
    plain = [(n, {k: t.clone() for k, t in s.items()}) for n, s in iterates(maps, state0, order)]
    seen = []

    def recorded(iteration):
        for n, s in iteration:
            seen.append((n, s))  # references: an in-place change by the probe would show below
            yield n, s

    probe = HessianProbe(model, F.mse_loss, x, y, torch.arange(len(x)), Probe(eigenpairs=2),
                         seed=0)
    record = probe_iteration(recorded(iterates(maps, state0, order)), probe, [2, 4, 6],
                             curve_steps=range(1, 7))
    return plain, seen, record


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_probing_leaves_the_iterates_the_model_and_the_random_streams_untouched(tiny_problem, order):
    model, *_ = tiny_problem
    before = {k: t.clone() for k, t in model.state_dict().items()}
    torch.manual_seed(11)
    np.random.seed(11)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(11)
    np.random.seed(11)
    plain, probed, record = _plain_and_probed(tiny_problem, order)
    # the plain run drew nothing either, so both global streams must still be at their seeds
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [n for n, _ in probed] == [n for n, _ in plain]
    for (_, a), (_, b) in zip(plain, probed):
        for k in a:
            assert torch.equal(a[k], b[k])  # bit for bit
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k])
    assert all(p.grad is None for p in model.parameters())
    assert record["steps"] == [2, 4, 6] and record["curve_steps"] == [1, 2, 3, 4, 5, 6]
    for key in ("overlap", "subspace_overlap", "reverse_subspace_overlap",
                "subspace_similarity"):
        assert record[key][0] is None and all(0 <= o <= 1 + 1e-12 for o in record[key][1:]), key


def test_losses_and_overlaps_recorded_are_those_of_the_iterates(tiny_problem):
    model, x, y, schedule = tiny_problem
    plain, _, record = _plain_and_probed(tiny_problem, "forward")
    states = dict(plain)
    for n, loss in zip(record["curve_steps"], record["curve_loss"]):
        assert loss == pytest.approx(float(F.mse_loss(functional_call(model, states[n], (x,)), y)),
                                     rel=1e-12)
    top = {n: torch.linalg.eigh(explicit_hessian(model, states[n], x, y, torch.arange(len(x))))
           for n in (2, 4)}
    expected = overlap(top[2].eigenvectors[:, -1].numpy(), top[4].eigenvectors[:, -1].numpy())
    assert record["overlap"][1] == pytest.approx(expected, abs=1e-6)
    top_pair = {n: top[n].eigenvectors[:, -2:].numpy() for n in (2, 4)}
    assert record["subspace_similarity"][1] == pytest.approx(
        subspace_similarity(top_pair[2], top_pair[4]), abs=1e-6)
    assert record["subspace_overlap"][1] == pytest.approx(
        subspace_overlap(top_pair[2][:, -1], top_pair[4]), abs=1e-6)
    assert record["reverse_subspace_overlap"][1] == pytest.approx(
        subspace_overlap(top_pair[4][:, -1], top_pair[2]), abs=1e-6)
    assert record["sharpness"][0] == pytest.approx(float(top[2].eigenvalues[-1]), rel=1e-6)


def test_bad_inputs_name_the_value(tiny_problem):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        probe_steps(12, 0)
    with pytest.raises(ValueError, match="outside 1..12"):
        probe_steps(12, 13)
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        Probe(every=0)
    with pytest.raises(ValueError, match="batch"):
        Probe(batch=-1)
    with pytest.raises(ValueError, match="tol"):
        Probe(tol=0)
    with pytest.raises(ValueError, match="outside 1..12"):
        SharpnessRun(TINY, Probe(every=20))
    with pytest.raises(ValueError, match="optimizer must be 'sgd'"):
        SharpnessRun(TINY.replace(optimizer="adam"), TINY_PROBE)
    model, x, y, schedule = tiny_problem
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, lr=0.1)
    probe = HessianProbe(model, F.mse_loss, x, y, torch.arange(len(x)), Probe(eigenpairs=1), 0)
    with pytest.raises(ValueError, match="never reached probe steps \\[9\\]"):
        probe_iteration(iterates(maps, initial_state(model), "forward"), probe, [3, 9])


def test_probe_batch_is_fixed_per_seed_and_shared_by_orders():
    a, b = probe_batch_rows(101, 16, seed=3), probe_batch_rows(101, 16, seed=3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 16
    assert not torch.equal(a, probe_batch_rows(101, 16, seed=4))
    assert torch.equal(probe_batch_rows(101, 0, seed=3), torch.arange(101))


def test_two_runs_give_identical_numbers_and_the_cache_round_trips(tmp_path):
    run = SharpnessRun(TINY.replace(order="backward"), TINY_PROBE)
    first = run_probes(run, runtime(tmp_path / "a"))
    second = run_probes(run, runtime(tmp_path / "b"))
    again = run_probes(run, runtime(tmp_path / "a"))
    assert not first["from_cache"] and not second["from_cache"] and again["from_cache"]
    assert sharpness_path(run, runtime(tmp_path / "a")).is_file()
    numbers = ("steps", "eigenvalues", "sharpness", "probe_loss", "overlap", "subspace_overlap",
               "reverse_subspace_overlap", "subspace_similarity", "curve_steps", "curve_loss",
               "applications", "config")
    for key in numbers:
        assert first[key] == second[key] == again[key], key
    assert first["steps"] == [0, 4, 8, 12] and first["applications"] == 4 + 8 + 12
    assert first["threshold"] == pytest.approx(2 / 0.05)
    other = SharpnessRun(run.trajectory, dataclasses.replace(TINY_PROBE, tol=1e-5))
    assert sharpness_path(other, runtime(tmp_path)) != sharpness_path(run, runtime(tmp_path))


def test_run_probes_measures_the_iterates_of_the_trajectory(tmp_path):
    run = SharpnessRun(TINY, TINY_PROBE)
    result = run_probes(run, runtime(tmp_path))
    prepared = prepare(TINY, runtime(tmp_path))
    rows = probe_batch_rows(prepared.data.num_train, 16, TINY.seed)
    states = dict(iterates(prepared.maps, prepared.state0, "forward", at=[4, 10]))
    for n in (4, 10):
        H = explicit_hessian(prepared.model, states[n], prepared.data.x_train,
                             prepared.data.y_train, rows)
        if n in result["steps"]:
            lam = float(torch.linalg.eigvalsh(H.double())[-1])
            assert result["sharpness"][result["steps"].index(n)] == pytest.approx(lam, rel=1e-4)
        loss = float(F.mse_loss(functional_call(prepared.model, states[n],
                                                (prepared.data.x_train[rows],)),
                                prepared.data.y_train[rows]))
        assert result["curve_loss"][result["curve_steps"].index(n)] == pytest.approx(loss, rel=1e-6)
    assert result["curve_steps"] == [0, 2, 4, 6, 8, 10, 12]  # forward: the loss between probes too
