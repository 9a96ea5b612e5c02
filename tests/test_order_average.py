"""Appendix D on a tiny network: the Hessian-free correction, Lemma C.1's expansions, the maps."""
import copy
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from iteration_order import MLP, initial_state, iterates, sgd_maps
from iteration_order.hessian import BatchLoss, flatten, unflatten
from iteration_order.order_average import (OrderAverageMaps, RegularisedMaps, SmallBatchMaps,
                                           closest_multiple, gradients_and_correction,
                                           micro_batch_rows, update_maps)


def grad_at(model, state, x, y, rows):
    """∇L_B(θ) written out with a plain autograd call."""
    params = {k: v.clone().requires_grad_() for k, v in state.items()}
    loss = F.mse_loss(functional_call(model, params, (x[rows],)), y[rows])
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def sgd_step(model, state, x, y, rows, lr):
    g = grad_at(model, state, x, y, rows)
    return {k: state[k] - lr * g[k] for k in state}


def hvp(model, x, y, rows, state, vector):
    """H_B(θ)·v by torch.func's forward-over-reverse product (the independent reference)."""
    return BatchLoss(model, F.mse_loss, x, y, rows).hvp(state, vector)


def assert_states_close(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **tol)


def micro(schedule, c):
    """One large batch of 4c examples: micro-batch i is row i of the fixture's schedule."""
    return micro_batch_rows(schedule[:c].reshape(-1), c)


# ------------------------------------------------------------------------------------------------
# The correction Σ_{i≠j} H_i g_j without Hessians
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [2, 4])
def test_correction_equals_the_sum_of_explicit_hessian_vector_products(tiny_problem, c):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = micro(schedule, c)
    grads, correction = gradients_and_correction(model, F.mse_loss, x, y, rows, state)
    for g, r in zip(grads, rows):
        assert_states_close(g, grad_at(model, state, x, y, r), rtol=1e-12, atol=1e-14)
    expected = sum(flatten(hvp(model, x, y, rows[i], state, grads[j]))
                   for i in range(c) for j in range(c) if i != j)
    torch.testing.assert_close(flatten(correction), expected, rtol=1e-10, atol=1e-13)
    assert float(expected.norm()) > 1e-3  # a real, non-vanishing term


def test_correction_against_a_dense_hessian(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = micro(schedule, 2)

    def hessian(r):
        def loss(flat):
            return F.mse_loss(functional_call(model, unflatten(flat, state), (x[r],)), y[r])
        return torch.autograd.functional.hessian(loss, flatten(state))

    grads, correction = gradients_and_correction(model, F.mse_loss, x, y, rows, state)
    g1, g2 = flatten(grads[0]), flatten(grads[1])
    expected = hessian(rows[0]) @ g2 + hessian(rows[1]) @ g1
    torch.testing.assert_close(flatten(correction), expected, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# Lemma C.1's second-order expansions, by the slope of the error against h′ (Eq. 9, App. D.1)
# ------------------------------------------------------------------------------------------------

STEPS = np.geomspace(2e-3, 5e-2, 6)  # h′: small enough for the Taylor regime, large vs round-off


def slope(errors):
    return float(np.polyfit(np.log(STEPS), np.log(errors), 1)[0])


def expansion_errors(tiny_problem, c, exact, terms):
    """‖exact(h′) − (T_large(θ) with h = c·h′) − h′²·terms‖ over the geometric range of h′."""
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    rows = micro(schedule, c)
    batch = rows.reshape(-1)
    errors = []
    for h in STEPS:
        large = sgd_step(model, state, x, y, batch, c * h)
        predicted = flatten(large) + h ** 2 * terms(model, x, y, rows, state)
        errors.append(float((flatten(exact(model, x, y, rows, state, h)) - predicted).norm()))
    return errors


def small_steps(model, x, y, rows, state, h, order):
    for i in order:
        state = sgd_step(model, state, x, y, rows[i], h)
    return state


def order_average(model, x, y, rows, state, h):
    runs = [flatten(small_steps(model, x, y, rows, state, h, order))
            for order in itertools.permutations(range(len(rows)))]
    return unflatten(torch.stack(runs).mean(0), state)


def pair_sum(pairs):
    """Σ over the given (i, j) of H_i g_j, each product by torch.func."""
    def terms(model, x, y, rows, state):
        grads = [grad_at(model, state, x, y, r) for r in rows]
        return sum(flatten(hvp(model, x, y, rows[i], state, grads[j])) for i, j in pairs(len(rows)))
    return terms


ALL_PAIRS = pair_sum(lambda c: [(i, j) for i in range(c) for j in range(c) if i != j])
LATER_HESSIAN = pair_sum(lambda c: [(j, i) for i in range(c) for j in range(c) if i < j])
EARLIER_HESSIAN = pair_sum(lambda c: [(i, j) for i in range(c) for j in range(c) if i < j])


@pytest.mark.parametrize("c", [2, 3])
def test_order_average_is_large_step_plus_half_the_correction_to_third_order(tiny_problem, c):
    half = lambda *args: 0.5 * ALL_PAIRS(*args)  # noqa: E731
    with_term = expansion_errors(tiny_problem, c, order_average, half)
    assert slope(with_term) == pytest.approx(3.0, abs=0.15)
    # ... and the term is needed: without it the error is second order
    without = expansion_errors(tiny_problem, c, order_average, lambda *a: 0 * half(*a))
    assert slope(without) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("c", [2, 3])
def test_small_batch_steps_are_large_step_plus_the_later_hessian_term(tiny_problem, c):
    def forward(model, x, y, rows, state, h):
        return small_steps(model, x, y, rows, state, h, range(len(rows)))
    assert slope(expansion_errors(tiny_problem, c, forward, LATER_HESSIAN)) == \
        pytest.approx(3.0, abs=0.15)
    # D.1 as printed (H_i g_j for i < j, B_1 applied first) differs by a Lie bracket: O(h′²)
    assert slope(expansion_errors(tiny_problem, c, forward, EARLIER_HESSIAN)) == \
        pytest.approx(2.0, abs=0.15)


def test_regularised_map_at_half_h_prime_squared_tracks_the_exact_average(tiny_problem):
    """The two maps the page can run agree to third order when λ = ½h′²."""
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    batch = micro(schedule, 2).reshape(1, -1)  # the batch of the expansions above
    errors = []
    for h in STEPS:
        average = OrderAverageMaps(model, F.mse_loss, x, y, batch, h, 2)
        regularised = RegularisedMaps(model, F.mse_loss, x, y, batch, 2 * h, 2, 0.5 * h ** 2)
        errors.append(float((flatten(average[0](state)) - flatten(regularised[0](state))).norm()))
    assert slope(errors) == pytest.approx(3.0, abs=0.15)


# ------------------------------------------------------------------------------------------------
# The maps against hand-written loops; purity and composition in any order
# ------------------------------------------------------------------------------------------------

H = 0.05


def test_regularised_map_is_the_large_step_plus_lambda_times_the_correction(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    maps = RegularisedMaps(model, F.mse_loss, x, y, schedule, H, 2, 0.3)
    rows = micro_batch_rows(schedule[1], 2)
    grads = [grad_at(model, state, x, y, r) for r in rows]
    correction = {k: v for k, v in unflatten(
        flatten(hvp(model, x, y, rows[0], state, grads[1]))
        + flatten(hvp(model, x, y, rows[1], state, grads[0])), state).items()}
    large = sgd_step(model, state, x, y, schedule[1], H)
    expected = {k: large[k] + 0.3 * correction[k] for k in state}
    assert_states_close(maps[1](state), expected, rtol=1e-12, atol=1e-13)
    # λ = 0 is plain SGD on the whole batch
    plain = RegularisedMaps(model, F.mse_loss, x, y, schedule, H, 2, 0.0)
    assert_states_close(plain[1](state), large, rtol=1e-12, atol=1e-14)


def test_small_batch_map_is_a_hand_written_sgd_loop(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    maps = SmallBatchMaps(model, F.mse_loss, x, y, schedule, H, 2)
    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=H)
    for row in schedule[:3]:  # three large batches, forward
        for half in row.view(2, 2):
            opt.zero_grad()
            F.mse_loss(net(x[half]), y[half]).backward()
            opt.step()
    hand = {k: v.detach() for k, v in net.state_dict().items()}
    fast = dict(iterates(maps, state, "forward", at=[3]))[3]
    pure = dict(iterates(list(maps), state, "forward", at=[3]))[3]
    assert_states_close(fast, hand, rtol=1e-12, atol=1e-12)
    assert_states_close(pure, hand, rtol=1e-12, atol=1e-12)


def test_order_average_map_enumerates_every_order(tiny_problem):
    model, x, y, schedule = tiny_problem
    state = initial_state(model)
    big = schedule[:3].reshape(1, -1)  # one batch of 12 examples in 3 micro-batches of 4
    maps = OrderAverageMaps(model, F.mse_loss, x, y, big, H, 3)
    expected = order_average(model, x, y, micro_batch_rows(big[0], 3), state, H)
    assert_states_close(maps[0](state), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("update, lr, reg", [("small", H, 0.0), ("regularised", H, 0.01),
                                             ("average", H, 0.0)])
def test_maps_are_pure_and_compose_backward(tiny_problem, update, lr, reg):
    model, x, y, schedule = tiny_problem
    theta = initial_state(model)
    before = {k: v.clone() for k, v in theta.items()}
    maps = update_maps(update, model, F.mse_loss, x, y, schedule, lr, 2, reg)
    backward = dict(iterates(maps, theta, "backward", at=[3]))[3]
    by_hand = maps[0](maps[1](maps[2](theta)))  # T_1 ∘ T_2 ∘ T_3
    assert_states_close(backward, by_hand, rtol=1e-12, atol=1e-14)
    assert_states_close(theta, before, rtol=0, atol=0)
    forward = dict(iterates(maps, theta, "forward", at=[3]))[3]
    assert max(float((forward[k] - backward[k]).abs().max()) for k in theta) > 1e-8


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def test_closest_multiple_follows_the_paper():
    assert closest_multiple(2048, 3) == 2049 and closest_multiple(2048, 4) == 2048
    assert closest_multiple(256, 3) == 255 and closest_multiple(1, 4) == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"update": "sometimes"},
     "unknown update 'sometimes'; allowed: sgd, small, regularised, average"),
    ({"update": "small", "micro_batches": 3},
     "batch_size=4 is not divisible by micro_batches=3; use 3"),
    ({"update": "small", "micro_batches": 1}, "micro_batches must be an integer >= 2; got 1"),
    ({"update": "sgd", "micro_batches": 2}, "update='sgd' takes one step on the whole batch"),
    ({"update": "small", "micro_batches": 2, "reg_lambda": 0.1},
     "used by update='regularised' only"),
    ({"update": "regularised", "micro_batches": 2, "reg_lambda": -1.0},
     "reg_lambda must be a finite number >= 0"),
])
def test_bad_arguments_name_the_value_and_what_is_allowed(tiny_problem, kwargs, message):
    model, x, y, schedule = tiny_problem
    kwargs = {"update": "sgd", "micro_batches": 1, "reg_lambda": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        update_maps(kwargs["update"], model, F.mse_loss, x, y, schedule, H,
                    kwargs["micro_batches"], kwargs["reg_lambda"])


def test_second_order_updates_reject_batchnorm_and_large_averages(tiny_problem):
    _, x, y, schedule = tiny_problem
    bn = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                             torch.nn.Linear(4, 1)).double()
    for update in ("regularised", "average"):
        with pytest.raises(ValueError, match="needs a model without buffers"):
            update_maps(update, bn, F.mse_loss, x, y, schedule, H, 2)
    SmallBatchMaps(bn, F.mse_loss, x, y, schedule, H, 2)  # plain SGD steps carry BatchNorm
    model = MLP(depth=1, width=2, in_features=3, out_features=1).double()
    with pytest.raises(ValueError, match="micro_batches must be <= 5"):
        OrderAverageMaps(model, F.mse_loss, x, y, schedule.reshape(1, -1), H, 6)


def test_the_method_imports_without_the_page_layer():
    """The maps are the package's core: no plotting, no tables, no runner of their own."""
    code = ("import sys; import iteration_order.order_average; "
            "print(*sorted({'matplotlib', 'seaborn', 'pandas'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []
