"""URLs of the jobs app."""

from __future__ import annotations

from django.urls import path

from jobs import views

urlpatterns = [
    path("", views.home, name="home"),
    path("reports/<str:celery_task_id>/download/", views.download_report, name="report-download"),
]
