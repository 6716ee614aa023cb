"""WSGI entry point: ``gunicorn django_app.wsgi`` (from ``examples/``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

application = get_wsgi_application()

# Connect at start-up: under gunicorn --preload this runs in the master, before the fork.
from django_app.nebula import get_client  # noqa: E402

get_client()
