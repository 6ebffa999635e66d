"""Alembic environment: the URL comes from ``distill migrate`` (or DISTILL_DATABASE_URL)."""

from __future__ import annotations

from alembic import context

from distill.db import make_engine
from distill.settings import get_settings
from distill.tables import Base

config = context.config
url = config.attributes.get("database_url") or get_settings().database_url

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
