"""Table definitions: api_keys, usage_records, usage_daily and files (SQLAlchemy Core)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Stable constraint names so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    # Visible start of the secret ("sk-1a2b3c4d"), safe to show and log.
    Column("prefix", String(32), nullable=False, index=True),
    # sha256 hex of the whole secret; the secret itself is never stored.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("workspace", String(200), nullable=False),
    # Comma-separated model names; NULL means every model.
    Column("allowed_models", Text, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # Written by the metering queue once per record; makes a retried batch idempotent.
    Column("record_id", String(32), nullable=False, unique=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("key_id", String(32), nullable=True),
    Column("key_prefix", String(32), nullable=False),
    Column("workspace", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("image_tokens", Integer, nullable=True),  # None for requests without images
    Column("finish_reason", String(32), nullable=True),
    Column("status_code", Integer, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("search_count", Integer, nullable=False, server_default="0"),
    Index(None, "key_id", "created_at"),
    Index(None, "model", "created_at"),
)

# One row per (UTC day, workspace, key, model); "" stands for "none" so the key is total.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("workspace", String(200), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("key_prefix", String(32), nullable=False),
    Column("num_requests", Integer, nullable=False),
    Column("num_errors", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
)

# Uploaded documents (files API). The bytes and the extracted text live in the blob store
# under ``blob_key``; a row exists only once both are written, so every row is complete.
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace", String(200), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("description", Text, nullable=True),
    Column("bytes", BigInteger, nullable=False),
    Column("md5", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("format", String(16), nullable=False),
    # "processed": text extracted; "error": the document holds no usable text (see details).
    Column("status", String(16), nullable=False),
    Column("status_details", Text, nullable=True),
    Column("text_chars", BigInteger, nullable=False),
    Column("blob_key", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "workspace", "created_at"),
    Index(None, "workspace", "sha256"),
)
