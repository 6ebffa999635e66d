"""Building the app and settings against the real services (shared by API and integration tests)."""

from __future__ import annotations

from distill.db import make_engine, make_session_factory, migrate, transaction
from distill.keys import create_key
from distill.settings import Settings


def settings_from_env(env: dict[str, str]) -> Settings:
    values = {k.removeprefix("DISTILL_").lower(): v for k, v in env.items() if k.startswith("DISTILL_")}
    return Settings.model_validate(values)


def prepare(settings: Settings) -> None:
    migrate(settings.database_url)


def new_key(settings: Settings, tenant: str) -> str:
    engine = make_engine(settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        key = create_key(session, tenant_name=tenant)
    engine.dispose()
    return key
