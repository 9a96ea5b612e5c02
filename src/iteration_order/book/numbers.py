"""How the book prints a number: one place for significant figures, honest ranges and lists.

Every page's prose, captions and tables print numbers through these helpers, so that

* a value is shown to significant figures without trailing zeros ("12.5", "0.5"), never as
  "-0.0000" (a value that rounds to zero is "0");
* a bound or range end compared with a reference (a ratio with 1, a difference with 0) never
  prints as the reference or on its other side: digits are added until it is strictly on its own
  side ("0.931 to 1.04", not "0.93 to 1");
* a p-value is exact where a few digits make it so (the sign test's 0.0625, 0.03125), else two
  significant figures;
* counts agree with their noun ("1 seed", "2 seeds") and lists read "a, b and c".
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

__all__ = ["sig", "signed", "honest", "range_text", "p_text", "listed", "plural",
           "interval_text", "add_ranges", "MAX_DIGITS"]

MAX_DIGITS = 12  # most significant figures any helper adds to keep a bound on its own side


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def sig(value, digits: int = 3, missing: str = "n/a") -> str:
    """``value`` to ``digits`` significant figures, without trailing zeros or an exponent for
    |value| in [1e-6, 1e15): 12.5, 0.5, 0.000002, 380; zero (or -0.0) is "0"; NaN or None is
    ``missing``; integers (and floats equal to one of 15 or fewer digits) print whole."""
    if not _finite(value):
        return missing
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")
    if rounded == 0:
        return "0"
    if 1e-6 <= abs(rounded) < 1e15:
        text = f"{rounded:.{max(0, digits - 1 - math.floor(math.log10(abs(rounded))))}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        return "0" if text in ("-0", "0") else text
    mantissa, exponent = f"{rounded:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}e{int(exponent)}"


def signed(value, digits: int = 2, missing: str = "n/a") -> str:
    """`sig` with an explicit sign for a difference: "+0.00031", "-0.0012", and "0" for zero
    (never "+0" or "-0")."""
    text = sig(value, digits, missing)
    if text in ("0", missing) or text.startswith("-"):
        return text
    return "+" + text


def honest(value, reference: float | None = None, digits: int = 3,
           missing: str = "n/a") -> str:
    """`sig` of ``value``, with digits added (up to `MAX_DIGITS`) until the printed number lies on
    the same side of ``reference`` as the value itself: 1.04 to 3 figures stays "1.04", but
    1.0004 prints "1.0004", not "1", and 0.9996 prints "0.9996", not "1". A value exactly equal
    to the reference prints as it. ``reference`` None: plain `sig`."""
    text = sig(value, digits, missing)
    if reference is None or not _finite(value):
        return text
    value = float(value)
    side = (value > reference) - (value < reference)
    while digits < MAX_DIGITS:
        shown = float(text)
        if (shown > reference) - (shown < reference) == side:
            return text
        digits += 1
        text = sig(value, digits, missing)
    return text


def _ends(low, high, reference, digits):
    a, b = honest(low, reference, digits), honest(high, reference, digits)
    while a == b and float(low) != float(high) and digits < MAX_DIGITS:
        digits += 1
        a, b = honest(low, reference, digits), honest(high, reference, digits)
    return a, b


def range_text(low, high, reference: float | None = None, digits: int = 3, unit: str = "",
               joint: str = " to ", missing: str = "n/a") -> str:
    """A range of per-seed values as the prose quotes it: "0.931 to 1.04" (each end `honest`
    with respect to ``reference``), "34.5%" where both ends are equal (a single value, ``unit``
    after it), ``missing`` where neither end is finite. Ends that differ always print differently
    (digits are added)."""
    if not _finite(low) and not _finite(high):
        return missing
    if not _finite(low) or not _finite(high):
        return honest(low if _finite(low) else high, reference, digits) + unit
    if float(low) == float(high):
        return honest(low, reference, digits) + unit
    a, b = _ends(low, high, reference, digits)
    return f"{a}{joint}{b}{unit}"


def p_text(p, missing: str = "n/a") -> str:
    """A p-value: a sign test's p (a multiple of 2⁻²⁰: 2·0.5ⁿ and its binomial sums, 0.0625,
    0.03125, 0.375, 1) exactly where at most 5 significant figures make it exact, any other p to 2
    significant figures (0.0012); 0.000002 prints "0.000002"."""
    if not _finite(p):
        return missing
    p = float(p)
    dyadic = (p * 2 ** 20).is_integer()
    for digits in range(1, 6 if dyadic else 1):
        if float(f"{p:.{digits}g}") == p:
            return sig(p, digits)
    return sig(p, 2)


def listed(items: Iterable, last: str = "and") -> str:
    """Items in words: "a", "a and b", "a, b and c"; "" for none."""
    items = [str(item) for item in items]
    if len(items) <= 1:
        return items[0] if items else ""
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def plural(n: int, word: str, many: str | None = None) -> str:
    """A count with its noun: "1 seed", "2 seeds", "0 seeds", "1 recorded step"."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def interval_text(ratio, low, high, note: str = "", level: float = 0.95,
                  reference: float = 1.0) -> str:
    """A geometric mean with its t-interval, each bound honest with respect to ``reference``:
    "geometric mean 1.01, 95% t-interval 0.969 to 1.03"; without an interval, the mean and
    ``note`` (why there is none); without a mean, the note alone."""
    if _finite(low) and _finite(high):
        a, b = _ends(low, high, reference, 3)
        return (f"geometric mean {honest(ratio, reference)}, {level:.0%} t-interval "
                f"{a} to {b}")
    if _finite(ratio):
        return f"geometric mean {honest(ratio, reference)}, {note}" if note else \
            f"geometric mean {honest(ratio, reference)}"
    return note


_PAIR = re.compile(r"^(.*)_min$")


def add_ranges(numbers: dict, reference: Callable[[str], float | None] = lambda prefix: None,
               unit: Callable[[str], str] = lambda prefix: "", digits: int = 3) -> dict:
    """For every ``X_min`` with an ``X_max`` in ``numbers``, add ``X_range`` (`range_text`, with
    ``reference(X)`` and ``unit(X)``) unless the key exists; returns ``numbers``."""
    for key in list(numbers):
        match = _PAIR.match(key)
        if not match or f"{match.group(1)}_max" not in numbers:
            continue
        prefix = match.group(1)
        if f"{prefix}_range" in numbers:
            continue
        low, high = numbers[key], numbers[f"{prefix}_max"]
        if isinstance(low, str) or isinstance(high, str):
            continue
        numbers[f"{prefix}_range"] = range_text(low, high, reference(prefix), digits,
                                                unit(prefix))
    return numbers


def rounded(frame, digits: int = 4):
    """A table's numeric columns rounded to ``digits`` decimals, with no negative zero: a value
    that rounds to zero prints "0.0000", never "-0.0000" (adding 0.0 turns -0.0 into +0.0)."""
    numeric = frame.select_dtypes("number").columns
    out = frame.copy()
    out[numeric] = out[numeric].round(digits) + 0.0
    return out
