"""Ranges of numeric settings, one encoding for the Python API and the CLI.

A :class:`Range` says which numbers a setting takes (bounds, open or
closed, whole numbers or not). The library checks its arguments with
:meth:`Range.check`, so that a notebook user gets the same answer as the
command line: an :class:`~end2you_visual.errors.InputError` naming the
option (``--margin: must be >= 0, got -1``), never a silently wrong result
(a negative margin makes all-black crops flagged as faces). The command
line builds its options' types from the same object
(:meth:`Range.click_type`: a ``click.IntRange`` or ``click.FloatRange``).

The ranges are defined where their settings are: the face settings' in
:mod:`end2you_visual.face_settings`, the training settings' in
:data:`end2you_visual.training.config.RANGES`; the generic ones shared by
several options (a count, an index, a frame rate...) here.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Literal, Optional, Union, cast, overload

from .errors import InputError

if TYPE_CHECKING:  # click is imported when a command line asks for a type
    import click

__all__ = ["Range", "COUNT", "INDEX", "NON_NEGATIVE", "POSITIVE", "WINDOW",
           "check_choice", "check_number", "check_window"]

Number = Union[int, float]


@dataclass(frozen=True)
class Range:
    """The numbers a setting takes: ``low``..``high`` (None: unbounded on
    that side), each bound included unless ``low_open`` / ``high_open``;
    whole numbers only when ``integer``.

    >>> Range(0, 1, high_open=True).text()
    'in [0, 1)'
    """

    low: Optional[Number] = None
    high: Optional[Number] = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def check(self, option: Optional[str], value: Any) -> Number:
        """``value`` as an int (``integer``) or a float, if it lies in the
        range; else InputError naming ``option`` (see :func:`check_number`)."""
        return check_number(option, value, self.low, self.high, integer=self.integer,
                            min_open=self.low_open, max_open=self.high_open)

    def contains(self, value: Number) -> bool:
        """Whether the finite number ``value`` lies between the bounds (its
        type is not looked at: a float in an integer range may be in it)."""
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self) -> str:
        """The range as messages say it: ``>= 1``, ``> 0``, ``<= 5``, ``in [0, 1)``;
        ``any number`` when unbounded."""
        return _describe(self.low, self.high, self.low_open, self.high_open)

    def click_type(self) -> "click.ParamType":
        """The command line's type for this range: a ``click.IntRange``
        (``integer``) or ``click.FloatRange``, with the same bounds."""
        import click

        if self.integer:
            return click.IntRange(min=cast(Optional[int], self.low),
                                  max=cast(Optional[int], self.high),
                                  min_open=self.low_open, max_open=self.high_open)
        return click.FloatRange(min=self.low, max=self.high, min_open=self.low_open,
                                max_open=self.high_open)


#: A whole number >= 1: workers, lanes, shard counts, batch and shard sizes.
COUNT = Range(1, integer=True)
#: A whole number >= 0: a shard's index (its upper bound is the count).
INDEX = Range(0, integer=True)
#: Any finite number >= 0 (seconds of tolerance...).
NON_NEGATIVE = Range(0)
#: Any finite number > 0 (frame rates...).
POSITIVE = Range(0, low_open=True)
#: Frames per forward pass: a whole number >= 1, or 0 for whole sequences
#: (:func:`check_window`).
WINDOW = Range(0, integer=True)


@overload
def check_number(option: Optional[str], value: Any, minimum: Optional[Number] = ...,
                 maximum: Optional[Number] = ..., *, integer: Literal[True],
                 min_open: bool = ..., max_open: bool = ...) -> int: ...


@overload
def check_number(option: Optional[str], value: Any, minimum: Optional[Number] = ...,
                 maximum: Optional[Number] = ..., *, integer: Literal[False] = ...,
                 min_open: bool = ..., max_open: bool = ...) -> float: ...


@overload
def check_number(option: Optional[str], value: Any, minimum: Optional[Number] = ...,
                 maximum: Optional[Number] = ..., *, integer: bool,
                 min_open: bool = ..., max_open: bool = ...) -> Number: ...


def check_number(option: Optional[str], value: Any, minimum: Optional[Number] = None,
                 maximum: Optional[Number] = None, *, integer: bool = False,
                 min_open: bool = False, max_open: bool = False) -> Number:
    """``value`` as an int (``integer``) or a float, if it lies in the range.

    Args:
        option: the name shown in the message (``"--margin"``).
        value: the number to check (a bool, a NaN or an infinity is refused).
        minimum, maximum: the bounds (None: unbounded on that side).
        integer: the value must be a whole number.
        min_open, max_open: the bound itself is excluded.

    Raises:
        InputError: naming ``option``, the range and the value.
    """
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or (integer and not whole):
        kind = "a whole number" if integer else "a finite number"
        raise InputError(option, f"must be {kind}, got {value!r}")
    number = cast(float, value)  # a real number (an int stays an int)
    low_ok = minimum is None or (number > minimum if min_open else number >= minimum)
    high_ok = maximum is None or (number < maximum if max_open else number <= maximum)
    if not (low_ok and high_ok):
        raise InputError(option, f"must be {_describe(minimum, maximum, min_open, max_open)}, "
                                 f"got {value!r}")
    return int(number) if integer else float(number)


def _describe(minimum: Optional[Number], maximum: Optional[Number], min_open: bool,
              max_open: bool) -> str:
    if minimum is None and maximum is None:
        return "any number"
    if maximum is None:
        return f"{'>' if min_open else '>='} {minimum:g}"
    if minimum is None:
        return f"{'<' if max_open else '<='} {maximum:g}"
    return (f"in {'(' if min_open else '['}{minimum:g}, "
            f"{maximum:g}{')' if max_open else ']'}")


def check_window(window: Any, option: str = "--window") -> Optional[int]:
    """A forward pass's window (:data:`WINDOW`): None or 0 mean whole
    sequences (None is returned, as the CLI's ``--window 0``); else a whole
    number >= 1.

    Raises:
        InputError: naming ``option``, for anything else (a negative or
            fractional window, a string...).
    """
    if window is None or (isinstance(window, numbers.Real) and not isinstance(window, bool)
                          and window == 0):
        return None
    return int(COUNT.check(option, window))


def check_choice(option: Optional[str], value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``, else InputError naming ``option``."""
    if value not in choices:
        raise InputError(option, f"must be one of {list(choices)}, got {value!r}")
    return value
