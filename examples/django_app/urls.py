"""URL routes of the example Django project."""

from __future__ import annotations

from django.urls import path

from django_app import views

urlpatterns = [
    path("player/<int:n>", views.player),
    path("health", views.health),
]
