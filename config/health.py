"""Liveness and readiness probes (issue 6 completes /ready/)."""

from django.http import JsonResponse


def health(request):
    return JsonResponse({"status": "ok"})


def ready(request):
    from django.db import connection

    connection.ensure_connection()
    return JsonResponse({"status": "ok"})
