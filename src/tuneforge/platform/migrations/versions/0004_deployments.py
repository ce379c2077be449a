"""deployments, their replicas (worker processes) and events

Revision ID: 0004_deployments
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_deployments"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("adapters", sa.JSON, nullable=False),
        sa.Column("default_model_id", sa.String(200), nullable=False),
        sa.Column("aliases", sa.JSON, nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("desired", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("requests", sa.Integer, nullable=False),
    )
    op.create_table(
        "deployment_replicas",
        sa.Column(
            "deployment_id",
            sa.String(64),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("replica", sa.Integer, primary_key=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("pid_ticks", sa.Integer, nullable=True),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("restarts", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
    )
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "deployment_id",
            sa.String(64),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployment_events")
    op.drop_table("deployment_replicas")
    op.drop_table("deployments")
