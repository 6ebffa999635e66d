"""The one place where tenant data is looked up: every query for files and jobs goes through here."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.errors import NotFound
from distill.tables import File, Job, Tenant

Owned = TypeVar("Owned", File, Job)

_NOUN = {File: "file", Job: "job"}


def scoped(model: type[Owned], tenant: Tenant) -> Select[Owned]:
    """``SELECT`` of ``model`` restricted to ``tenant``'s rows."""
    return select(model).where(model.tenant_id == tenant.id)


def find_owned(session: Session, model: type[Owned], object_id: str, tenant: Tenant) -> Owned | None:
    return session.scalar(scoped(model, tenant).where(model.id == object_id))


def get_owned(
    session: Session, model: type[Owned], object_id: str, tenant: Tenant, *, for_update: bool = False
) -> Owned:
    """The row, or 404: another tenant's row answers exactly like one that does not exist."""
    query = scoped(model, tenant).where(model.id == object_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"no {_NOUN[model]} {object_id!r}", field="id")
    return row
