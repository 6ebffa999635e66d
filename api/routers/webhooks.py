"""``/v1/webhooks``: endpoints that receive every job status change, and each endpoint's delivery log.

The secret that signs deliveries is in the answer to ``POST`` only: store it then.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SessionDep, TenantDep
from api.params import IdCursor, ObjectId
from api.responses import COMMON, errors
from api.services import webhooks as service
from distill.schemas import ListRead
from distill.tables import WebhookAttempt, WebhookDelivery, WebhookEndpoint

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=COMMON)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    description: str | None = Field(default=None, max_length=200)


class WebhookRead(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookEndpoint) -> WebhookRead:
        return cls(id=row.id, url=row.url, description=row.description, created_at=row.created_at)


class WebhookCreated(WebhookRead):
    secret: str
    """Shown once: the HMAC-SHA256 key of ``Distill-Signature``."""


class WebhookDeleted(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    deleted: bool = True


class AttemptRead(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptRead:
        return cls(
            number=row.number,
            at=row.at,
            status_code=row.status_code,
            error=row.error,
            duration_ms=row.duration_ms,
        )


class DeliveryRead(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    job_id: str
    type: str
    state: str
    attempts: list[AttemptRead]
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, row: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryRead:
        return cls(
            id=row.id,
            job_id=row.job_id,
            type=row.event_type,
            state=row.state,
            attempts=[AttemptRead.of(a) for a in attempts],
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            payload=row.payload,
        )


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
