"""Config package (as the template's: the Celery app loads with Django)."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
