"""Hessian-vector products and Lanczos against explicit Hessians on a tiny network."""
import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from iteration_order import MLP, initial_state
from iteration_order.hessian import BatchLoss, flatten, top_eigenpairs, unflatten


def explicit_hessian(model, state, x, y, rows):
    """∇²L as a dense matrix, by torch.autograd.functional.hessian on the flat parameters."""
    def loss(flat):
        out = functional_call(model, unflatten(flat, state), (x[rows],))
        return F.mse_loss(out, y[rows])
    return torch.autograd.functional.hessian(loss, flatten(state))


def test_grad_and_hvp_match_autograd_and_the_explicit_hessian(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = schedule[:3].reshape(-1)
    loss = BatchLoss(model, F.mse_loss, x, y, rows)
    H = explicit_hessian(model, state, x, y, rows)
    v = unflatten(torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64), state)
    torch.testing.assert_close(flatten(loss.hvp(state, v)), H @ flatten(v), rtol=1e-10, atol=1e-12)
    params = {k: t.clone().requires_grad_() for k, t in state.items()}
    expected = torch.autograd.grad(F.mse_loss(functional_call(model, params, (x[rows],)), y[rows]),
                                   list(params.values()))
    torch.testing.assert_close(flatten(loss.grad(state)), torch.cat([g.reshape(-1) for g in expected]))


def test_chunking_does_not_change_the_result(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = torch.cat([schedule[0], schedule[0], schedule[1]])  # duplicates count twice
    whole = BatchLoss(model, F.mse_loss, x, y, rows, chunk=len(rows))
    pieces = BatchLoss(model, F.mse_loss, x, y, rows, chunk=5)
    v = {k: torch.ones_like(t) for k, t in state.items()}
    torch.testing.assert_close(flatten(pieces.hvp(state, v)), flatten(whole.hvp(state, v)))
    torch.testing.assert_close(flatten(pieces.grad(state)), flatten(whole.grad(state)))
    assert pieces.value(state) == pytest.approx(whole.value(state), rel=1e-12)


def test_lanczos_finds_the_top_of_the_explicit_spectrum(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = torch.arange(len(x))
    loss = BatchLoss(model, F.mse_loss, x, y, rows)
    exact = torch.linalg.eigh(explicit_hessian(model, state, x, y, rows))
    values, vectors = top_eigenpairs(loss, state, k=3, tol=1e-10)
    np.testing.assert_allclose(values, exact.eigenvalues.flip(0)[:3].numpy(), rtol=1e-7)
    overlap = abs(float(vectors[:, 0] @ exact.eigenvectors[:, -1].numpy()))
    assert overlap == pytest.approx(1.0, abs=1e-6)


def test_no_side_effects_on_the_model_or_the_random_streams(tiny_problem):
    model, x, y, schedule = tiny_problem
    before = {k: t.clone() for k, t in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    loss = BatchLoss(model, F.mse_loss, x, y, schedule[0])
    top_eigenpairs(loss, initial_state(model), k=1)
    assert torch.equal(torch.rand(1), expected_next)  # the global stream did not move
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_bad_inputs_are_named(tiny_problem):
    model, x, y, schedule = tiny_problem
    with pytest.raises(ValueError, match="chunk"):
        BatchLoss(model, F.mse_loss, x, y, schedule[0], chunk=0)
    with pytest.raises(ValueError, match="rows"):
        BatchLoss(model, F.mse_loss, x, y, schedule)
    with pytest.raises(ValueError, match="BatchNorm"):
        BatchLoss(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double(),
                  F.mse_loss, x, y, schedule[0])
    loss = BatchLoss(model, F.mse_loss, x, y, schedule[0])
    with pytest.raises(ValueError, match="k must be"):
        top_eigenpairs(loss, initial_state(model), k=0)
