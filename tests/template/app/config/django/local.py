"""Settings of the stand-in app, with the template's database and Celery settings.

As in the template (config/env.py, config/django/base.py, config/settings/celery.py):
django-environ reads .env, the database is ``env.db("DATABASE_URL")`` (so no
persistent connection: CONN_MAX_AGE 0), and celery-beat uses django-celery-beat's
DatabaseScheduler.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
if env.bool("READ_DOT_ENV_FILE", default=True):
    environ.Env.read_env(BASE_DIR / ".env")

SECRET_KEY = env("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_celery_beat",
    "apps.notes",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "config.urls"
DATABASES = {"default": env.db("DATABASE_URL", default="sqlite:///db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://redis:6379/0")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="redis://redis:6379/0")
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# One periodic task, so that beat, the worker and the database all take part: the
# DatabaseScheduler stores it in its tables, the worker writes one Tick row a run.
CELERY_BEAT_SCHEDULE = {"tick": {"task": "apps.notes.tasks.tick", "schedule": 2.0}}
