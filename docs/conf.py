"""Sphinx configuration for the django-taskqueue documentation.

Build: ``tox -e docs`` (or ``sphinx-build -W --keep-going -b html docs docs/_build/html``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# autodoc imports django_taskqueue, and its models need a configured Django: use the test
# settings, found on the repo root (they live in tests/settings.py).
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

if (ROOT / "tests" / "settings.py").exists():
    import django

    django.setup()
else:  # pragma: no cover - only before tests/settings.py exists
    print("docs/conf.py: tests/settings.py not found, Django is not set up for autodoc")


def _version() -> str:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return "dev"
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# -- Project ------------------------------------------------------------------------------

project = "django-taskqueue"
author = "django-taskqueue contributors"
copyright = "2026, django-taskqueue contributors"
release = _version()
version = release

# -- General ------------------------------------------------------------------------------

# No sphinx.ext.intersphinx: the docs are built without internet access, and intersphinx
# would have to fetch the Django, Celery and DRF inventories (a failed fetch is a warning,
# which -W turns into an error).
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Google-style docstrings only.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}

# -- HTML ---------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"django-taskqueue {release}"
# "Edit this page" and "view source" links (the same address as [project.urls] Source).
html_theme_options = {
    "source_repository": "https://github.com/django-taskqueue/django-taskqueue",
    "source_branch": "main",
    "source_directory": "docs/",
}
