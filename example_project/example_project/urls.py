"""URLs of the example project: the admin, the jobs pages and, when installed, the API."""

from __future__ import annotations

import importlib

from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("", include("jobs.urls")),
]


def _api_available() -> bool:
    # The API needs the drf extra; without it the rest of the site still runs.
    if not settings.HAS_DRF:
        return False
    try:
        importlib.import_module("django_taskqueue.api.urls")
    except ModuleNotFoundError as exc:
        # Only "this django-taskqueue has no API module" means no API; any other missing
        # module is a real error and should say so.
        if exc.name in {"django_taskqueue.api", "django_taskqueue.api.urls"}:
            return False
        raise
    return True


#: Whether the API is served at /api/ (it needs the drf extra).
API_MOUNTED = _api_available()

if API_MOUNTED:
    from drf_spectacular.views import (
        SpectacularAPIView,
        SpectacularRedocView,
        SpectacularSwaggerView,
    )

    urlpatterns += [
        path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
        path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
        path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
        path("api/", include("django_taskqueue.api.urls")),
    ]
