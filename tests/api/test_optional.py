"""Without the [drf] extra, importing the API says what to install."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_a_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("django_taskqueue.api")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rest_framework", None)
    with pytest.raises(ImportError, match=r'pip install "django-taskqueue\[drf\]"'):
        importlib.import_module("django_taskqueue.api")
