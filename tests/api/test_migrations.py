"""The Alembic migrations create exactly the tables that ``distill/tables.py`` declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from distill.tables import Base


def test_migrations_match_the_tables(api_settings):
    engine = create_engine(api_settings.database_url)
    with engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": False}), Base.metadata
        )
    engine.dispose()
    assert diff == []
