"""``Idempotency-Key`` on POST /v1/jobs and POST /v1/files: a retried request gets the first answer back.

A key is claimed first (a row ``in_progress``, unique per tenant and key), then the answer is stored with it:

- the same key and the same request: the stored answer, again (header ``Idempotent-Replayed: true``);
- the same key with another request (another body, or another route): 422 on ``Idempotency-Key``;
- the same key while the first request is still running: 409, retry later;
- a request that fails (any error) gives its key back, so the retry runs afresh;
- keys are kept ``DISTILL_IDEMPOTENCY_TTL_SECONDS`` (24 hours by default), then forgotten.

The claim is committed on its own before the work starts, so a concurrent request sees it at once. It goes
through the request's own session: a second connection per request would let a busy API exhaust its pool
with requests that each hold one connection and wait for another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Header
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep, TenantDep
from api.errors import Conflict, Invalid
from distill.clock import utcnow
from distill.tables import IdempotencyKey, Tenant

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
FIELD = HEADER
IN_PROGRESS = "in_progress"
DONE = "done"

_purge_lock = threading.Lock()
_last_purge = 0.0
PURGE_EVERY_S = 3600.0


def fingerprint(route: str, body: Any) -> str:
    """SHA-256 of a route and a JSON-able body, independent of key order."""
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class _Replay(Exception):
    """Unwinds a request whose key already has an answer (raised from inside the route's work)."""

    def __init__(self, response: Response) -> None:
        super().__init__("replay")
        self.response = response


class Idempotency:
    """The idempotency state of one request; without a key every method is a no-op pass-through."""

    def __init__(
        self,
        session: Session,
        tenant: Tenant,
        key: str | None,
        *,
        ttl_s: int,
        lock_s: int,
    ) -> None:
        self._session = session
        self._tenant_id = tenant.id
        self.key = key
        self._ttl = timedelta(seconds=ttl_s)
        self._lock = timedelta(seconds=lock_s)
        self._claimed = False

    def claim(self, request_sha256: str) -> None:
        """Take the key for this request, or end it: 409 (in progress), 422 (another request) or a replay."""
        if self.key is None:
            return
        self._purge_expired()
        for _attempt in range(3):  # a row seen as taken may expire or be given back before it is read
            if self._insert(request_sha256):
                self._claimed = True
                return
            row = self._session.execute(
                select(
                    IdempotencyKey.request_sha256,
                    IdempotencyKey.status,
                    IdempotencyKey.response_status,
                    IdempotencyKey.response_body,
                ).where(IdempotencyKey.tenant_id == self._tenant_id, IdempotencyKey.key == self.key)
            ).first()
            self._session.rollback()  # end the read (plain values, not ORM objects: nothing expires)
            if row is None:
                continue
            if row.request_sha256 != request_sha256:
                raise Invalid(
                    f"{FIELD}: this key was already used for another request (another body or route); "
                    "use a new key for a new request",
                    field=FIELD,
                    code="idempotency_key_reused",
                )
            if row.status != DONE or row.response_status is None:
                raise Conflict(
                    f"{FIELD}: a request with this key is still in progress; retry when it has finished",
                    field=FIELD,
                    code="idempotency_key_in_progress",
                )
            raise _Replay(
                JSONResponse(
                    row.response_body,
                    status_code=row.response_status,
                    headers={"Idempotent-Replayed": "true"},
                )
            )
        raise Conflict(
            f"{FIELD}: this key is contended; retry", field=FIELD, code="idempotency_key_in_progress"
        )

    def respond(
        self, status_code: int, produce: Callable[[], BaseModel], *, request_sha256: str | None = None
    ) -> Response:
        """Run ``produce`` (claiming first when ``request_sha256`` is known; else ``produce`` calls
        :meth:`claim` itself once it knows it) and answer its model, stored under the key."""
        try:
            if request_sha256 is not None:
                self.claim(request_sha256)
            model = produce()
        except _Replay as replay:
            return replay.response
        except BaseException:
            try:
                self._release()
            except Exception:  # the database may be what failed: report the original error, not this one
                log.exception("could not give back Idempotency-Key %r", self.key)
            raise
        body = model.model_dump(mode="json")
        self._store(status_code, body)
        return JSONResponse(body, status_code=status_code)

    def _insert(self, request_sha256: str) -> bool:
        now = utcnow()
        session = self._session
        session.commit()  # nothing of the request's is pending yet; start the claim's own transaction
        try:
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.tenant_id == self._tenant_id,
                    IdempotencyKey.key == self.key,
                    or_(
                        IdempotencyKey.created_at < now - self._ttl,
                        and_(
                            IdempotencyKey.status == IN_PROGRESS,
                            IdempotencyKey.created_at < now - self._lock,
                        ),
                    ),
                )
            )
            session.add(
                IdempotencyKey(
                    tenant_id=self._tenant_id,
                    key=self.key,
                    request_sha256=request_sha256,
                    status=IN_PROGRESS,
                    created_at=now,
                )
            )
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
        return True

    def _store(self, status_code: int, body: dict[str, Any]) -> None:
        if not self._claimed:
            return
        self._session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == self._tenant_id, IdempotencyKey.key == self.key)
            .values(status=DONE, response_status=status_code, response_body=body)
        )
        self._session.commit()

    def _release(self) -> None:
        if not self._claimed:
            return
        self._claimed = False
        self._session.rollback()  # whatever the failed work left uncommitted
        self._session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == self._tenant_id,
                IdempotencyKey.key == self.key,
                IdempotencyKey.status == IN_PROGRESS,
            )
        )
        self._session.commit()

    def _purge_expired(self) -> None:
        """Delete every tenant's expired keys, at most once an hour per process (an index on created_at)."""
        global _last_purge
        with _purge_lock:
            if time.monotonic() - _last_purge < PURGE_EVERY_S and _last_purge:
                return
            _last_purge = time.monotonic()
        self._session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - self._ttl))
        self._session.commit()


def get_idempotency(
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Any unique string (a UUID): a retry with the same key and body gets the first "
            "answer back; kept 24 hours",
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(
        session,
        tenant,
        key,
        ttl_s=settings.idempotency_ttl_seconds,
        lock_s=settings.idempotency_lock_seconds,
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
