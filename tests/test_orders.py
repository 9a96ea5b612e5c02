"""The order engine on maps whose iterates are known in closed form (no networks)."""
import math
import random

import numpy as np
import pytest

from iteration_order import Backward, Forward, Reset, SwitchAt, as_order, iterates
from iteration_order import planned_applications


def affine_maps(h, noise):
    """Sec. 3.1: T_i(θ) = (1-h)θ + h ε_i, SGD on L = θ²/2 with additive gradient noise."""
    return [lambda x, e=e: (1 - h) * x + h * e for e in noise]


def compose(maps, first, last, x):
    """T_first ∘ ... ∘ T_last (x), written out independently of the engine."""
    for i in reversed(range(first, last + 1)):
        x = maps[i - 1](x)
    return x


@pytest.fixture
def noise():
    return np.random.default_rng(0).normal(size=60).tolist()


def test_quadratic_closed_forms(noise):
    h, x0 = 0.1, 3.0
    maps = affine_maps(h, noise)
    forward = dict(iterates(maps, x0, "forward"))
    backward = dict(iterates(maps, x0, "backward"))
    for n in range(1, len(maps) + 1):
        eps = noise[:n]
        fwd = (1 - h) ** n * x0 + sum(h * (1 - h) ** (n - i) * eps[i - 1] for i in range(1, n + 1))
        bwd = (1 - h) ** n * x0 + sum(h * (1 - h) ** (i - 1) * eps[i - 1] for i in range(1, n + 1))
        assert forward[n] == pytest.approx(fwd, rel=1e-12, abs=1e-12)
        assert backward[n] == pytest.approx(bwd, rel=1e-12, abs=1e-12)
    # The backward increments decay like (1-h)^n (Theorem 2.2); the forward ones do not.
    bwd_steps = [abs(backward[n + 1] - backward[n]) for n in range(1, len(maps))]
    fwd_steps = [abs(forward[n + 1] - forward[n]) for n in range(1, len(maps))]
    assert max(bwd_steps[-10:]) < 0.02 * max(bwd_steps[:10])
    assert max(fwd_steps[-10:]) > 0.2 * max(fwd_steps[:10])


def test_example_2_4_constant_maps():
    rng = random.Random(1)
    S, U = (lambda _: "x0"), (lambda _: "y0")
    maps = [rng.choice([S, U]) for _ in range(50)]
    forward = dict(iterates(maps, None, "forward"))
    backward = dict(iterates(maps, None, "backward"))
    expected_forward = ["x0" if m is S else "y0" for m in maps]
    assert [forward[n] for n in range(1, 51)] == expected_forward
    assert len(set(expected_forward)) == 2  # forward really jumps between the constants
    assert set(backward.values()) == {expected_forward[0]}  # backward sticks to T_1's constant


def test_backward_equals_forward_at_step_one_and_for_identical_maps(noise):
    maps = affine_maps(0.3, noise)
    assert dict(iterates(maps, 1.0, "forward", at=[1])) == dict(iterates(maps, 1.0, "backward", at=[1]))
    same = [maps[0]] * 20
    assert dict(iterates(same, 1.0, "forward")) == dict(iterates(same, 1.0, "backward"))
    # ... while distinct maps do give distinct orders
    assert dict(iterates(maps, 1.0, "forward"))[5] != dict(iterates(maps, 1.0, "backward"))[5]


def test_reset_every_k_against_hand_composition(noise):
    maps, x0, k = affine_maps(0.2, noise[:23]), 0.5, 5
    result = dict(iterates(maps, x0, Reset(every=k)))
    base = {0: x0}
    for n in range(1, 24):
        r = ((n - 1) // k) * k
        expected = compose(maps, r + 1, n, base[r])
        assert result[n] == pytest.approx(expected, rel=0, abs=0)
        base[n] = expected  # the order's own iterate serves as the next base
    assert result[7] == compose(maps, 6, 7, compose(maps, 1, 5, x0))


def test_reset_at_steps_and_switch_against_hand_composition(noise):
    maps, x0 = affine_maps(0.2, noise[:30]), -1.0
    reset = dict(iterates(maps, x0, Reset(at=[10, 20])))
    x10 = compose(maps, 1, 10, x0)
    x20 = compose(maps, 11, 20, x10)
    assert reset[10] == x10 and reset[20] == x20
    assert reset[5] == compose(maps, 1, 5, x0)
    assert reset[15] == compose(maps, 11, 15, x10)
    assert reset[30] == compose(maps, 21, 30, x20)

    switch = dict(iterates(maps, x0, SwitchAt(12)))
    forward = dict(iterates(maps, x0, "forward"))
    for n in range(1, 13):
        assert switch[n] == forward[n]
    for n in range(13, 31):
        assert switch[n] == compose(maps, 13, n, forward[12])


def test_special_cases_of_reset_and_switch(noise):
    maps = affine_maps(0.2, noise[:15])
    forward = dict(iterates(maps, 2.0, "forward"))
    backward = dict(iterates(maps, 2.0, "backward"))
    assert dict(iterates(maps, 2.0, Reset(every=1))) == forward
    assert dict(iterates(maps, 2.0, Reset(every=100))) == backward
    assert dict(iterates(maps, 2.0, SwitchAt(0))) == backward
    assert dict(iterates(maps, 2.0, SwitchAt(15))) == forward


@pytest.mark.parametrize("order, at, expected", [
    ("forward", None, 10),
    ("forward", [3, 7], 7),                     # forward must walk every step up to the last one
    ("backward", None, 55),                     # 1 + 2 + ... + 10
    ("backward", [4, 10], 14),
    (Reset(every=3), None, 1 + 2 + 3 + 1 + 2 + 3 + 1 + 2 + 3 + 1),
    (Reset(every=3), [10], 3 + 3 + 3 + 1),     # bases 3, 6, 9 must be computed, then 10
    (Reset(at=[4]), [2, 8], 2 + 4 + 4),        # 2 from x0, base 4 from x0, 8 from base 4
    (SwitchAt(6), None, 6 + 1 + 2 + 3 + 4),
    (SwitchAt(6), [10], 6 + 4),
])
def test_cost_counts_are_exact(order, at, expected):
    count = {"calls": 0}

    def T(x):
        count["calls"] += 1
        return x + 1

    maps = [T] * 10
    run = iterates(maps, 0, order, at=at)
    assert run.planned == expected == planned_applications(order, 10, at)
    list(run)
    assert run.applications == count["calls"] == expected


def test_only_requested_steps_are_yielded(noise):
    maps = affine_maps(0.2, noise[:10])
    assert [n for n, _ in iterates(maps, 0.0, Reset(every=3), at=[10, 2, 2])] == [2, 10]


def test_engine_never_mutates_the_initial_state():
    x0 = np.zeros(3)

    def T(x):
        return x + 1  # pure: returns a new array

    list(iterates([T] * 5, x0, "backward"))
    np.testing.assert_array_equal(x0, np.zeros(3))


def test_order_strings_round_trip():
    for order in (Forward(), Backward(), Reset(every=4), Reset(at=(10, 1000)), SwitchAt(1000)):
        assert as_order(order.spec()) == order
    assert as_order(" Backward ") == Backward()


@pytest.mark.parametrize("bad, message", [
    ("sideways", "unknown order 'sideways'"),
    ("reset:every=0", "period must be an integer >= 1"),
    ("reset:every=x", "bad order"),
    ("switch:-3", "switch step must be an integer >= 0"),
])
def test_bad_orders_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        as_order(bad)


def test_bad_reset_arguments():
    with pytest.raises(ValueError, match="exactly one of"):
        Reset()
    with pytest.raises(ValueError, match="exactly one of"):
        Reset(every=2, at=(3,))
    with pytest.raises(ValueError, match=r"Reset\(at=...\)\[0\] must be an integer >= 1; got 0"):
        Reset(at=(0,))


@pytest.mark.parametrize("at, message", [([0], r"outside 1\.\.5"), ([6], r"outside 1\.\.5"),
                                         ([], "empty")])
def test_bad_steps_are_named(at, message):
    with pytest.raises(ValueError, match=message):
        iterates([lambda x: x] * 5, 0, "forward", at=at)


def test_no_maps_is_an_error():
    with pytest.raises(ValueError, match="at least one map"):
        iterates([], 0, "forward")


def test_theorem_2_2_rate_on_contractions():
    """|θ_{n+1}^B − θ_n^B| <= k^n · max_i |θ_0 − T_i(θ_0)|, the bound in the proof of Theorem 2.2."""
    k = 0.7
    rng = np.random.default_rng(3)
    maps = [lambda x, c=c: k * math.sin(x) + c for c in rng.normal(size=40)]  # Lipschitz k
    backward = dict(iterates(maps, 0.0, "backward"))
    increments = [abs(backward[n + 1] - backward[n]) for n in range(1, 40)]
    D = max(abs(0.0 - T(0.0)) for T in maps)
    assert all(d <= D * k ** n * (1 + 1e-9) for n, d in enumerate(increments, start=1))
    assert increments[-1] < 1e-4 * increments[0]
