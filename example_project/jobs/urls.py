"""URLs of the jobs app: the home page, sign-in, starting a sample task, report downloads."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from jobs import views

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="jobs/login.html"),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="home"), name="logout"),
    path("start/", views.start_task, name="start-task"),
    path("reports/<str:celery_task_id>/download/", views.download_report, name="report-download"),
]
