"""PostgreSQL itself: psycopg admin work and the one place that runs pg_dump / pg_restore."""
