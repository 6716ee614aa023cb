"""Settings of the example Django project: no database, two views, graphd from the environment."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# Read by django_app.nebula when it creates the process's client.
NEBULA = {
    "HOSTS": os.environ.get("NEBULA_HOSTS", "127.0.0.1:9669"),
    "USER": os.environ.get("NEBULA_USER", "root"),
    "PASSWORD": os.environ.get("NEBULA_PASSWORD", "nebula"),
    "POOL_SIZE": int(os.environ.get("NEBULA_POOL_SIZE", "4")),
    "WEB_PORT": int(os.environ.get("NEBULA_WEB_PORT", "19669")),
}
