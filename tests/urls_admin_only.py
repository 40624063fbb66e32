"""The test project without the API: the admin and the widget page only (as without DRF)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

from tests.views import progress_page

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("progress/", progress_page, name="progress-page"),
]
