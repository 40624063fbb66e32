"""Who may see and act on a task over the API."""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from django_taskqueue.conf import conf

#: The model permission a staff member needs to take an action on someone else's task.
STAFF_ACTION_PERMISSIONS = {
    "cancel": "django_taskqueue.cancel_tasklog",
    "retry": "django_taskqueue.retry_tasklog",
}


class IsOwnerOrStaff(BasePermission):
    """The default policy: authenticated users act on their own tasks; staff see all.

    Which tasks exist for a user is decided by the queryset
    (:meth:`~django_taskqueue.querysets.TaskLogQuerySet.for_user`), so another
    user's task is a 404, not a 403. On top of that, a staff member who
    cancels or retries a task that is not theirs needs the model permission
    ``django_taskqueue.cancel_tasklog`` or ``django_taskqueue.retry_tasklog``
    (superusers have both).
    """

    message = "You may only act on your own tasks."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        user = request.user
        if obj.owner_id is not None and obj.owner_id == user.pk:
            return True
        if not (user.is_staff or user.is_superuser):
            return False
        if request.method in SAFE_METHODS:
            return True
        needed = STAFF_ACTION_PERMISSIONS.get(getattr(view, "action", "") or "")
        return needed is None or user.has_perm(needed)


def permission_classes() -> list[type[BasePermission]]:
    """The classes named by the ``API_PERMISSION_CLASSES`` setting (imported on each call)."""
    classes: list[type[BasePermission]] = [
        import_string(path) for path in conf.API_PERMISSION_CLASSES
    ]
    return classes
