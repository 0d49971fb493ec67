"""Value checks for the public boundaries (ops, supernets, configs, schedules, options, data, checkpoints).

Every check names the argument, shows the value and says what is allowed. A value of the wrong type raises
`WrongType`, which is both a TypeError (Python's convention) and a ValueError, so a caller that reports bad
input with `except ValueError` (the command line does) catches every bad argument alike. Internal code
with a single caller uses `assert` instead.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence


class WrongType(TypeError, ValueError):
    """An argument of the wrong type (also a ValueError: see the module docstring)."""


def integer(name: str, value, *, minimum: Optional[int] = None, maximum: Optional[int] = None,
            allowed: Optional[str] = None) -> int:
    """An int (numpy ints too, never bool) within [minimum, maximum]; `allowed` overrides the description."""
    if allowed is None:
        bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
        allowed = " ".join(["an integer", " and ".join(b for b in bounds if b)]).strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise WrongType(f"{name} must be an integer ({allowed}), got {value!r} of type {type(value).__name__}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def positive_int(name: str, value) -> int:
    return integer(name, value, minimum=1, allowed="a positive integer")


def real(name: str, value, allowed: str = "a finite number", ok: Callable[[float], bool] = lambda v: True) -> float:
    """A finite real number (ints too, never bool) for which ok(value) holds; `allowed` describes the rule."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WrongType(f"{name} must be {allowed}, got {value!r} of type {type(value).__name__}")
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def positive(name: str, value) -> float:
    return real(name, value, "a finite number > 0", lambda v: v > 0)


def non_negative(name: str, value) -> float:
    return real(name, value, "a finite number >= 0", lambda v: v >= 0)


def fraction(name: str, value, *, include_zero: bool = True, include_one: bool = False) -> float:
    """A number in [0, 1), or with the other ends as asked."""
    lo, hi = ("[" if include_zero else "("), ("]" if include_one else ")")
    return real(name, value, f"a number in {lo}0, 1{hi}",
                lambda v: (v >= 0 if include_zero else v > 0) and (v <= 1 if include_one else v < 1))


def boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise WrongType(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")
    return value


def one_of(name: str, value, choices: Sequence):
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {choices!r}, got {value!r}")
    return value


def int_choices(name: str, values, *, odd: bool = False, distinct: bool = False) -> tuple[int, ...]:
    """A non-empty sequence of positive ints (odd ones if asked; distinct if asked), returned sorted."""
    what = ("distinct " if distinct else "") + ("odd positive integers" if odd else "positive integers")
    items = tuple(values) if isinstance(values, Sequence) and not isinstance(values, (str, bytes)) else None
    good = items and all(not isinstance(v, bool) and isinstance(v, numbers.Integral) and v > 0
                         and (not odd or v % 2 == 1) for v in items)
    if not good or (distinct and len(set(items)) != len(items)):
        raise ValueError(f"{name} must be a non-empty sequence of {what}, got {values!r}")
    return tuple(sorted(int(v) for v in items))
