"""Request dependencies: one session per request, the store, the queue, and the caller's tenant.

``TenantDep`` resolves the API key once; every service function that touches tenant data takes that tenant
and goes through ``api.tenancy``, so tenancy is enforced in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Unauthorized
from distill.keys import tenant_for_key
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


def get_tenant(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    tenant = tenant_for_key(session, credentials.credentials)
    if tenant is None:
        raise Unauthorized("invalid or revoked API key")
    bind(tenant=tenant.name)  # every log line of this request carries the tenant
    return tenant


TenantDep = Annotated[Tenant, Depends(get_tenant)]
