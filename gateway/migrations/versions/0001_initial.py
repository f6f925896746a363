"""The schema as it was before migrations: files, containers, container files and calls.

A database made by that code has these tables and no alembic_version; Store.migrate stamps it
with this revision instead of running it.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), unique=True, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
    )
    op.create_table(
        "containers",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), unique=True, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("thread_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("last_active_at", sa.Float, nullable=False),
        sa.Column("expires_minutes", sa.Float, nullable=False),
        sa.Column("memory_limit", sa.String(8), nullable=False),
        sa.Column("docker_id", sa.String(80), nullable=True),
        sa.UniqueConstraint("owner", "thread_id", name="uq_container_thread"),
    )
    op.create_table(
        "container_files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), unique=True, nullable=False),
        sa.Column("container_id", sa.String(64), sa.ForeignKey("containers.id"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("mtime", sa.Float, nullable=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.UniqueConstraint("container_id", "path", name="uq_container_path"),
    )
    op.create_table(
        "calls",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), unique=True, nullable=False),
        sa.Column("container_id", sa.String(64), sa.ForeignKey("containers.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
    )
    op.create_index("ix_calls_container", "calls", ["container_id", "seq"])


def downgrade() -> None:
    for table in ("calls", "container_files", "containers", "files"):
        op.drop_table(table)
