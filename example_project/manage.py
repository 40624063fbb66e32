#!/usr/bin/env python
"""Django's command-line utility for the example project.

``python example_project/manage.py demo`` runs the whole demo; see docs/example.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def main() -> None:
    """Run a management command with the example project's settings."""
    here = Path(__file__).resolve().parent
    # Started as ``python example_project/manage.py`` Python already puts this folder first
    # on sys.path; started any other way (runpy, a debugger) it may not.
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    # Run from a checkout where the package is not installed: use the checkout's copy.
    if importlib.util.find_spec("django_taskqueue") is None:
        sys.path.append(str(here.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
