"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.hardening import install_hardening
from api.routers import artifacts, files, health, jobs
from distill.db import make_engine, make_session_factory
from distill.queue import make_celery
from distill.settings import Settings, get_settings
from distill.storage import make_store


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Distill",
        version="0.1.0",
        summary="Distillation as a service: hand over a teacher and data, get back a smaller student.",
    )
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = make_store(settings)
    app.state.celery = make_celery(settings)
    install_error_handlers(app)
    install_hardening(app)
    for router in (health.router, files.router, jobs.router, artifacts.router):
        app.include_router(router)
    return app
