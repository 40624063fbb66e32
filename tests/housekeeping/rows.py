"""Kept for tests/faults/test_cleanup_overlap.py only: the rows come from :mod:`tests.factories`.

Delete this module once that test imports ``factories.many_finished`` itself.
"""

from tests.factories import many_finished

__all__ = ["many_finished"]
