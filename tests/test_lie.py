"""Appendix C's Lie-bracket correction against explicit Hessians, the double sum, and Theorem C.2."""
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from iteration_order import initial_state, iterates, sgd_maps
from iteration_order.hessian import BatchLoss, flatten, unflatten
from iteration_order.lie import approximate_backward, corrections, lie_bracket
from iteration_order.book.lie_bracket import fitted_slope


def explicit(model, state, x, y, rows):
    """∇L and ∇²L of the batch loss on ``rows`` as a dense vector and matrix (autograd)."""
    def loss(flat):
        return F.mse_loss(functional_call(model, unflatten(flat, state), (x[rows],)), y[rows])
    flat = flatten(state)
    grad = torch.autograd.functional.jacobian(loss, flat)
    return grad, torch.autograd.functional.hessian(loss, flat)


def test_lie_bracket_matches_explicit_hessians(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    g1, H1 = explicit(model, state, x, y, schedule[1])
    g4, H4 = explicit(model, state, x, y, schedule[4])
    bracket = lie_bracket(BatchLoss(model, F.mse_loss, x, y, schedule[1]),
                          BatchLoss(model, F.mse_loss, x, y, schedule[4]), state)
    expected = H1 @ g4 - H4 @ g1
    assert expected.norm() > 1e-3  # a real bracket, not two vanishing terms
    torch.testing.assert_close(flatten(bracket), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["running-sum", "corollary"])
def test_corrections_equal_the_double_sum_of_brackets(tiny_problem, method):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    terms = [explicit(model, state, x, y, rows) for rows in schedule]
    C = corrections(model, F.mse_loss, x, y, schedule, range(1, len(schedule) + 1), method=method)
    for n in range(1, len(schedule) + 1):
        double_sum = sum((terms[i][1] @ terms[j][0] - terms[j][1] @ terms[i][0]
                          for j in range(n) for i in range(j)), torch.zeros_like(flatten(state)))
        torch.testing.assert_close(flatten(C[n]), double_sum, rtol=1e-10, atol=1e-12)
    assert flatten(C[len(schedule)]).norm() > 1e-2


def test_a_batch_drawn_twice_counts_twice(tiny_problem):
    model, x, y, schedule = tiny_problem
    repeated = torch.stack([schedule[0], schedule[1], schedule[0], schedule[2]])
    state = initial_state(model)
    terms = [explicit(model, state, x, y, rows) for rows in repeated]
    double_sum = sum(terms[i][1] @ terms[j][0] - terms[j][1] @ terms[i][0]
                     for j in range(4) for i in range(j))
    for method in ("running-sum", "corollary"):
        C = corrections(model, F.mse_loss, x, y, repeated, [4], method=method)
        torch.testing.assert_close(flatten(C[4]), double_sum, rtol=1e-10, atol=1e-12)


def test_first_step_is_exact(tiny_problem):
    model, x, y, schedule = tiny_problem
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, 0.1)
    backward = dict(iterates(maps, initial_state(model), "backward", at=[1]))[1]
    forward = dict(iterates(maps, initial_state(model), "forward", at=[1]))[1]
    approx = approximate_backward(model, F.mse_loss, x, y, schedule, 0.1, at=[1])[1]
    for k in forward:
        assert torch.equal(forward[k], backward[k])
        assert torch.equal(approx[k], forward[k])


def test_passed_forward_iterates_are_used_not_recomputed(tiny_problem):
    model, x, y, schedule = tiny_problem
    lr = 0.05
    zeros = {n: {k: torch.zeros_like(v) for k, v in initial_state(model).items()} for n in (3, 6)}
    approx = approximate_backward(model, F.mse_loss, x, y, schedule, lr, at=[3, 6], forward=zeros)
    C = corrections(model, F.mse_loss, x, y, schedule, [3, 6])
    for n in (3, 6):
        torch.testing.assert_close(flatten(approx[n]), lr ** 2 * flatten(C[n]), rtol=0, atol=0)
    computed = approximate_backward(model, F.mse_loss, x, y, schedule, lr, at=[6])[6]
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, lr)
    forward = dict(iterates(maps, initial_state(model), "forward", at=[6]))[6]
    torch.testing.assert_close(flatten(computed), flatten(forward) + lr ** 2 * flatten(C[6]))


def test_errors_shrink_like_h_squared_and_h_cubed(tiny_problem):
    """Theorem C.2: ‖θ^B_n − θ_n‖ = O(h²) and ‖θ^B_n − θ̃_n‖ = O(h³), here with n = 6."""
    model, x, y, schedule = tiny_problem
    n, lrs = len(schedule), [1e-3, 2e-3, 4e-3, 8e-3]
    first, second = [], []
    for lr in lrs:
        maps = sgd_maps(model, F.mse_loss, x, y, schedule, lr)
        forward = dict(iterates(maps, initial_state(model), "forward", at=[n]))
        backward = flatten(dict(iterates(maps, initial_state(model), "backward", at=[n]))[n])
        approx = approximate_backward(model, F.mse_loss, x, y, schedule, lr, at=[n],
                                      forward=forward)[n]
        first.append(float((backward - flatten(forward[n])).norm()))
        second.append(float((backward - flatten(approx)).norm()))
    assert fitted_slope(lrs, first) == pytest.approx(2, abs=0.1)
    assert fitted_slope(lrs, second) == pytest.approx(3, abs=0.1)
    assert all(s < f for f, s in zip(first, second))


def test_bad_inputs_are_named(tiny_problem):
    model, x, y, schedule = tiny_problem
    args = (model, F.mse_loss, x, y, schedule)
    with pytest.raises(ValueError, match="outside 1..6"):
        approximate_backward(*args, 0.1, at=[7])
    with pytest.raises(ValueError, match="outside 1..6"):
        corrections(*args, at=[0])
    for lr in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="learning rate"):
            approximate_backward(*args, lr, at=[2])
    with pytest.raises(ValueError, match="unknown method"):
        corrections(*args, at=[2], method="exact")
    with pytest.raises(ValueError, match=r"lack steps \[6\]"):
        approximate_backward(*args, 0.1, at=[6], forward={2: initial_state(model)})
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    with pytest.raises(ValueError, match="BatchNorm"):
        approximate_backward(bn, F.mse_loss, x, y, schedule, 0.1, at=[2])
