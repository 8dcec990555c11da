import argparse
import math

import pytest

from squeeze_span.validation import Bounds, Choice, argument


@pytest.mark.parametrize(
    ("bounds", "integer", "description"),
    [
        (Bounds(min=2), True, "an integer >= 2"),
        (Bounds(above=0), False, "a finite number > 0"),
        (Bounds(min=0, max=1), False, "a finite number in [0, 1]"),
        (Bounds(min=0, below=1), False, "a finite number in [0, 1)"),
        (Bounds(above=0, max=1), False, "a finite number in (0, 1]"),
        (Bounds(max=10), True, "an integer <= 10"),
        (Bounds(), False, "a finite number"),
        (Bounds(min=4, power_of_two=True), True, "a power of two >= 4"),
    ],
)
def test_bounds_describe_what_they_accept(bounds, integer, description):
    assert bounds.describe(integer) == description


@pytest.mark.parametrize(
    ("bounds", "admitted", "refused"),
    [
        (Bounds(min=2), [2, 3, 10**9], [1, 0, -1]),
        (Bounds(min=0, max=1), [0.0, 0.5, 1.0], [-0.5, 1.5, math.nan, math.inf]),
        (Bounds(min=0, below=1), [0.0, 0.99], [1.0, -1e-9]),
        (Bounds(above=0), [1e-12, 1e9], [0.0, -1.0, math.inf]),
        (Bounds(), [-1e300, 0.0, 1e300], [math.nan, math.inf, -math.inf]),
        (Bounds(min=4, power_of_two=True), [4, 8, 1024], [2, 6, 48, 0, -8]),
        (Bounds(min=0), [0, 1], [True, "1", None]),  # a number, not a flag or a string
    ],
)
def test_bounds_admit_exactly_their_range(bounds, admitted, refused):
    assert all(bounds.admits(value) for value in admitted)
    assert not any(bounds.admits(value) for value in refused)


def test_a_choice_admits_only_its_options():
    rule = Choice(("fp32", "bf16"))
    assert rule.admits("bf16") and not rule.admits("fp16") and not rule.admits(None)
    assert rule.describe() == "one of fp32, bf16"


def test_an_argument_type_parses_within_bounds_and_refuses_the_rest_in_one_line():
    positive_int, finite_float = argument(int, min=1), argument(float)
    assert positive_int("3") == 3 and finite_float("-0.5") == -0.5
    for parse, text, message in [
        (positive_int, "0", "0 is out of range; it must be an integer >= 1"),
        (positive_int, "-2", "-2 is out of range; it must be an integer >= 1"),
        (positive_int, "2.5", "'2.5' is not an integer >= 1"),
        (finite_float, "nan", "nan is out of range; it must be a finite number"),
        (finite_float, "inf", "inf is out of range; it must be a finite number"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError) as error:
            parse(text)
        assert str(error.value) == message
