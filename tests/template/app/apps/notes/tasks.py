from celery import shared_task

from apps.notes.models import Tick


@shared_task
def tick() -> int:
    return Tick.objects.create().pk
