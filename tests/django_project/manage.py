"""A small Django project for velocity-pg's migration tests (tests/test_migrations.py).

Two apps with a few migrations; the database comes from DATABASE_URL, as in the Django
Velocity template (which reads it with django-environ).
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
