"""The one validation layer: small checkers with exact types and uniform messages.

Every config of the package (`TrajectoryConfig`, `Runtime`, `Reset`, the book's experiments) and
the papermill parameters cell of every page template check their values with these functions, so
that a bad value gets the same kind of message wherever it enters:

    <name> must be <what is allowed>; got <the value, as repr>

Types are exact: a bool is not an int (``True`` is ``1`` to Python, never to a config), a string is
not a bool (``"no"`` is truthy) and a single string is not a list of strings. Each checker returns
the value it accepted (a list as a tuple), raises ``ValueError`` otherwise and never converts.
"""
from __future__ import annotations

import keyword
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["check_bool", "check_int", "check_number", "check_str", "check_choice", "check_list",
           "check_path", "check_identifier", "check_like", "describe_range"]


def _fail(name: str, what: str, value: Any) -> None:
    raise ValueError(f"{name} must be {what}; got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe_range(low=None, high=None, low_open: bool = False, high_open: bool = False,
                   integer: bool = False) -> str:
    """'>= 1', '> 0', 'in 1..9' (integers), 'in [0, 1)'; '' without bounds."""
    if low is not None and high is not None:
        if integer:
            return f"in {low + low_open}..{high - high_open}"
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _within(value, low, high, low_open: bool, high_open: bool) -> bool:
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(name, "True or False", value)
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An int (never a bool, a float or a numeric string) in low..high, both included."""
    bounds = describe_range(low, high, integer=True)
    if not _is_int(value) or not _within(value, low, high, False, False):
        _fail(name, f"an integer {bounds}".rstrip(), value)
    return value


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """An int or a float (never a bool or a string), finite unless told, within the bounds."""
    bounds = describe_range(low, high, low_open, high_open)
    what = f"a {'finite ' if finite else ''}number {bounds}".rstrip()
    if not _is_number(value) or (finite and not math.isfinite(value)) \
            or not _within(value, low, high, low_open, high_open):
        _fail(name, what, value)
    return value


def check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        _fail(name, "a string", value)
    return value


def check_choice(name: str, value: Any, allowed: Iterable[str], label: str | None = None) -> str:
    """One of ``allowed``; the message reads "unknown <label> <value>; allowed: a, b"."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {label or name} {value!r}; allowed: {', '.join(allowed)}")
    return value


def choice_or_env(value: Any, env: str, allowed: Iterable[str], default: str, noun: str,
                  article: str = "a") -> str:
    """``value`` checked against ``allowed``; or, where it is None, what ``$env`` names (checked
    the same way), else ``default``. Settings a caller cannot reach (a book page builds its own
    runtime in its notebook) are steered through the environment this way."""
    allowed = tuple(allowed)
    if value is None:
        named = os.environ.get(env, "").strip()
        if named and named not in allowed:
            raise ValueError(f"${env}={named!r} is not {article} {noun}; allowed: "
                             f"{', '.join(allowed)}")
        return named or default
    if value not in allowed:
        raise ValueError(f"unknown {noun} {value!r}; allowed: {', '.join(allowed)} (or None: "
                         f"${env}, else {default!r})")
    return value


def check_list(name: str, value: Any, example: list, item: Callable[[str, Any], Any] | None = None
               ) -> tuple:
    """A list or tuple (never a single string or number); ``item(f"{name}[i]", v)`` checks each
    element. ``example`` is shown in the message, as the allowed form."""
    if isinstance(value, str):
        raise ValueError(f"{name} must be a list such as {example!r}; got the single string "
                         f"{value!r}")
    if not isinstance(value, (list, tuple)):
        _fail(name, f"a list such as {example!r}", value)
    if item is not None:
        for i, element in enumerate(value):
            item(f"{name}[{i}]", element)
    return tuple(value)


def check_path(name: str, value: Any, optional: bool = False) -> Any:
    """A path (str or os.PathLike), or None when ``optional``."""
    if value is None and optional:
        return value
    if not isinstance(value, (str, os.PathLike)):
        _fail(name, "a path (a string or a pathlib.Path)" + (" or None" if optional else ""),
              value)
    return value


def check_identifier(name: str, value: Any) -> str:
    """A Python identifier that is not a keyword: the only names safe to assign in code."""
    if not (isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)):
        _fail(name, "a Python identifier (letters, digits and _, not a keyword)", value)
    return value


def check_like(name: str, value: Any, default: Any) -> Any:
    """``value`` has the type of ``default`` (a template's declared value): a bool default takes
    only bools, an int default only ints, a float default ints or floats, a str default only
    strings, a list default only lists (each element like the default's, when those share one
    type), a dict default only mappings; a None default takes anything. Only types are checked:
    the ranges belong to the configs that use the value."""
    if default is None:
        return value
    if isinstance(default, bool):
        return check_bool(name, value)
    if isinstance(default, int):
        return check_int(name, value)
    if isinstance(default, float):
        return check_number(name, value, finite=False)
    if isinstance(default, str):
        return check_str(name, value)
    if isinstance(default, (list, tuple)):
        kinds = {type(v) for v in default}
        item = (lambda n, v: check_like(n, v, default[0])) if len(kinds) == 1 else None
        return check_list(name, value, list(default), item)
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            _fail(name, "a mapping {name: value, ...}", value)
        return value
    return value

