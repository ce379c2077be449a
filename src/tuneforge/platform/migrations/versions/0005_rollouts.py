"""deployments.rollout: an eval-gated promotion's stage and canary split, kept across restarts

Revision ID: 0005_rollouts
Revises: 0004_deployments
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_rollouts"
down_revision = "0004_deployments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("rollout", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("rollout")
