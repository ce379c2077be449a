"""indexes for the newest-first lists: jobs by state and by kind, datasets, evaluations

Each list pages by keyset (platform/paging.py): ``ORDER BY created_at DESC, id DESC`` after a cursor. An
index on ``(filter, created_at, id)`` answers a filtered page as one index range, with no sort and no
scan of the rows of other states (at 10,000 jobs ``?state=failed`` read the whole ``created_at`` index).

Revision ID: 0006_list_indexes
Revises: 0005_rollouts
"""

from alembic import op

revision = "0006_list_indexes"
down_revision = "0005_rollouts"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_jobs_state_created", "jobs", ["state", "created_at", "id"]),
    ("ix_jobs_kind_created", "jobs", ["kind", "created_at", "id"]),
    ("ix_datasets_created", "datasets", ["created_at", "id"]),
    ("ix_evaluations_created", "evaluations", ["created_at", "id"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table)
