"""Property tests (hypothesis) of the order engine over random non-commuting affine maps.

Issue #10, part 5. Each example draws N affine maps T_i(x) = A_i x + b_i on R^d (d = 2..4, random
matrices, so the maps do not commute and every order gives a different trajectory), the requested
steps ``at`` and an order, then checks the engine against references written here, never with
the engine:

* every order's iterate at n is its definition x_n = T_{r+1} ∘ ... ∘ T_n (x_r), r = base(n), with
  base(n) written out again in this file (`reference_base`) and the recursion done by hand; the
  orders drawn are forward, backward, Reset(every=k), Reset(at=...), SwitchAt(s) and an arbitrary
  rule read from a table (`TableOrder`), whose bases need not grow with n;
* backward and forward are the explicit compositions T_1 ∘ ... ∘ T_n and T_n ∘ ... ∘ T_1, built
  as products of the matrices (a different computation from applying the maps one by one);
* Reset(every=1) = forward, SwitchAt(0) = backward, SwitchAt(N) = forward;
* applications = planned = planned_applications = the callback's sum = the maps' own count = the
  cost of the plan computed here from `reference_base`;
* the in-place path (load/apply_/export) and the batched path (compose_group, random group_size)
  give the iterates and the applications of the sequential pure path;
* only the requested steps are yielded, once each, in increasing order;
* the engine never writes into x_0 or a stored state (they are read-only arrays here).

Runs are deterministic (``derandomize=True``, no example database), so CI sees the same examples
every time. Set ``ORDERS_HYPOTHESIS_EXPLORE=1`` to draw fresh random examples (and more of them)
when hunting for bugs locally.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iteration_order import (Backward, Forward, Order, Reset, SwitchAt, iterates,
                             planned_applications)
from iteration_order.orders import steps_to_record

MAX_MAPS = 25
_EXPLORE = bool(os.environ.get("ORDERS_HYPOTHESIS_EXPLORE"))


def _settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples * (10 if _EXPLORE else 1), deadline=None,
                    derandomize=not _EXPLORE, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------
# Maps: pure, in place, batched
# ------------------------------------------------------------------------------------------------

def _frozen(x: np.ndarray) -> np.ndarray:
    """Stored states are read-only: the engine writing into one (instead of a loaded workspace)
    raises at once."""
    x.flags.writeable = False
    return x


class AffineMaps:
    """T_i(x) = A_i x + b_i, i = 1..N (``maps[i-1]`` is T_i); counts every application.

    Only ``len`` and indexing: the engine sees a plain sequence of pure maps.
    """

    def __init__(self, A: np.ndarray, b: np.ndarray):
        self.A, self.b = A, b
        self.calls = 0

    def __len__(self) -> int:
        return len(self.A)

    def T(self, i: int, x: np.ndarray) -> np.ndarray:
        """T_i(x), not counted: the references below use it."""
        return _frozen(self.A[i - 1] @ x + self.b[i - 1])

    def __getitem__(self, k: int):
        if not 0 <= k < len(self):
            raise IndexError(k)

        def T_i(x, i=k + 1):
            self.calls += 1
            return self.T(i, x)
        return T_i


class InPlaceAffineMaps(AffineMaps):
    """The same maps with the engine's in-place path over a mutable numpy workspace.

    ``apply_`` does the arithmetic of ``T`` (one matrix-vector product, then the add), only
    writing the result into the workspace, so its iterates are bit for bit those of the pure maps.
    """

    def __init__(self, A, b):
        super().__init__(A, b)
        self.loads = 0

    def load(self, state: np.ndarray) -> np.ndarray:
        self.loads += 1
        return np.array(state, copy=True)  # writable, private

    def apply_(self, i: int, workspace: np.ndarray) -> None:
        assert workspace.flags.writeable, "apply_ got a stored state, not a loaded workspace"
        self.calls += 1
        np.add(self.A[i - 1] @ workspace, self.b[i - 1], out=workspace)

    def export(self, workspace: np.ndarray) -> np.ndarray:
        return _frozen(np.array(workspace, copy=True))


class _Grouped:
    """compose_group written independently of the engine: the trajectories of ``ns`` are the
    columns of one d × len(ns) matrix and advance side by side, trajectory n joining when the
    composition reaches T_n (newest map first), as the batched GPU engine does."""

    group_size: int = 0

    def compose_group(self, r: int, ns: list[int], x_r: np.ndarray) -> list[np.ndarray]:
        assert ns == sorted(set(ns)), f"compose_group got unsorted or repeated steps {ns}"
        assert ns[0] > r >= 0 and ns[-1] <= len(self)
        assert 1 < len(ns) <= self.group_size, f"group of {len(ns)} with group_size={self.group_size}"
        self.groups.append((r, list(ns)))
        X = np.repeat(np.asarray(x_r)[:, None], len(ns), axis=1)
        for i in range(ns[-1], r, -1):
            live = [j for j, n in enumerate(ns) if n >= i]
            X[:, live] = self.A[i - 1] @ X[:, live] + self.b[i - 1][:, None]
            self.calls += len(live)
        return [_frozen(X[:, j].copy()) for j in range(len(ns))]


class GroupedAffineMaps(_Grouped, AffineMaps):
    """Pure maps with a batched path (groups of one go through the pure maps)."""

    def __init__(self, A, b, group_size):
        super().__init__(A, b)
        self.group_size, self.groups = group_size, []


class GroupedInPlaceAffineMaps(_Grouped, InPlaceAffineMaps):
    """Both fast paths, as the SGD maps of a network have (groups of one go in place)."""

    def __init__(self, A, b, group_size):
        super().__init__(A, b)
        self.group_size, self.groups = group_size, []


class TableOrder(Order):
    """Any rule base(n) < n is an order (orders.py: "every order is one rule, its base"); this one
    reads it from a table, so bases need not grow with n as those of the named orders do."""

    def __init__(self, bases):
        self.bases = tuple(bases)  # bases[n - 1] = base(n)

    def base(self, n: int) -> int:
        return self.bases[n - 1]

    def spec(self) -> str:  # not parseable: tests pass this order as an object only
        return f"table:{self.bases}"

    def __repr__(self) -> str:
        return f"TableOrder({self.bases})"


# ------------------------------------------------------------------------------------------------
# References, written without the engine
# ------------------------------------------------------------------------------------------------

def reference_base(order, n: int) -> int:
    """base(n) of each order from its definition (orders.py's table), not from ``order.base``."""
    if isinstance(order, Forward):
        return n - 1
    if isinstance(order, Backward):
        return 0
    if isinstance(order, Reset) and order.every is not None:
        return max(r for r in range(n) if r % order.every == 0)  # last reset step < n, or 0
    if isinstance(order, Reset):
        return max([0] + [r for r in order.at if r < n])
    if isinstance(order, SwitchAt):
        return n - 1 if n <= order.step else order.step
    if isinstance(order, TableOrder):
        return order.bases[n - 1]
    raise TypeError(order)


def reference_iterates(maps: AffineMaps, x0, order, steps) -> dict[int, np.ndarray]:
    """x_n = T_{r+1} ∘ ... ∘ T_n (x_r), r = reference_base(n), by recursion from x_0."""
    memo = {0: x0}

    def x(n):
        if n not in memo:
            r = reference_base(order, n)
            y = x(r)
            for i in range(n, r, -1):  # T_n first, T_{r+1} last
                y = maps.T(i, y)
            memo[n] = y
        return memo[n]
    return {n: x(n) for n in steps}


def reference_cost(order, steps) -> int:
    """Applications needed: every requested step and, recursively, the bases they restart from
    (x_0 is given), each step n costing n - base(n)."""
    needed, todo = set(), list(steps)
    while todo:
        n = todo.pop()
        if n > 0 and n not in needed:
            needed.add(n)
            todo.append(reference_base(order, n))
    return sum(n - reference_base(order, n) for n in needed)


def explicit_compositions(A, b, x0):
    """Backward T_1 ∘ ... ∘ T_n (x0) and forward T_n ∘ ... ∘ T_1 (x0) for every n, from the
    affine map of the whole composition (M, c), x ↦ M x + c, built by matrix products."""
    d = len(x0)
    Mb, cb = np.eye(d), np.zeros(d)  # T_1 ∘ ... ∘ T_n: compose T_{n+1} on the right
    Mf, cf = np.eye(d), np.zeros(d)  # T_n ∘ ... ∘ T_1: compose T_{n+1} on the left
    backward, forward = {}, {}
    for n in range(1, len(A) + 1):
        Ai, bi = A[n - 1], b[n - 1]
        Mb, cb = Mb @ Ai, Mb @ bi + cb
        Mf, cf = Ai @ Mf, Ai @ cf + bi
        backward[n], forward[n] = Mb @ x0 + cb, Mf @ x0 + cf
    return backward, forward


# ------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------

def random_affine(seed: int, N: int, d: int):
    """N random affine maps with ||A_i||_2 in [0.6, 1.05]: products of 25 stay O(1), and random
    matrices do not commute."""
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(N, d, d))
    A = G / np.linalg.norm(G, ord=2, axis=(1, 2))[:, None, None] * rng.uniform(0.6, 1.05, (N, 1, 1))
    return A, rng.normal(size=(N, d)), _frozen(rng.normal(size=d))


def order_strategy(N: int):
    return st.one_of(
        st.just(Forward()),
        st.just(Backward()),
        st.integers(1, N + 2).map(lambda k: Reset(every=k)),
        st.lists(st.integers(1, N + 2), min_size=1, max_size=6).map(lambda s: Reset(at=tuple(s))),
        st.integers(0, N + 1).map(SwitchAt),
        # an arbitrary rule: base(n) uniform-ish in 0..n-1
        st.lists(st.integers(0, 2**16), min_size=N, max_size=N).map(
            lambda v: TableOrder(v[n - 1] % n for n in range(1, N + 1))),
    )


class Problem(tuple):
    """(A, b, x0, N, at, order), shown in hypothesis' reports by what rebuilds it (seed, N, d, at,
    order) rather than by its arrays."""

    def __new__(cls, seed: int, N: int, d: int, at, order):
        A, b, x0 = random_affine(seed, N, d)
        self = super().__new__(cls, (A, b, x0, N, at, order))
        self.seed, self.d = seed, d
        return self

    def __repr__(self) -> str:
        _, _, _, N, at, order = self
        return f"Problem(seed={self.seed}, N={N}, d={self.d}, at={at!r}, order={order!r})"


@st.composite
def problems(draw, min_maps: int = 1):
    """(A, b, x0, N, at, order): ``at`` is None or a non-empty list of steps in 1..N, given
    unsorted and with repeats (the engine must yield each requested step once, in order)."""
    N = draw(st.integers(min_maps, MAX_MAPS), label="N")
    d = draw(st.integers(2, 4), label="d")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    at = draw(st.none() | st.lists(st.integers(1, N), min_size=1, max_size=N), label="at")
    order = draw(order_strategy(N), label="order")
    return Problem(seed, N, d, at, order)


def requested(N, at):
    return list(range(1, N + 1)) if at is None else sorted(set(at))


def run(maps, x0, order, at=None, as_spec=False, **kw):
    """Iterate to the end; return the iteration, the yielded pairs and the callback's counts."""
    counts = []
    as_spec = as_spec and not isinstance(order, TableOrder)
    it = iterates(maps, x0, order.spec() if as_spec else order, at=at,
                  on_application=counts.append, **kw)
    pairs = []
    for n, x in it:
        assert it.applications <= it.planned  # never more than announced, even midway
        pairs.append((n, x))
    return it, pairs, counts


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for n in a:
        assert np.array_equal(a[n], b[n]), f"step {n}: {a[n]} != {b[n]}"


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------

@_settings(150)
@given(problems(), st.booleans())
def test_every_order_is_its_base_definition(problem, as_spec):
    """x_n = T_{r+1} ∘ ... ∘ T_n (x_r), r = base(n), for every order, every ``at``.

    Exact: the maps are black boxes, so any correct engine applies exactly these maps to exactly
    these states, in this order; the reference does the same arithmetic.
    """
    A, b, x0, N, at, order = problem
    maps = AffineMaps(A, b)
    _, pairs, _ = run(maps, x0, order, at, as_spec=as_spec)
    steps = requested(N, at)
    assert [n for n, _ in pairs] == steps  # only the requested steps, once each, increasing
    assert steps_to_record(N, at) == steps
    assert_same(dict(pairs), reference_iterates(maps, x0, order, steps))


@_settings(150)
@given(problems())
def test_applications_equal_the_plan(problem):
    """applications = planned = planned_applications = Σ callback = maps applied = plan's cost."""
    A, b, x0, N, at, order = problem
    maps = AffineMaps(A, b)
    it, _, counts = run(maps, x0, order, at)
    expected = reference_cost(order, requested(N, at))
    assert planned_applications(order, N, at) == expected
    assert it.planned == it.applications == sum(counts) == maps.calls == expected
    assert all(c >= 1 for c in counts)


@_settings(80)
@given(problems())
def test_backward_and_forward_are_the_explicit_compositions(problem):
    """Backward = T_1 ∘ ... ∘ T_n (x0), forward = T_n ∘ ... ∘ T_1 (x0).

    Approximate: the reference multiplies the matrices first ((A_1 A_2) x differs from
    A_1 (A_2 x) in the last bits); with ||A_i|| <= 1.05 and n <= 25 the iterates are O(10) and the
    rounding differences O(1e-14), far below the tolerance, while a wrong order moves them by O(1).
    """
    A, b, x0, N, at, _ = problem
    backward, forward = explicit_compositions(A, b, x0)
    maps = AffineMaps(A, b)
    for order, reference in ((Backward(), backward), (Forward(), forward)):
        for n, x in iterates(maps, x0, order, at=at):
            np.testing.assert_allclose(x, reference[n], rtol=1e-10, atol=1e-10,
                                       err_msg=f"{order} at step {n}")


@_settings(60)
@given(problems(min_maps=2))
def test_the_maps_do_not_commute(problem):
    """The premise of the other tests: forward and backward differ at every n >= 2 (otherwise
    equalities between orders would prove little)."""
    A, b, x0, N, _, _ = problem
    backward, forward = explicit_compositions(A, b, x0)
    for n in range(2, N + 1):
        assert not np.allclose(backward[n], forward[n], rtol=1e-6, atol=1e-6), n


@_settings(80)
@given(problems(), st.integers(0, 3))
def test_reset_and_switch_special_cases(problem, extra):
    """Reset(every=1) = forward, SwitchAt(0) = backward, SwitchAt(N) = forward; also the periods
    and switch steps past the end: Reset(every>=N) = backward, SwitchAt(N + k) = forward. Exact:
    the same maps are applied to the same states."""
    A, b, x0, N, at, _ = problem
    maps = AffineMaps(A, b)
    forward = dict(iterates(maps, x0, Forward(), at=at))
    backward = dict(iterates(maps, x0, Backward(), at=at))
    assert_same(dict(iterates(maps, x0, Reset(every=1), at=at)), forward)
    assert_same(dict(iterates(maps, x0, SwitchAt(0), at=at)), backward)
    assert_same(dict(iterates(maps, x0, SwitchAt(N), at=at)), forward)
    assert_same(dict(iterates(maps, x0, SwitchAt(N + extra), at=at)), forward)
    assert_same(dict(iterates(maps, x0, Reset(every=N + extra), at=at)), backward)


@_settings(120)
@given(problems())
def test_in_place_path_equals_the_pure_maps(problem):
    """load/apply_/export give the pure maps' iterates bit for bit (identical arithmetic), spend
    the same applications, and never write into x0 or a stored state (they are read-only)."""
    A, b, x0, N, at, order = problem
    pure, in_place = AffineMaps(A, b), InPlaceAffineMaps(A, b)
    it_pure, pairs_pure, _ = run(pure, x0, order, at)
    it, pairs, counts = run(in_place, x0, order, at)
    assert [n for n, _ in pairs] == [n for n, _ in pairs_pure] == requested(N, at)
    assert_same(dict(pairs), dict(pairs_pure))
    assert it.applications == it.planned == sum(counts) == in_place.calls == it_pure.applications
    # the yielded iterates are independent copies: later steps did not overwrite them
    assert_same(dict(pairs), reference_iterates(pure, x0, order, requested(N, at)))


@_settings(150)
@given(problems(), st.data(), st.booleans())
def test_batched_path_equals_the_sequential_path(problem, data, in_place):
    """compose_group with a random group_size gives the sequential iterates and applications.

    Approximate: the batched maps multiply A_i by a d × k matrix of trajectories where the
    sequential maps multiply it by one vector; BLAS may round those differently (last bits only).
    """
    A, b, x0, N, at, order = problem
    group_size = data.draw(st.integers(1, N + 1), label="group_size")
    cls = GroupedInPlaceAffineMaps if in_place else GroupedAffineMaps
    grouped, sequential = cls(A, b, group_size), AffineMaps(A, b)
    it_seq, pairs_seq, _ = run(sequential, x0, order, at)
    it, pairs, counts = run(grouped, x0, order, at, group_size=group_size)
    assert [n for n, _ in pairs] == [n for n, _ in pairs_seq] == requested(N, at)
    for (n, x), (_, y) in zip(pairs, pairs_seq):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=f"step {n}")
    assert it.applications == it.planned == sum(counts) == grouped.calls
    assert it.applications == it_seq.applications == it_seq.planned
    for r, ns in grouped.groups:  # every group shares its base
        assert all(reference_base(order, n) == r for n in ns), (r, ns)


@pytest.mark.parametrize("in_place", [False, True])
def test_batched_path_is_exercised(in_place):
    """The property above is not vacuous: backward over 10 maps in groups of 3 goes through
    compose_group, with groups of at most 3 steps."""
    A, b, x0 = random_affine(0, 10, 3)
    cls = GroupedInPlaceAffineMaps if in_place else GroupedAffineMaps
    maps = cls(A, b, 3)
    result = dict(iterates(maps, x0, "backward", group_size=3))
    assert maps.groups and all(r == 0 and len(ns) <= 3 for r, ns in maps.groups)
    backward, _ = explicit_compositions(A, b, x0)
    for n in range(1, 11):
        np.testing.assert_allclose(result[n], backward[n], rtol=1e-10, atol=1e-10)
