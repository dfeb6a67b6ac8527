"""Range checks of numeric settings, for the Python API as for the CLI.

The command line checks its numbers with click's ``IntRange`` /
``FloatRange``; the library checks the same ranges itself, so that a
notebook user gets the same answer: an :class:`~end2you_visual.errors.InputError`
naming the option (``--margin: must be >= 0, got -1``), never a silently
wrong result (a negative margin makes all-black crops flagged as faces).
"""
import math
import numbers

from .errors import InputError

__all__ = ["check_choice", "check_number", "check_window"]


def check_number(option, value, minimum=None, maximum=None, *, integer=False,
                 min_open=False, max_open=False):
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
    low_ok = minimum is None or (value > minimum if min_open else value >= minimum)
    high_ok = maximum is None or (value < maximum if max_open else value <= maximum)
    if not (low_ok and high_ok):
        raise InputError(option, f"must be {_describe(minimum, maximum, min_open, max_open)}, "
                                 f"got {value!r}")
    return int(value) if integer else float(value)


def _describe(minimum, maximum, min_open, max_open):
    if maximum is None:
        return f"{'>' if min_open else '>='} {minimum:g}"
    if minimum is None:
        return f"{'<' if max_open else '<='} {maximum:g}"
    return (f"in {'(' if min_open else '['}{minimum:g}, "
            f"{maximum:g}{')' if max_open else ']'}")


def check_window(window, option="--window"):
    """A forward pass's window: None or 0 mean whole sequences (None is
    returned, as the CLI's ``--window 0``); else a whole number >= 1.

    Raises:
        InputError: naming ``option``, for anything else (a negative or
            fractional window, a string...).
    """
    if window is None or (isinstance(window, numbers.Real) and not isinstance(window, bool)
                          and window == 0):
        return None
    return check_number(option, window, 1, integer=True)


def check_choice(option, value, choices):
    """``value`` if it is one of ``choices``, else InputError naming ``option``."""
    if value not in choices:
        raise InputError(option, f"must be one of {list(choices)}, got {value!r}")
    return value
