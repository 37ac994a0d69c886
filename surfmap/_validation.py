"""Checks of arguments at the public boundary, with one wording for every wrong type or value.

Each check returns the value converted (``int``, ``float``, the choice) or raises, with the message::

    NAME: expected WHAT; found VALUE. HINT

a :class:`~surfmap.exceptions.ParameterError` for a wrong value and an
:class:`~surfmap.exceptions.ArgumentTypeError` (a ParameterError that is also a TypeError) for a wrong type,
or the subclass passed as ``error`` (:mod:`learn` passes its ``ConfigError``, itself a ParameterError).
The command line rewrites ``NAME: expected`` into its flag (``--size: expected``), so keep the name first.

>>> check_int("size", 224, low=1)
224
>>> check_choice("method", "area", ("area", "conformal"))
'area'
>>> check_number("tol", 0, low=0, low_open=True)
Traceback (most recent call last):
...
surfmap.exceptions.ParameterError: tol: expected a finite number > 0; found 0
"""

from __future__ import annotations

import math
import numbers

from .exceptions import ArgumentTypeError, ParameterError

__all__ = ["check_choice", "check_instance", "check_int", "check_number", "invalid"]


def invalid(name: str, expected: str, found, *, hint: str | None = None, error=ParameterError):
    """The error to raise: ``name: expected EXPECTED; found FOUND. HINT`` (``found`` as given, not repr'd)."""
    return error(f"{name}: expected {expected}; found {found}" + (f". {hint}" if hint else ""))


def check_choice(name: str, value, choices, *, hint: str | None = None, error=ParameterError):
    """``value`` when it is one of ``choices``."""
    if not isinstance(value, (str, numbers.Number, type(None))) or value not in choices:
        raise invalid(name, f"one of {tuple(choices)}", repr(value), hint=hint, error=error)
    return value


def _range(kind: str, low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        if kind == "an integer" and not low_open and low in (0, 1):
            return "a non-negative integer" if low == 0 else "a positive integer"
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind


def _in_range(v, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (v < low or (low_open and v == low)):
        return False
    return high is None or not (v > high or (high_open and v == high))


def check_int(name: str, value, *, low=None, high=None, hint: str | None = None, error=ParameterError) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool, not a float) in ``[low, high]``."""
    expected = _range("an integer", low, high, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid(name, expected, repr(value), hint=hint, error=error)
    if not _in_range(int(value), low, high, False, False):
        raise invalid(name, expected, repr(value), hint=hint, error=error)
    return int(value)


def check_number(name: str, value, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                 finite: bool = True, hint: str | None = None, error=ParameterError) -> float:
    """``value`` as a ``float`` when it is a real number (not a bool) in the given range.

    ``low_open`` / ``high_open`` exclude the bound itself: ``low=0, low_open=True`` is "> 0". NaN is always
    refused, and infinities too unless ``finite=False``.
    """
    expected = _range("a finite number" if finite else "a number", low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or (
            finite and math.isinf(value)):
        raise invalid(name, expected, repr(value), hint=hint, error=error)
    if not _in_range(value, low, high, low_open, high_open):
        raise invalid(name, expected, repr(value), hint=hint, error=error)
    return float(value)


def check_instance(name: str, value, cls, *, expected: str | None = None, hint: str | None = None,
                   error=ArgumentTypeError):
    """``value`` when it is an instance of ``cls`` (a type or a tuple of types); the message names its type."""
    if not isinstance(value, cls):
        if expected is None:
            names = [c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,))]
            expected = ("an " if names[0][0].lower() in "aeiou" else "a ") + " or ".join(names)
        raise invalid(name, expected, type(value).__name__, hint=hint, error=error)
    return value
