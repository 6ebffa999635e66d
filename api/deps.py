"""Request dependencies: one session per request, the store, the queue, and the caller's tenant.

``TenantDep`` resolves the API key once, counts the request against the key's rate limit and notes when the
key was last used (at most once a minute); every service function that touches tenant data takes that
tenant and goes through ``api.tenancy``, so tenancy is enforced in one place.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

from api.errors import NotFound, Unauthorized
from api.ratelimit import RateLimiter, make_async_rate_limiter, make_rate_limiter
from api.tenancy import NOUN, KeyedRow, Owned, find_owned_by_key
from distill.clock import utcnow
from distill.db import async_engine_for, read_retrying
from distill.keys import find_key, hash_key, touch, touch_due, touch_statement
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


# -- the async read path (the status poll) --------------------------------------------------------------

_Made = TypeVar("_Made")


def _per_loop(request: Request, name: str, make: Callable[[], _Made]) -> _Made:
    """``app.state``'s ``name``, made on first use in the running event loop (async engines and Redis
    clients belong to the loop that made them; one server has one loop, a test client may start several)."""
    loop = asyncio.get_running_loop()
    state = request.app.state
    held: tuple[asyncio.AbstractEventLoop, _Made] | None = getattr(state, name, None)
    if held is None or held[0] is not loop:
        held = (loop, make())
        setattr(state, name, held)
    return held[1]


def async_engine(request: Request) -> AsyncEngine:
    """The app's async engine (the read path's), made in the running event loop."""
    settings: Settings = request.app.state.settings
    return _per_loop(request, "async_engine", lambda: async_engine_for(settings))


async def _count_request(request: Request, key_id: str) -> None:
    limiter = get_rate_limiter(request)
    if limiter is None:
        return
    if not limiter.shared:
        limiter.hit(key_id)  # in-process counters: no I/O
        return
    settings: Settings = request.app.state.settings
    shared = _per_loop(request, "async_rate_limiter", lambda: make_async_rate_limiter(settings))
    if shared is not None:
        await shared.hit(key_id)


def _secret(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The key in the ``Authorization`` header; 401 without one; None for one that cannot be a key."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    secret = credentials.credentials
    return secret if secret.isprintable() and len(secret) <= 512 else None


async def read_owned(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    model: type[Owned],
    object_id: str,
) -> Row[Any]:
    """The caller's row ``object_id`` of ``model``, authenticated, counted and scoped as ``get_tenant`` does
    (401, 429, 404 for another tenant's row) in one database round trip on the async engine: the key check
    and the tenant's row are one statement (``tenancy.find_owned_by_key``), so a revoked key fails at once on
    every process. The key's last use is written at most once a minute, as ``get_tenant`` does. The row is
    the table's columns as attributes (``row.id``, ``row.status``…)."""
    secret = _secret(credentials)
    if secret is None:
        raise Unauthorized("invalid or revoked API key")
    key_hash = hash_key(secret)

    async def read(connection: AsyncConnection) -> KeyedRow | None:
        found = await find_owned_by_key(connection, model, object_id, key_hash)
        if found is not None:
            now = utcnow()
            if touch_due(found.key_last_used_at, now):  # autocommit: the UPDATE is its own transaction
                await connection.execute(touch_statement(found.key_id, now))
        return found

    found = await read_retrying(async_engine(request), read)
    if found is None:
        raise Unauthorized("invalid or revoked API key")
    await _count_request(request, found.key_id)
    bind(tenant=found.tenant_name)
    if found.row is None:
        raise NotFound(f"no {NOUN[model]} {object_id!r}", field="id")
    return found.row


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
