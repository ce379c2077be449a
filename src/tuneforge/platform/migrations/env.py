"""Alembic environment: run programmatically by tuneforge.platform.migrate with a live connection."""

from alembic import context

from tuneforge.platform.db import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
