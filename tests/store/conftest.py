"""Store fixtures: every test runs on SQLite and on PostgreSQL (a fresh schema per test)."""

from tests.utils.databases import db_url, pg_available, store  # noqa: F401 - fixtures
