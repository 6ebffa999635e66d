"""API keys: shown once at creation, stored only as a SHA-256 hash.

Listed by prefix (never the secret) and revoked by id or prefix from the server CLI.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Update, or_, select, update
from sqlalchemy.orm import Session

from distill.clock import utcnow
from distill.ids import new_key_id, new_tenant_id
from distill.tables import ApiKey, Tenant

KEY_PREFIX = "dsk_"
TOUCH_INTERVAL = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key: a read per request, not a write."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, tenant_name: str) -> str:
    """Create a key for ``tenant_name`` (creating the tenant when new) and return it in plain text."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(id=new_tenant_id(), name=tenant_name)
        session.add(tenant)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(id=new_key_id(), tenant_id=tenant.id, prefix=key[:10], key_hash=hash_key(key)))
    return key


def find_key(session: Session, key: str) -> tuple[ApiKey, Tenant] | None:
    """The live key row for the plain-text ``key`` and its tenant, or None for an unknown or revoked key."""
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    return None if row is None else (row[0], row[1])


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant that owns ``key``, or None for an unknown or revoked key."""
    found = find_key(session, key)
    return None if found is None else found[1]


def touch_due(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a key last used at ``last_used_at`` should have its use recorded now (once a minute)."""
    return last_used_at is None or now - last_used_at >= TOUCH_INTERVAL


def touch_statement(key_id: str, now: datetime) -> Update:
    """The conditional UPDATE that records a use: concurrent requests (any process) write it once."""
    return (
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_INTERVAL),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


def touch(session: Session, api_key: ApiKey, now: datetime | None = None) -> bool:
    """Record that ``api_key`` was just used, unless that was recorded less than a minute ago.

    Returns whether it wrote (the caller commits). The conditional UPDATE keeps concurrent requests from
    writing twice.
    """
    now = now or utcnow()
    if not touch_due(api_key.last_used_at, now):
        return False
    result = session.execute(touch_statement(api_key.id, now))
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class KeyInfo:
    id: str
    prefix: str
    tenant: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def list_keys(session: Session, *, tenant_name: str | None = None, revoked: bool = False) -> list[KeyInfo]:
    """Keys (never their secret), oldest first; only one tenant's with ``tenant_name``; revoked ones too with
    ``revoked``."""
    query = select(ApiKey, Tenant.name).join(Tenant, ApiKey.tenant_id == Tenant.id)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    if not revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    rows = session.execute(query.order_by(ApiKey.created_at, ApiKey.id)).all()
    return [
        KeyInfo(
            id=key.id,
            prefix=key.prefix,
            tenant=name,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )
        for key, name in rows
    ]


class KeyNotFound(LookupError):
    """No live key matches, or a prefix matches several (the message says which)."""


def revoke_key(session: Session, ident: str) -> KeyInfo:
    """Revoke the live key whose id (``key_…``) or prefix (``dsk_…``, as ``list_keys`` shows) is ``ident``.

    A revoked key answers 401 from its next request on. Raises :class:`KeyNotFound` when nothing or more than
    one key matches.
    """
    rows = session.execute(
        select(ApiKey, Tenant.name)
        .join(Tenant, ApiKey.tenant_id == Tenant.id)
        .where(or_(ApiKey.id == ident, ApiKey.prefix == ident), ApiKey.revoked_at.is_(None))
        .with_for_update(of=ApiKey)
    ).all()
    if not rows:
        raise KeyNotFound(f"no live key with id or prefix {ident!r}")
    if len(rows) > 1:
        ids = ", ".join(key.id for key, _ in rows)
        raise KeyNotFound(f"prefix {ident!r} matches several keys ({ids}): revoke by id")
    key, name = rows[0]
    key.revoked_at = utcnow()
    session.flush()
    return KeyInfo(
        id=key.id,
        prefix=key.prefix,
        tenant=name,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )
