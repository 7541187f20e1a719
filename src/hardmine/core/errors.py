"""Errors that name the config key, the value and what was expected."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Where the mining settings live in a hardmine YAML config.
MINING_KEY = "custom.hard_sample_mining"


class UserInputError(ValueError):
    """Bad input from the user (config, data, paths, arguments), not a bug.

    The message names the file:line or the dotted key, the value and what was
    expected; the command line prints it alone and exits 2.
    """


class SettingError(UserInputError):
    """A setting has a value outside what hardmine accepts."""

    def __init__(self, key: str, value: Any, expected: str):
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{key}: got {value!r}; expected {expected}")


def check_range(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise :class:`SettingError` unless ``value`` lies in the given interval."""
    kind = "an integer" if integer else "a finite number"
    integral = isinstance(value, (int, np.integer))
    numeric = integral or isinstance(value, (float, np.floating))
    if isinstance(value, (bool, np.bool_)) or not numeric or (integer and not integral) or not math.isfinite(value):
        raise SettingError(key, value, f"{kind}{_interval(low, high, low_open, high_open)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise SettingError(key, value, f"{kind}{_interval(low, high, low_open, high_open)}")


def _interval(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
