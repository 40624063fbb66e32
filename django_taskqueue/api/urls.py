"""URLs of the task API: ``path("api/", include("django_taskqueue.api.urls"))``.

Gives ``tasks/`` and everything under it (see ``docs/api.md``); the URL names
are ``django_taskqueue_api:tasklog-list``, ``...:tasklog-detail``,
``...:tasklog-cancel`` and so on.
"""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from django_taskqueue.api.views import TaskLogViewSet

app_name = "django_taskqueue_api"

router = SimpleRouter()
router.register("tasks", TaskLogViewSet, basename="tasklog")

urlpatterns = router.urls
