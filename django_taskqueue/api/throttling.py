"""Opt-in throttling of the write endpoints and of opening event streams."""

from __future__ import annotations

from typing import cast

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle, SimpleRateThrottle
from rest_framework.views import APIView

#: The throttle scope of each write action of the task API.
THROTTLE_SCOPES = {
    "create_task": "taskqueue_create",
    "bulk_create": "taskqueue_create",
    "cancel": "taskqueue_control",
    "retry": "taskqueue_control",
    "stream": "taskqueue_stream",
}

#: Actions that also count against other scopes: a re-run starts a task, so
#: it spends the caller's ``taskqueue_create`` budget as well as its own.
ALSO_THROTTLED_AS: dict[str, tuple[str, ...]] = {"retry": ("taskqueue_create",)}


class TaskQueueScopedRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle, on only for the scopes the host gives a rate.

    Set ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["taskqueue_create"]`` (and
    ``"taskqueue_control"``, ``"taskqueue_stream"``) to limit them; a scope without a rate is not
    throttled (DRF's own class would raise ``ImproperlyConfigured`` instead).

    Args:
        scope: count against this scope instead of the view's ``throttle_scope``
            (see :data:`ALSO_THROTTLED_AS`).
    """

    def __init__(self, scope: str | None = None) -> None:
        super().__init__()
        self.fixed_scope = scope

    def allow_request(self, request: Request, view: APIView) -> bool:
        # Read the rates live: the class attribute is bound when DRF is imported.
        self.THROTTLE_RATES = cast("dict[str, str | None]", api_settings.DEFAULT_THROTTLE_RATES)
        # ScopedRateThrottle's own steps, with the scope given or the view's.
        self.scope = self.fixed_scope or getattr(view, self.scope_attr, None)
        if not self.scope or self.scope not in self.THROTTLE_RATES:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return SimpleRateThrottle.allow_request(self, request, view)


def client_ident(request: Request) -> str:
    """Who a per-client limit counts: the user, or the address of an anonymous client.

    The address is DRF's (``REMOTE_ADDR``, or ``X-Forwarded-For`` behind
    ``NUM_PROXIES`` proxies), as for DRF's own throttles.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"address:{BaseThrottle().get_ident(request)}"
