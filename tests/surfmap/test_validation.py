"""One wording and one error class for every wrong argument (surfmap._validation), in surfmap and learn."""

import numpy as np
import pytest

from surfmap._validation import check_choice, check_instance, check_int, check_number, invalid
from surfmap.exceptions import ArgumentTypeError, ParameterError, SurfmapError


@pytest.mark.parametrize("value, kwargs, expected", [
    (3, {}, 3), (np.int64(7), {"low": 1}, 7), (0, {"low": 0}, 0), (5, {"low": 2, "high": 5}, 5),
])
def test_check_int_accepts(value, kwargs, expected):
    out = check_int("n", value, **kwargs)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {"low": 1}, "n: expected a positive integer; found 0"),
    (-1, {"low": 0}, "n: expected a non-negative integer; found -1"),
    (1, {"low": 2}, "n: expected an integer >= 2; found 1"),
    (6, {"low": 2, "high": 5}, r"n: expected an integer in \[2, 5\]; found 6"),
    (2.0, {}, "n: expected an integer; found 2.0"),
    (True, {}, "n: expected an integer; found True"),
    ("3", {}, "n: expected an integer; found '3'"),
])
def test_check_int_refuses(value, kwargs, message):
    with pytest.raises(ParameterError, match=f"^{message}$"):
        check_int("n", value, **kwargs)


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {"low": 0, "low_open": True}, "tol: expected a finite number > 0; found 0"),
    (1.0, {"low": 0, "high": 1, "low_open": True, "high_open": True},
     r"tol: expected a finite number in \(0, 1\); found 1.0"),
    (float("nan"), {}, "tol: expected a finite number; found nan"),
    (float("inf"), {"low": 0}, "tol: expected a finite number >= 0; found inf"),
    (float("nan"), {"finite": False}, "tol: expected a number; found nan"),
    (False, {}, "tol: expected a finite number; found False"),
    (None, {}, "tol: expected a finite number; found None"),
])
def test_check_number_refuses(value, kwargs, message):
    with pytest.raises(ParameterError, match=f"^{message}$"):
        check_number("tol", value, **kwargs)


def test_check_number_accepts():
    assert check_number("tol", np.float32(0.5), low=0, high=1, low_open=True) == 0.5
    assert check_number("tol", 1, high=1) == 1.0
    assert check_number("tol", float("inf"), finite=False) == float("inf")


def test_check_choice():
    assert check_choice("mode", "area", ("barycentric", "area")) == "area"
    with pytest.raises(ParameterError, match=r"^mode: expected one of \('barycentric', 'area'\); found 'pixel'$"):
        check_choice("mode", "pixel", ["barycentric", "area"])
    with pytest.raises(ParameterError, match="found \\['area'\\]"):  # unhashable: still the same message
        check_choice("mode", ["area"], ("barycentric", "area"))


def test_check_instance_is_a_type_error_and_a_parameter_error():
    assert check_instance("x", 1.5, (int, float)) == 1.5
    with pytest.raises(ArgumentTypeError, match="^x: expected an int or float; found str$") as info:
        check_instance("x", "a", (int, float))
    assert isinstance(info.value, TypeError) and isinstance(info.value, ParameterError)


def test_invalid_with_hint_and_error_class():
    class MyError(ParameterError):
        pass

    err = invalid("size", "a positive integer", 0, hint="Pass e.g. 224", error=MyError)
    assert isinstance(err, MyError) and str(err) == "size: expected a positive integer; found 0. Pass e.g. 224"


def test_learn_config_error_is_a_parameter_error():
    from learn import ConfigError

    assert issubclass(ConfigError, ParameterError) and issubclass(ConfigError, SurfmapError)
    assert issubclass(ConfigError, ValueError)
