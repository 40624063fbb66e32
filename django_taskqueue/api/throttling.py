"""Opt-in throttling of the write endpoints and of opening event streams."""

from __future__ import annotations

from typing import cast

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView

#: The throttle scope of each write action of the task API.
THROTTLE_SCOPES = {
    "create_task": "taskqueue_create",
    "bulk_create": "taskqueue_create",
    "cancel": "taskqueue_control",
    "retry": "taskqueue_control",
    "stream": "taskqueue_stream",
}


class TaskQueueScopedRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle, on only for the scopes the host gives a rate.

    Set ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["taskqueue_create"]`` (and
    ``"taskqueue_control"``, ``"taskqueue_stream"``) to limit them; a scope without a rate is not
    throttled (DRF's own class would raise ``ImproperlyConfigured`` instead).
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        # Read the rates live: the class attribute is bound when DRF is imported.
        self.THROTTLE_RATES = cast("dict[str, str | None]", api_settings.DEFAULT_THROTTLE_RATES)
        scope = getattr(view, self.scope_attr, None)
        if not scope or scope not in self.THROTTLE_RATES:
            return True
        return super().allow_request(request, view)


def client_ident(request: Request) -> str:
    """Who a per-client limit counts: the user, or the address of an anonymous client.

    The address is DRF's (``REMOTE_ADDR``, or ``X-Forwarded-For`` behind
    ``NUM_PROXIES`` proxies), as for DRF's own throttles.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"address:{BaseThrottle().get_ident(request)}"
