"""API keys: shown once at creation, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from distill.ids import new_key_id, new_tenant_id
from distill.tables import ApiKey, Tenant

KEY_PREFIX = "dsk_"


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


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant that owns ``key``, or None for an unknown or revoked key."""
    return session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
