"""Iteration orders over an arbitrary sequence of maps T_1, ..., T_N (no torch needed).

The paper's statements (Theorem 2.2, 2.6, Example 2.4, Sec. 3) hold for any maps, so this module
knows nothing about networks: a map is any callable ``state -> new state``.

Every order is described by one rule, its *base*: the step r = base(n) < n whose iterate x_r the
order restarts from when it produces step n, applying the batches r+1..n newest first:

    x_n = T_{r+1} ∘ T_{r+2} ∘ ... ∘ T_n (x_r),     x_0 = the initial state.

=============  =====================  ======================================================
order          base(n)                meaning
=============  =====================  ======================================================
forward        n - 1                  x_n = T_n ∘ ... ∘ T_1 (x_0), one new map per step
backward       0                      x_n = T_1 ∘ ... ∘ T_n (x_0), restart from x_0 every step
Reset          last reset step < n    backward from a base point moved at each reset step
SwitchAt(s)    n-1 if n <= s, else s  forward up to s, then backward from x_s (Fig. 10)
=============  =====================  ======================================================

Producing x_n from x_r costs n - r map applications, which is the cost model of the book.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

from .validation import check_int, check_list

__all__ = [
    "Order", "Forward", "Backward", "Reset", "SwitchAt", "as_order", "iterates", "Iteration",
    "planned_applications", "steps_to_record", "order_for_steps", "InPlaceMaps", "GroupedMaps",
]


class Order:
    """An iteration order: which earlier iterate step n restarts from."""

    def base(self, n: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> str:
        """A short string that `as_order` parses back into an equal order."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __str__(self) -> str:
        return self.spec()


@dataclass(frozen=True)
class Forward(Order):
    """The usual order: x_n = T_n(x_{n-1})."""

    def base(self, n: int) -> int:
        return n - 1

    def spec(self) -> str:
        return "forward"


@dataclass(frozen=True)
class Backward(Order):
    """The paper's backward order: x_n = T_1 ∘ ... ∘ T_n (x_0), newest batch applied first."""

    def base(self, n: int) -> int:
        return 0

    def spec(self) -> str:
        return "backward"


@dataclass(frozen=True)
class Reset(Order):
    """Backward composition whose base point moves to this order's own iterate at reset steps.

    For the last reset step r < n (r = 0 if none), x_n = T_{r+1} ∘ ... ∘ T_n (x_r). Give either a
    period (``every=k``: resets at k, 2k, ...; at most k applications per step) or explicit steps
    (``at=[1000]``: the paper's "intermittent backward" of Fig. 3 and 13).
    """

    every: int | None = None
    at: tuple[int, ...] = field(default=())

    def __post_init__(self):
        if (self.every is None) == (not self.at):
            raise ValueError(
                f"Reset needs exactly one of every=k or at=[steps]; got every={self.every!r}, "
                f"at={self.at!r}")
        if self.every is not None:
            check_int("Reset(every=...): the period", self.every, 1)
            return
        at = check_list("Reset(at=...)", self.at, [1000],
                        lambda name, step: check_int(name, step, 1))
        object.__setattr__(self, "at", tuple(sorted(set(at))))

    def base(self, n: int) -> int:
        if self.every is not None:
            return ((n - 1) // self.every) * self.every
        i = bisect.bisect_left(self.at, n)  # resets strictly before n
        return self.at[i - 1] if i else 0

    def spec(self) -> str:
        if self.every is not None:
            return f"reset:every={self.every}"
        return "reset:at=" + ",".join(map(str, self.at))


@dataclass(frozen=True)
class SwitchAt(Order):
    """Forward for steps <= ``step``, then backward from the forward iterate x_step (Fig. 10)."""

    step: int

    def __post_init__(self):
        check_int("SwitchAt(step): the switch step", self.step, 0)

    def base(self, n: int) -> int:
        return n - 1 if n <= self.step else self.step

    def spec(self) -> str:
        return f"switch:{self.step}"


OrderLike = Union[str, Order]
_ORDER_FORMS = "'forward', 'backward', 'reset:every=K', 'reset:at=S1,S2,...', 'switch:S'"


def as_order(order: OrderLike) -> Order:
    """Parse an order given as an `Order` or as the string its ``spec()`` returns."""
    if isinstance(order, Order):
        return order
    if not isinstance(order, str):
        raise ValueError(f"order must be an Order or a string ({_ORDER_FORMS}); got {order!r}")
    text = order.strip().lower()
    try:
        if text == "forward":
            return Forward()
        if text == "backward":
            return Backward()
        if text.startswith("reset:every="):
            return Reset(every=int(text.split("=", 1)[1]))
        if text.startswith("reset:at="):
            return Reset(at=tuple(int(s) for s in text.split("=", 1)[1].split(",")))
        if text.startswith("switch:"):
            return SwitchAt(int(text.split(":", 1)[1]))
    except ValueError as err:
        raise ValueError(f"bad order {order!r}: {err}. Allowed forms: {_ORDER_FORMS}") from None
    raise ValueError(f"unknown order {order!r}. Allowed forms: {_ORDER_FORMS}")


def order_for_steps(order: OrderLike, steps: int) -> Order:
    """The order of a run of ``steps`` maps, refused when part of it cannot matter in that run.

    A reset at or after the last step moves a base point that no step restarts from, and a
    `Reset` or `SwitchAt` whose every step restarts as forward (or as backward) does is that order
    under another name (and another cache entry). The engine itself (`iterates`) accepts both:
    the equalities are what its tests check.
    """
    order = as_order(order)
    check_int("steps", steps, 1)
    same = _same_as(order, steps) if isinstance(order, (Reset, SwitchAt)) else None
    if same:
        raise ValueError(f"order {order.spec()!r} restarts every step of a run of {steps} steps as "
                         f"{same!r} does: it is {same!r} under another name (and cache entry); "
                         f"use {same!r}")
    late = [r for r in (order.at if isinstance(order, Reset) else ()) if r >= steps]
    if late:
        raise ValueError(f"order {order.spec()!r}: reset steps {late} are not before the last "
                         f"step {steps}, where a reset changes nothing; reset steps must lie in "
                         f"1..{steps - 1}")
    return order


def _same_as(order: Order, steps: int) -> str | None:
    """'forward' or 'backward' if ``order`` restarts every step 1..steps as that order does."""
    forward = backward = True
    for n in range(1, steps + 1):
        base = order.base(n)
        forward, backward = forward and base == n - 1, backward and base == 0
        if not (forward or backward):
            return None
    return "forward" if forward else "backward"


# ------------------------------------------------------------------------------------------------
# Which steps must be computed, and what they cost
# ------------------------------------------------------------------------------------------------

def steps_to_record(num_maps: int, at: Iterable[int] | None) -> list[int]:
    """Validate ``at`` against ``num_maps`` and return it sorted and without repeats."""
    if not isinstance(num_maps, int) or isinstance(num_maps, bool) or num_maps < 1:
        raise ValueError(f"need at least one map; got {num_maps!r}")
    if at is None:
        return list(range(1, num_maps + 1))
    if isinstance(at, (str, bytes)) or not isinstance(at, Iterable):
        raise ValueError(f"at must be a list of steps in 1..{num_maps} such as [1, {num_maps}]; "
                         f"got {at!r}")
    at = list(at)
    # checked before the set: {True, 1} would silently merge a bool into step 1
    bad = [n for n in at if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= num_maps]
    if bad:
        raise ValueError(f"requested steps {bad[:5]} are not integers or are outside 1..{num_maps} "
                         f"(the number of maps)")
    if not at:
        raise ValueError("'at' is empty: request at least one step")
    return sorted(set(at))


def _plan(order: Order, requested: list[int]) -> list[int]:
    """All steps to compute, in increasing order: the requested ones and the bases they need."""
    needed = set(requested)
    frontier = list(requested)
    while frontier:
        r = order.base(frontier.pop())
        if r > 0 and r not in needed:
            needed.add(r)
            frontier.append(r)
    return sorted(needed)


def planned_applications(order: OrderLike, num_maps: int, at: Iterable[int] | None = None) -> int:
    """The number of map applications `iterates` will spend, known before running anything."""
    order = as_order(order)
    return sum(n - order.base(n) for n in _plan(order, steps_to_record(num_maps, at)))


# ------------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------------

Map = Callable[[Any], Any]


@runtime_checkable
class InPlaceMaps(Protocol):
    """Optional fast path a sequence of maps may offer; the engine uses it when present.

    The engine owns the intermediate states of a composition, so it may update them in place:
    ``load`` copies a (shared, never mutated) state into a private workspace, ``apply_(i, w)``
    applies T_i to the workspace in place, and ``export`` returns an independent copy. This is the
    cost profile of a hand-written restart loop (one copy per restart, none per step). The result
    must equal composing the pure maps ``seq[i - 1]``.
    """

    def load(self, state: Any) -> Any: ...
    def apply_(self, i: int, workspace: Any) -> None: ...
    def export(self, workspace: Any) -> Any: ...


@runtime_checkable
class GroupedMaps(Protocol):
    """Optional batched path: ``compose_group(r, ns, x_r)`` returns, for each n in ``ns`` (sorted,
    all > r), T_{r+1} ∘ ... ∘ T_n (x_r), computing the trajectories side by side."""

    def compose_group(self, r: int, ns: list[int], x_r: Any) -> list[Any]: ...


class Iteration:
    """Iterable over ``(n, x_n)`` for the requested steps; counts the map applications it spends.

    ``applications`` grows as the iteration runs; ``planned`` is the total known in advance.
    """

    def __init__(self, maps: Sequence[Map], x0: Any, order: OrderLike, at: Iterable[int] | None,
                 on_application: Callable[[int], Any] | None, group_size: int):
        check_int("group_size (0 = no grouping)", group_size, 0)
        if group_size and not isinstance(maps, GroupedMaps):
            raise ValueError(f"group_size={group_size} needs maps with a batched path "
                             f"(compose_group); {type(maps).__name__} has none")
        self.maps = maps
        self.x0 = x0
        self.order = as_order(order)
        self.requested = steps_to_record(len(maps), at)
        self.plan = _plan(self.order, self.requested)
        self.planned = sum(n - self.order.base(n) for n in self.plan)
        self.applications = 0
        self.group_size = group_size
        self._on_application = on_application
        self._in_place = isinstance(maps, InPlaceMaps)

    def _spent(self, count: int) -> None:
        self.applications += count
        if self._on_application is not None:
            self._on_application(count)

    def _compose(self, first: int, last: int, x: Any) -> Any:
        """T_first ∘ ... ∘ T_last (x) with the pure maps: the newest map is applied first."""
        for i in range(last, first - 1, -1):
            x = self.maps[i - 1](x)
            self._spent(1)
        return x

    def _batches(self) -> Iterator[tuple[int, list[int]]]:
        """The plan cut into runs of steps sharing one base, at most ``group_size`` long."""
        size = self.group_size or 1
        run: list[int] = []
        for n in self.plan:
            r = self.order.base(n)
            # A step cannot join a group whose base it is not, nor one that computes its base.
            if run and (r != self.order.base(run[0]) or len(run) == size or r in run):
                yield self.order.base(run[0]), run
                run = []
            run.append(n)
        if run:
            yield self.order.base(run[0]), run

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        wanted = set(self.requested)
        # A base iterate is kept only until the last step that restarts from it.
        last_use: dict[int, int] = {}
        for n in self.plan:
            last_use[self.order.base(n)] = n
        kept: dict[int, Any] = {0: self.x0}
        # In-place path: the workspace holds the iterate of step `held`, exported only when it is
        # yielded or must outlive the workspace; forward runs thus never copy between steps.
        workspace, held = None, None

        def keep_held_if_needed(after: int) -> None:
            if held is not None and held not in kept and last_use.get(held, -1) > after:
                kept[held] = self.maps.export(workspace)

        for r, group in self._batches():
            n = group[0]
            if len(group) > 1:
                keep_held_if_needed(n - 1)
                results = self.maps.compose_group(r, group, kept[r])
                self._spent(sum(m - r for m in group))
            elif self._in_place:
                keep_held_if_needed(n)  # before the workspace moves on from `held`
                if held != r:
                    workspace = self.maps.load(kept[r])
                for i in range(n, r, -1):
                    self.maps.apply_(i, workspace)
                    self._spent(1)
                held = n
                results = [self.maps.export(workspace) if n in wanted else None]
            else:
                results = [self._compose(r + 1, n, kept[r])]
            if r != 0 and last_use.get(r) <= group[-1]:
                kept.pop(r, None)
            for m, x_m in zip(group, results):
                if m in last_use and x_m is not None:
                    kept[m] = x_m
                if m in wanted:
                    yield m, x_m


def iterates(maps: Sequence[Map], x0: Any, order: OrderLike, at: Iterable[int] | None = None,
             on_application: Callable[[int], Any] | None = None, group_size: int = 0) -> Iteration:
    """Iterates of ``maps`` from ``x0`` in the given order, as ``(n, x_n)`` for n in ``at``.

    ``maps[i-1]`` is T_i. Maps must be pure: a map returns a new state and never mutates its input,
    because the backward order applies many maps to the same stored state (x_0 or a base point).
    ``at`` defaults to every step 1..len(maps); ``on_application(count)`` is called as maps are
    applied (``tqdm.update`` fits). ``group_size > 0`` computes up to that many steps that share a
    base side by side, through the maps' ``compose_group`` (the batched GPU engine). The returned
    `Iteration` reports the ``applications`` spent, which equal ``planned`` whatever the path.
    """
    return Iteration(maps, x0, order, at, on_application, group_size)
