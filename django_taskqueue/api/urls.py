"""URLs of the task API: ``path("api/", include("django_taskqueue.api.urls"))``.

Gives ``tasks/`` and everything under it (see ``docs/api.md``); the URL names
are ``django_taskqueue_api:tasklog-list``, ``...:tasklog-detail``,
``...:tasklog-cancel`` and so on.
"""

from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from django_taskqueue.api.views import TaskLogViewSet, not_found

app_name = "django_taskqueue_api"

router = SimpleRouter()
router.register("tasks", TaskLogViewSet, basename="tasklog")

urlpatterns = [
    *router.urls,
    # Anything else under tasks/ (an id that is not a UUID, an unknown action)
    # is a 404 in JSON, like every other error of the API. Only paths that end
    # with a slash: CommonMiddleware still redirects the others to add one.
    re_path(r"^tasks/.+/$", not_found),
]
