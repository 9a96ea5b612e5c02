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
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["check_bool", "check_int", "check_number", "check_str", "check_choice", "check_list",
           "check_path", "check_identifier", "check_like", "describe_range", "NAME_PATTERN",
           "check_name", "check_data_path", "markup_problem", "MAX_STEPS",
           "MAX_RECORDED", "record_points_bound", "size_problems"]


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



# ------------------------------------------------------------------------------------------------
# Names that become paths, data paths, text that becomes markup (the registry's, issue 21)
# ------------------------------------------------------------------------------------------------

# Page and template names: they become file names (book/<page>.ipynb, notebooks/<template>.ipynb,
# log lines, cache folders), so lower-case letters, digits, '-' and '_' only, starting with a
# letter or digit: no '/', '..', whitespace, newline or anything a shell or a path would read.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_name(name: str, value: Any) -> str:
    """A page or template name (`NAME_PATTERN`), safe as one path component."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        _fail(name, "a name of lower-case letters, digits, '-' and '_' (at most 64, starting "
                    "with a letter or digit)", value)
    return value


def check_data_path(name: str, value: Any) -> str:
    """The ``NAME`` of a ``npz:NAME`` data set: a relative path that stays inside the data root
    (no absolute path, no '..' component, no '~', no backslash), whatever the data root is."""
    text = check_str(name, value)
    target = text[len("npz:"):] if text.startswith("npz:") else text
    parts = target.split("/")
    if (not target or target.startswith(("/", "~")) or "\\" in target or "\0" in target
            or any(part in ("", ".", "..") for part in parts) or ":" in parts[0]):
        _fail(name, "a relative path inside the data root (no '/' at the start, no '..', '.', "
                    "'~' or empty component)", value)
    return value


# Raw HTML in text that becomes a page's markdown: a tag (<script>, </div>, <img ...>), a comment
# or declaration (<!-- , <!DOCTYPE) or processing instruction. Code spans and MyST roles (`...`,
# {doc}`text <target>`) are left out first: their '<' is rendered as text or is a link target.
_CODE_SPAN = re.compile(r"(`+).*?\1", re.S)
_HTML = re.compile(r"<(?:[A-Za-z][\w:-]*(?:\s|/?>)|/[A-Za-z]|[!?])")


def markup_problem(name: str, text: str) -> str | None:
    """Why ``text`` (registry prose that becomes markdown) may not be used: it holds raw HTML,
    which would reach the built page as markup (a script, an iframe). None if it holds none."""
    found = _HTML.search(_CODE_SPAN.sub("", text))
    if found is None:
        return None
    start = max(found.start() - 20, 0)
    return (f"{name} holds raw HTML ({_CODE_SPAN.sub('', text)[start:found.end() + 20]!r}); "
            f"registry text is markdown only: write '&lt;' for a literal '<', or put it in a "
            f"code span")


# ------------------------------------------------------------------------------------------------
# Devices, and the size of a run: checked before anything is built (issue 21)
# ------------------------------------------------------------------------------------------------

# The largest run a registry entry (or `book cost`) may ask for: far above the paper's (25,000
# steps, a few thousand recorded), far below what would exhaust memory while a config is merely
# built (its recorded steps are enumerated: 10**9 steps took 9.6 GB before failing).
MAX_STEPS = 1_000_000
MAX_RECORDED = 100_000


def record_points_bound(spec: Any, steps: int) -> int | None:
    """An upper bound on how many steps a record spec names, and so on the memory building it
    takes (`trajectory.parse_record`'s forms, joined by '+'; ``log:M`` counts M, which it
    builds), computed without enumerating them; None for a spec it cannot read (the config's own
    check names the problem)."""
    if not isinstance(spec, str) or not isinstance(steps, int):
        return None
    total = 0
    for part in spec.split("+"):
        kind, _, value = part.partition(":")
        try:
            if kind == "every":
                total += steps // max(int(value), 1) + 1
            elif kind == "log":
                total += int(value) + 1  # parse_record builds all M grid points, then dedups
            elif kind == "at":
                total += value.count(",") + 1
            elif kind == "range":
                first, last, k = (int(s) for s in value.split(":"))
                total += max(last - first, 0) // max(k, 1) + 1
            else:
                return None
        except ValueError:
            return None
    return total


def size_problems(values: Any, steps: Any = None, where: str = "") -> list[str]:
    """Steps above `MAX_STEPS` and record specs naming more than `MAX_RECORDED` steps anywhere in
    a page's parameters (nested studies included; a record spec is bounded with the ``steps``
    beside it, else the enclosing one). Cheap: nothing is built or enumerated."""
    problems = []
    if isinstance(values, dict):
        here = values.get("steps", steps)
        if _is_int(values.get("steps")) and values["steps"] > MAX_STEPS:
            problems.append(f"{where}steps must be <= {MAX_STEPS:,} (validation.MAX_STEPS); got "
                            f"{values['steps']!r}")
            here = None
        for key, value in values.items():
            if isinstance(key, str) and key.startswith("record") and isinstance(value, str) \
                    and _is_int(here):
                bound = record_points_bound(value, here)
                if bound is not None and bound > MAX_RECORDED:
                    problems.append(f"{where}{key}={value!r} records up to {bound:,} steps of "
                                    f"{here:,}; at most {MAX_RECORDED:,} (validation."
                                    f"MAX_RECORDED)")
            elif isinstance(value, (dict, list)):
                problems += size_problems(value, here, f"{where}{key}: ")
    elif isinstance(values, list):
        for item in values:
            problems += size_problems(item, steps, where)
    return problems
