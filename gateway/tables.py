"""The database's tables, as SQLAlchemy Core sees them; Alembic's migrations build them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["calls", "container_files", "containers", "files", "metadata", "nodes"]

metadata = MetaData()

files = Table(
    "files", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("owner", String(64), nullable=False, index=True),
    Column("filename", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Integer, nullable=False),
)

containers = Table(
    "containers", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("owner", String(64), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("thread_id", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("last_active_at", Float, nullable=False),
    Column("expires_minutes", Float, nullable=False),
    Column("memory_limit", String(8), nullable=False),
    Column("docker_id", String(80), nullable=True),
    Column("node", String(128), nullable=True),  # the gateway that holds its live sandbox
    UniqueConstraint("owner", "thread_id", name="uq_container_thread"),
    Index("ix_containers_node_status", "node", "status"),
)

container_files = Table(
    "container_files", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("container_id", String(64), ForeignKey("containers.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),
    Column("file_id", String(64), nullable=True),  # the stored copy, when there is one
    Column("sha256", String(64), nullable=True),
    Column("mtime", Float, nullable=True),  # of the version stored, so an unchanged file is not copied again
    Column("created_at", Integer, nullable=False),
    UniqueConstraint("container_id", "path", name="uq_container_path"),
)

calls = Table(
    "calls", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("container_id", String(64), ForeignKey("containers.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("node", String(128), nullable=True),  # the gateway that runs it
    Index("ix_calls_container", "container_id", "seq"),
    Index("ix_calls_node_status", "node", "status"),
)

nodes = Table(
    "nodes", metadata,
    Column("name", String(128), primary_key=True),
    Column("url", Text, nullable=True),  # where other nodes forward this node's threads' requests
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),  # its last heartbeat
)
