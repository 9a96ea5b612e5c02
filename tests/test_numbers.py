"""Honest digits (issue 19): bounds stay on their side of the reference, exact sign-test p-values,
no negative zero, no trailing zeros, counts that agree with their noun."""
import math

import pytest

from iteration_order.book.numbers import (add_ranges, honest, interval_text, listed, p_text,
                                          plural, range_text, sig, signed)


def test_a_bound_never_prints_as_or_across_the_reference():
    assert range_text(0.931, 1.04, 1.0) == "0.931 to 1.04"
    assert range_text(0.969, 1.03, 1.0, digits=2) == "0.97 to 1.03"
    assert range_text(0.9996, 1.0004, 1.0) == "0.9996 to 1.0004"
    assert honest(1.0004, 1.0) == "1.0004" and honest(0.99996, 1.0, 2) == "0.99996"
    assert honest(1.0, 1.0) == "1"  # exactly the reference: printed as it
    assert honest(-0.00004, 0.0, 1) == "-0.00004"
    assert range_text(-0.0421, 0.0656, 0.0) == "-0.0421 to 0.0656"
    for low, high in [(0.931, 1.04), (0.969, 1.03), (0.99951, 1.00049), (0.5, 0.99999)]:
        a, b = range_text(low, high, 1.0).split(" to ")
        assert float(a) < 1 and (float(b) > 1) == (high > 1) and float(b) != 1


def test_interval_text_keeps_both_bounds_off_one():
    text = interval_text(1.0002, 0.969, 1.03)
    assert text == "geometric mean 1.0002, 95% t-interval 0.969 to 1.03"
    assert interval_text(math.nan, math.nan, math.nan, "no seed has the ratio") == \
        "no seed has the ratio"
    assert interval_text(0.5, math.nan, math.nan, "no interval from 3 seeds") == \
        "geometric mean 0.5, no interval from 3 seeds"


def test_a_range_of_one_value_prints_once_with_its_unit():
    assert range_text(34.5, 34.5, unit="%") == "34.5%"
    assert range_text(78.6, 80.2, unit="%") == "78.6 to 80.2%"
    assert range_text(1.2341, 1.2342) == "1.2341 to 1.2342"  # different ends print differently
    assert range_text(math.nan, math.nan) == "n/a"


def test_p_values_are_exact_for_the_sign_test_floors():
    assert p_text(0.0625) == "0.0625" and p_text(0.03125) == "0.03125"
    assert p_text(1.0) == "1" and p_text(0.000002) == "0.000002"
    assert p_text(0.375) == "0.375" and p_text(0.0012345) == "0.0012"
    assert p_text(math.nan) == "n/a"


def test_no_negative_zero_and_no_trailing_zeros():
    assert sig(-0.0) == "0" and sig(-0.00001) == "-0.00001" and sig(0.0) == "0"
    assert signed(-0.0) == "0" and signed(0.00031) == "+0.00031" and signed(-0.0012) == "-0.0012"
    assert sig(0.5) == "0.5" and sig(12.5) == "12.5" and sig(12.50, 4) == "12.5"
    assert sig(380.8) == "381" and sig(7e-05) == "0.00007" and sig(2e-9) == "2e-9"
    assert sig(123456) == "123456" and sig(None) == "n/a"


def test_counts_agree_with_their_noun_and_lists_read_naturally():
    assert plural(1, "seed") == "1 seed" and plural(2, "seed") == "2 seeds"
    assert plural(1, "recorded step") == "1 recorded step" and plural(0, "seed") == "0 seeds"
    assert listed(["a"]) == "a" and listed(["a", "b"]) == "a and b"
    assert listed(["a", "b", "c"]) == "a, b and c" and listed([]) == ""


def test_add_ranges_adds_one_range_key_per_min_max_pair():
    numbers = {"x_min": 0.931, "x_max": 1.04, "d_diff_min": -0.1, "d_diff_max": 0.2,
               "acc_final_min": 34.5, "acc_final_max": 34.5, "lonely_min": 1.0}
    add_ranges(numbers, lambda k: 0.0 if "diff" in k else (None if "acc" in k else 1.0),
               lambda k: "%" if "acc" in k else "")
    assert numbers["x_range"] == "0.931 to 1.04" and numbers["d_diff_range"] == "-0.1 to 0.2"
    assert numbers["acc_final_range"] == "34.5%" and "lonely_range" not in numbers
