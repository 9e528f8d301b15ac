"""velocity-pg: safe PostgreSQL backups, restores and retention for Django Velocity."""

__version__ = "0.1.0"
