from django.db import connection
from django.http import HttpRequest, JsonResponse

from apps.notes.models import Tick


def health(request: HttpRequest) -> JsonResponse:
    """The template's HealthCheckView: 200 when the database answers, else 503."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "unhealthy"}, status=503)
    return JsonResponse({"status": "healthy"})


def ticks(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ticks": Tick.objects.count()})
