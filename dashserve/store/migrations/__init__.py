"""Alembic migrations for the dashserve schema (run by ``store.db.upgrade_to_head``)."""
