"""The one place where tenant data is looked up: every query for files and jobs goes through here.

Two ways in: with the caller's ``Tenant`` (resolved from the API key by ``api.deps.get_tenant``), or, on the
async status-poll path, with the key's hash itself (:func:`find_owned_by_key`): one statement that checks the
key (live, not revoked) and reads the row only when the key's tenant owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, Select, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from api.errors import NotFound
from distill.tables import ApiKey, File, Job, Tenant

Owned = TypeVar("Owned", File, Job)

NOUN = {File: "file", Job: "job"}


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
        raise NotFound(f"no {NOUN[model]} {object_id!r}", field="id")
    return row


@dataclass(frozen=True)
class KeyedRow:
    """What one keyed read found: the live key that asked, its tenant, and the row (None: the tenant has no
    such row, or another tenant owns it: the caller answers 404 for both). The row is the table's columns
    as attributes (``row.id``, ``row.status``…), read without building an ORM object."""

    key_id: str
    key_last_used_at: datetime | None
    tenant_id: str
    tenant_name: str
    row: Row[Any] | None


def _by_key(model: type[Owned]) -> Select[Any]:
    table = model.__table__
    return (
        select(
            ApiKey.id.label("_key_id"),
            ApiKey.last_used_at.label("_key_last_used_at"),
            Tenant.id.label("_tenant_id"),
            Tenant.name.label("_tenant_name"),
            *table.columns,
        )
        .select_from(ApiKey)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .outerjoin(table, and_(table.c.tenant_id == ApiKey.tenant_id, table.c.id == bindparam("object_id")))
        .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
    )


_BY_KEY = {File: _by_key(File), Job: _by_key(Job)}
"""Built once: the keyed reads' statements (SQLAlchemy caches their compiled form too)."""


async def find_owned_by_key(
    connection: AsyncConnection, model: type[Owned], object_id: str, key_hash: str
) -> KeyedRow | None:
    """``model``'s row ``object_id`` if the tenant of the live key whose hash is ``key_hash`` owns it, in one
    round trip; None when no live key has that hash (revoked keys included: a revoke counts at once)."""
    result = await connection.execute(_BY_KEY[model], {"object_id": object_id, "key_hash": key_hash})
    found = result.first()
    if found is None:
        return None
    row = found if found.id is not None else None
    return KeyedRow(found._key_id, found._key_last_used_at, found._tenant_id, found._tenant_name, row)
