"""Webhook endpoints of a tenant (register, list, delete) and their delivery log."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.errors import Invalid, NotFound
from api.pagination import Page, paginate
from distill.tables import Tenant, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from distill.webhooks import new_endpoint_id, new_secret

MAX_ENDPOINTS_PER_TENANT = 20


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url: give an absolute http:// or https:// URL", field="url")
    if parts.username or parts.password:
        raise Invalid("url: credentials in the URL are not allowed; check the signature instead", field="url")
    return url


def create_endpoint(
    *, session: Session, tenant: Tenant, url: str, description: str | None
) -> WebhookEndpoint:
    count = len(
        list(session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.tenant_id == tenant.id)))
    )
    if count >= MAX_ENDPOINTS_PER_TENANT:
        raise Invalid(
            f"url: a tenant may have at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete one first",
            field="url",
        )
    row = WebhookEndpoint(
        id=new_endpoint_id(),
        tenant_id=tenant.id,
        url=_check_url(url),
        secret=new_secret(),
        description=description,
    )
    session.add(row)
    session.commit()
    return row


def get_endpoint(*, session: Session, tenant: Tenant, endpoint_id: str) -> WebhookEndpoint:
    row = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.tenant_id == tenant.id
        )
    )
    if row is None:
        raise NotFound(f"no webhook {endpoint_id!r}", field="id")
    return row


def list_endpoints(
    *, session: Session, tenant: Tenant, limit: int, after: str | None
) -> Page[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant.id)
    return paginate(session, query, WebhookEndpoint.id, limit=limit, after=after)


def delete_endpoint(*, session: Session, tenant: Tenant, endpoint_id: str) -> None:
    get_endpoint(session=session, tenant=tenant, endpoint_id=endpoint_id)
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    session.commit()


def list_deliveries(
    *, session: Session, tenant: Tenant, endpoint_id: str, limit: int, after: str | None
) -> tuple[Page[WebhookDelivery], dict[str, list[WebhookAttempt]]]:
    """Newest first, each with its attempts (oldest first)."""
    get_endpoint(session=session, tenant=tenant, endpoint_id=endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    page = paginate(session, query, WebhookDelivery.id, limit=limit, after=after)
    ids = [row.id for row in page.rows]
    attempts: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        for attempt in session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)).order_by(WebhookAttempt.number)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return page, attempts
