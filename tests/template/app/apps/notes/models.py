from django.db import models


class Tick(models.Model):
    """One row per run of the periodic task (beat schedules it, the worker runs it)."""

    at = models.DateTimeField(auto_now_add=True)
