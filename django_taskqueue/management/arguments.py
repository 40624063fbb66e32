"""Argument types shared by the management commands.

An argument out of range is refused by argparse itself: ``manage.py`` prints
the usage and exits with status 2, and ``call_command`` raises a
:class:`~django.core.management.CommandError`, instead of an ``OverflowError``
or a database error once the value reaches a query.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return integer
