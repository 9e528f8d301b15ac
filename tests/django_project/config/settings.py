"""Settings: only what migrate needs; the database is DATABASE_URL's."""

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ["DATABASE_URL"])
if _url.scheme not in ("postgres", "postgresql"):
    raise RuntimeError("DATABASE_URL is not a PostgreSQL URL")

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["shop", "blog"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
