"""The REST API of django-taskqueue (the ``[drf]`` extra).

Mount it with ``path("api/", include("django_taskqueue.api.urls"))``; see
``docs/api.md``. This subpackage is the only place that imports Django REST
Framework, django-filter and drf-spectacular, so the core works without them.
"""

from __future__ import annotations

try:
    import django_filters  # noqa: F401
    import drf_spectacular  # noqa: F401
    import rest_framework  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "django_taskqueue.api needs Django REST Framework, django-filter and drf-spectacular: "
        'pip install "django-taskqueue[drf]"'
    ) from exc
