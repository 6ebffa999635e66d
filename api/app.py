"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.hardening import install_hardening
from api.observability import install_observability
from api.routers import artifacts, dashboard, files, health, jobs, streams, webhooks
from distill.db import engine_for, make_session_factory
from distill.logs import configure_json_logging
from distill.queue import make_celery
from distill.settings import Settings, get_settings
from distill.storage import make_store
from distill.webhooks import Dispatcher


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.log_format == "json":
        configure_json_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The webhook dispatcher runs beside the API (distill/webhooks.py says why).
        dispatcher = Dispatcher(app.state.session_factory, settings) if settings.webhooks_dispatch else None
        if dispatcher is not None:
            dispatcher.start()
        app.state.dispatcher = dispatcher
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop()
            held = getattr(app.state, "async_engine", None)  # the read path's (api.deps.async_engine)
            if held is not None and held[0] is asyncio.get_running_loop():
                await held[1].dispose()

    app = FastAPI(
        title="Distill",
        version="0.1.0",
        summary="Distillation as a service: hand over a teacher and data, get back a smaller student.",
        lifespan=lifespan,
    )
    engine = engine_for(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = make_store(settings)
    app.state.celery = make_celery(settings)
    install_error_handlers(app)
    install_hardening(app)
    install_observability(app, app.state.session_factory, settings)
    for router in (
        health.router,
        files.router,
        jobs.router,
        streams.router,
        artifacts.router,
        webhooks.router,
        dashboard.router,
    ):
        app.include_router(router)
    dashboard.mount_static(app)
    return app
