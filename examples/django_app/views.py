"""Views of the example Django project: each request uses the process's shared client."""

from __future__ import annotations

import os
from typing import Any, Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from django_app.nebula import get_client
from nebula_sync.errors import NebulaError, PoolTimeout


def _nebula_errors(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """Answer 503 when no session was free in time, 502 for any other client or graphd error."""

    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except NebulaError as exc:
            status = 503 if isinstance(exc, PoolTimeout) else 502
            return JsonResponse({"error": type(exc).__name__, "message": str(exc)}, status=status)

    return wrapped


@_nebula_errors
def player(request: HttpRequest, n: int) -> JsonResponse:
    """``RETURN $n AS n, ...`` as JSON, with the id of the process that served it."""
    rs = get_client().execute('RETURN $n AS n, "player" + $n AS name, $pid AS pid',
                              {"n": n, "pid": os.getpid()})
    row = rs.one().as_dict()
    row["host"] = rs.host
    return JsonResponse(row)


@_nebula_errors
def health(request: HttpRequest) -> JsonResponse:
    """Every graphd's web ``/status`` and a Thrift ping: 200 if all are healthy, else 503."""
    report = get_client().health(web_port=settings.NEBULA["WEB_PORT"], timeout=2.0)
    return JsonResponse(report.as_dict(), status=200 if report.healthy else 503)
