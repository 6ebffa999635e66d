"""``/v1/webhooks``: endpoints that receive every job status change, and each endpoint's delivery log.

The secret that signs deliveries is in the answer to ``POST`` only: store it then.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import SessionDep, TenantDep
from api.params import IdCursor, ObjectId
from api.responses import COMMON, errors
from api.services import webhooks as service
from distill.schemas import DeliveryRead, ListRead, WebhookCreate, WebhookCreated, WebhookDeleted, WebhookRead

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=COMMON)


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(400))
def create_webhook(body: WebhookCreate, session: SessionDep, tenant: TenantDep) -> WebhookCreated:
    row = service.create_endpoint(session=session, tenant=tenant, url=body.url, description=body.description)
    return WebhookCreated(**WebhookRead.of(row).model_dump(), secret=row.secret)


@router.get("")
def list_webhooks(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: IdCursor = None,
) -> ListRead[WebhookRead]:
    page = service.list_endpoints(session=session, tenant=tenant, limit=limit, after=after)
    return ListRead(data=[WebhookRead.of(r) for r in page.rows], has_more=page.has_more)


@router.get("/{webhook_id}", responses=errors(404))
def get_webhook(webhook_id: ObjectId, session: SessionDep, tenant: TenantDep) -> WebhookRead:
    return WebhookRead.of(service.get_endpoint(session=session, tenant=tenant, endpoint_id=webhook_id))


@router.delete("/{webhook_id}", responses=errors(404))
def delete_webhook(webhook_id: ObjectId, session: SessionDep, tenant: TenantDep) -> WebhookDeleted:
    service.delete_endpoint(session=session, tenant=tenant, endpoint_id=webhook_id)
    return WebhookDeleted(id=webhook_id)


@router.get("/{webhook_id}/deliveries", responses=errors(404))
def list_deliveries(
    webhook_id: ObjectId,
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: IdCursor = None,
) -> ListRead[DeliveryRead]:
    page, attempts = service.list_deliveries(
        session=session, tenant=tenant, endpoint_id=webhook_id, limit=limit, after=after
    )
    return ListRead(data=[DeliveryRead.of(r, attempts[r.id]) for r in page.rows], has_more=page.has_more)
