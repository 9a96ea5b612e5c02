"""SGD and optimiser maps on a small network, checked against hand-written PyTorch."""
import copy

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from iteration_order import (initial_optimizer_state, initial_state, iterates, optimizer_maps,
                             sgd_maps, supports_grouping)
from iteration_order.maps import grouping_problem

LR = 0.1


def grad_at(model, state, inputs, targets, rows):
    """∇L_B(θ) written out with a plain autograd call."""
    params = {k: v.clone().requires_grad_() for k, v in state.items()}
    loss = F.mse_loss(functional_call(model, params, (inputs[rows],)), targets[rows])
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def step(state, grads, h=LR):
    return {k: state[k] - h * grads[k] for k in state}


def assert_states_equal(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **tol)


def test_two_step_expansions_of_the_introduction(tiny_problem):
    model, x, y, schedule = tiny_problem
    theta = initial_state(model)
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, LR)
    b1, b2 = schedule[0], schedule[1]
    # T2T1(θ) = θ − h∇L1(θ) − h∇L2(θ − h∇L1(θ))
    after1 = step(theta, grad_at(model, theta, x, y, b1))
    t2t1 = step(after1, grad_at(model, after1, x, y, b2))
    # T1T2(θ) = θ − h∇L2(θ) − h∇L1(θ − h∇L2(θ))
    after2 = step(theta, grad_at(model, theta, x, y, b2))
    t1t2 = step(after2, grad_at(model, after2, x, y, b1))
    assert_states_equal(dict(iterates(maps, theta, "forward", at=[2]))[2], t2t1)
    assert_states_equal(dict(iterates(maps, theta, "backward", at=[2]))[2], t1t2)
    difference = max(float((t2t1[k] - t1t2[k]).abs().max()) for k in theta)
    assert difference > 1e-6  # the two orders really differ at step 2


def test_backward_sgd_equals_a_hand_written_restart_loop(tiny_problem):
    model, x, y, schedule = tiny_problem
    theta0 = initial_state(model)
    engine = dict(iterates(sgd_maps(model, F.mse_loss, x, y, schedule, LR), theta0, "backward"))

    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    for n in range(1, len(schedule) + 1):
        net.load_state_dict(theta0)  # restart from θ_0 ...
        for i in reversed(range(n)):  # ... and replay batches n, n-1, ..., 1
            opt.zero_grad()
            F.mse_loss(net(x[schedule[i]]), y[schedule[i]]).backward()
            opt.step()
        assert_states_equal(engine[n], {k: v.detach() for k, v in net.state_dict().items()},
                            rtol=1e-12, atol=1e-12)


def test_maps_do_not_mutate_their_input(tiny_problem):
    model, x, y, schedule = tiny_problem
    theta = initial_state(model)
    before = {k: v.clone() for k, v in theta.items()}
    module_before = {k: v.clone() for k, v in model.state_dict().items()}
    for T in sgd_maps(model, F.mse_loss, x, y, schedule, LR):
        out = T(theta)
        assert all(out[k] is not theta[k] for k in theta)
    assert_states_equal(theta, before, rtol=0, atol=0)
    assert_states_equal(model.state_dict(), module_before, rtol=0, atol=0)


def test_batchnorm_buffers_are_part_of_the_state_and_not_mutated():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    schedule = torch.arange(16).view(4, 4)
    theta = initial_state(model)
    assert "1.running_mean" in theta
    before = {k: v.clone() for k, v in theta.items()}
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, LR)
    out = maps[0](theta)
    assert not torch.equal(out["1.running_mean"], theta["1.running_mean"])
    assert_states_equal(theta, before, rtol=0, atol=0)


def test_optimizer_maps_with_plain_sgd_match_sgd_maps(tiny_problem):
    model, x, y, schedule = tiny_problem
    generic = optimizer_maps(model, F.mse_loss, x, y, schedule,
                             lambda p: torch.optim.SGD(p, lr=LR))
    plain = sgd_maps(model, F.mse_loss, x, y, schedule, LR)
    a = dict(iterates(generic, initial_optimizer_state(model), "backward"))
    b = dict(iterates(plain, initial_state(model), "backward"))
    for n in a:
        assert_states_equal(a[n]["params"], b[n], rtol=1e-12, atol=1e-12)


def test_backward_adam_restarts_the_moments(tiny_problem):
    model, x, y, schedule = tiny_problem
    make = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731
    maps = optimizer_maps(model, F.mse_loss, x, y, schedule, make)
    state0 = initial_optimizer_state(model)
    before = copy.deepcopy(state0)
    backward3 = dict(iterates(maps, state0, "backward", at=[3]))[3]

    net = copy.deepcopy(model)
    opt = make(list(net.parameters()))  # fresh moments: the backward restart
    for i in (2, 1, 0):  # batches 3, 2, 1
        opt.zero_grad()
        F.mse_loss(net(x[schedule[i]]), y[schedule[i]]).backward()
        opt.step()
    assert_states_equal(backward3["params"], dict(net.named_parameters()), rtol=1e-12, atol=1e-12)
    assert backward3["optimizer"]["state"][0]["step"] == 3
    assert_states_equal(state0["params"], before["params"], rtol=0, atol=0)
    assert state0["optimizer"] == {}


def test_optimizer_maps_do_not_mutate_optimizer_state(tiny_problem):
    model, x, y, schedule = tiny_problem
    maps = optimizer_maps(model, F.mse_loss, x, y, schedule,
                          lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9))
    s1 = maps[0](initial_optimizer_state(model))
    buf = s1["optimizer"]["state"][0]["momentum_buffer"].clone()
    maps[1](s1)
    torch.testing.assert_close(s1["optimizer"]["state"][0]["momentum_buffer"], buf, rtol=0, atol=0)


@pytest.mark.parametrize("bad_schedule, message", [
    (torch.zeros(4, dtype=torch.int64), r"\[steps, batch\] int64"),
    (torch.zeros(2, 2), r"\[steps, batch\] int64"),
    (torch.full((2, 2), 99), "outside 0..23"),
])
def test_bad_schedules(tiny_problem, bad_schedule, message):
    model, x, y, _ = tiny_problem
    with pytest.raises(ValueError, match=message):
        sgd_maps(model, F.mse_loss, x, y, bad_schedule, LR)


def test_bad_learning_rate(tiny_problem):
    model, x, y, schedule = tiny_problem
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        sgd_maps(model, F.mse_loss, x, y, schedule, -0.1)


# ------------------------------------------------------------------------------------------------
# The engine's three paths (pure maps, in-place workspace, grouped vmap) give the same iterates
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("at", [None, [3, 7, 12], [12]])
@pytest.mark.parametrize("order", ["forward", "backward", "reset:every=4", "reset:at=2,9",
                                   "switch:3"])
def test_in_place_path_equals_pure_maps(tiny_problem, order, at):
    model, x, y, schedule = tiny_problem
    schedule = torch.cat([schedule, schedule.flip(0)])  # 12 steps
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, LR)
    theta = initial_state(model)
    fast = dict(iterates(maps, theta, order, at=at))
    pure = dict(iterates(list(maps), theta, order, at=at))  # a plain list has no fast path
    assert fast.keys() == pure.keys()
    for n in pure:
        assert_states_equal(fast[n], pure[n], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order, group_size", [("backward", 5), ("backward", 12),
                                               ("reset:every=4", 3), ("reset:at=5", 12)])
def test_grouped_vmap_path_equals_sequential(tiny_problem, order, group_size):
    model, x, y, schedule = tiny_problem
    schedule = torch.cat([schedule, schedule.flip(0)])
    maps = sgd_maps(model, F.mse_loss, x, y, schedule, LR)
    theta = initial_state(model)
    sequential = iterates(maps, theta, order)
    grouped = iterates(maps, theta, order, group_size=group_size)
    a, b = dict(sequential), dict(grouped)
    assert a.keys() == b.keys()
    for n in a:
        assert_states_equal(a[n], b[n], rtol=1e-10, atol=1e-10)
    assert grouped.applications == sequential.applications == grouped.planned


def test_grouping_needs_maps_that_support_it(tiny_problem):
    model, x, y, schedule = tiny_problem
    plain = list(sgd_maps(model, F.mse_loss, x, y, schedule, LR))
    with pytest.raises(ValueError, match="needs maps with a batched path"):
        iterates(plain, initial_state(model), "backward", group_size=4)
    # a cumulative BatchNorm average reads its batch count as a Python number: not batchable
    cumulative = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=None),
                                     torch.nn.Linear(4, 1)).double()
    maps = sgd_maps(cumulative, F.mse_loss, x, y, schedule, LR)
    with pytest.raises(ValueError, match="BatchNorm '1' has momentum=None"):
        list(iterates(maps, initial_state(cumulative), "backward", group_size=4))


def test_buffers_of_unknown_modules_are_refused_by_name():
    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            return x

    model = torch.nn.Sequential(torch.nn.Linear(3, 1), Counter())
    assert grouping_problem(model) == ("module '1' (Counter) has buffers ['calls']; the batched "
                                       "engine carries BatchNorm buffers only")
    assert not supports_grouping(model)
    assert grouping_problem(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))) \
        is None


def test_two_runs_give_identical_tensors(tiny_problem):
    model, x, y, schedule = tiny_problem
    runs = [dict(iterates(sgd_maps(model, F.mse_loss, x, y, schedule, LR), initial_state(model),
                          "backward")) for _ in range(2)]
    for n in runs[0]:
        assert all(torch.equal(runs[0][n][k], runs[1][n][k]) for k in runs[0][n])
