"""Several gateways on one database: which node holds each container and runs each call, and the nodes.

Rows from before have no node; the next gateway to start recovers them (see Gateway.recover).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("containers", sa.Column("node", sa.String(128), nullable=True))
    op.add_column("calls", sa.Column("node", sa.String(128), nullable=True))
    op.create_index("ix_calls_node_status", "calls", ["node", "status"])
    op.create_index("ix_containers_node_status", "containers", ["node", "status"])
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
    op.drop_index("ix_containers_node_status", "containers")
    op.drop_index("ix_calls_node_status", "calls")
    op.drop_column("calls", "node")
    op.drop_column("containers", "node")
