"""Request dependencies: one session per request, the store, the queue, and the caller's tenant.

``TenantDep`` resolves the API key once, counts the request against the key's rate limit and notes when the
key was last used (at most once a minute); every service function that touches tenant data takes that
tenant and goes through ``api.tenancy``, so tenancy is enforced in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Unauthorized
from api.ratelimit import RateLimiter, make_rate_limiter
from distill.keys import find_key, touch
from distill.logs import bind
from distill.settings import Settings
from distill.storage import ObjectStore
from distill.tables import Tenant


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


def get_queue(request: Request) -> Celery:
    queue: Celery = request.app.state.celery
    return queue


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
QueueDep = Annotated[Celery, Depends(get_queue)]

_bearer = HTTPBearer(auto_error=False)


_limiter_lock = threading.Lock()


def get_rate_limiter(request: Request) -> RateLimiter | None:
    """The app's limiter, made from its settings on first use (None: no rate limit).

    Made once, under a lock: requests arrive on many threads at once, and the ``limits`` library's lazy
    import of its Redis client is not thread-safe (concurrent first uses failed with "redis 0.0.0 found").
    """
    state = request.app.state
    with _limiter_lock:
        if not hasattr(state, "rate_limiter"):
            state.rate_limiter = make_rate_limiter(state.settings)
    limiter: RateLimiter | None = state.rate_limiter
    return limiter


def get_tenant(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    limiter: Annotated[RateLimiter | None, Depends(get_rate_limiter)],
) -> Tenant:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    secret = credentials.credentials
    found = find_key(session, secret) if secret.isprintable() and len(secret) <= 512 else None
    if found is None:
        raise Unauthorized("invalid or revoked API key")
    key, tenant = found
    if limiter is not None:
        limiter.hit(key.id)
    if touch(session, key):
        session.commit()
    bind(tenant=tenant.name)  # every log line of this request carries the tenant
    return tenant


TenantDep = Annotated[Tenant, Depends(get_tenant)]
