"""Argument types shared by the command lines: numbers a command can actually use.

``argparse`` turns a ``ValueError``/``ArgumentTypeError`` from a type function into one line,
``error: argument --epochs: must be at least 1, not 0``, and exit status 2.
"""

from __future__ import annotations

import argparse


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def at_least(low: int):
    """A type function for integers ``>= low``."""

    def check(text: str) -> int:
        value = whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    check.__name__ = f"integer >= {low}"
    return check


def folds(text: str) -> int:
    """Out-of-fold synthetic maps need 0 (in-sample) or at least 2 folds."""
    value = whole_number(text)
    if value == 1 or value < 0:
        raise argparse.ArgumentTypeError(f"0 (in-sample) or at least 2, not {value}")
    return value


def port(text: str) -> int:
    """A TCP port to listen on: 1-65535."""
    value = whole_number(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {value}")
    return value
