"""Uploaded documents: the files table.

Revision ID: 0002_files
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dashserve.store.tables import UtcDateTime

revision = "0002_files"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_details", sa.Text(), nullable=True),
        sa.Column("text_chars", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("ix_files_workspace_created_at", "files", ["workspace", "created_at"])
    op.create_index("ix_files_workspace_sha256", "files", ["workspace", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_files_workspace_sha256", table_name="files")
    op.drop_index("ix_files_workspace_created_at", table_name="files")
    op.drop_table("files")
