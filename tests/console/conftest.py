"""Console fixtures: the database fixtures (SQLite and PostgreSQL)."""

from tests.utils.databases import db_url, pg_available  # noqa: F401 - fixtures
