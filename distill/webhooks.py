"""Webhooks: signing, and the dispatcher that turns job status changes into signed, retried POSTs.

The dispatcher reads only what the API and the workers already write: each job's event log (a status event
such as ``job started`` / ``job succeeded``) and the job row. Per job it keeps a cursor (the last event
``seq`` it read and the last status it announced), so every status change is announced once per endpoint,
whichever process runs the dispatcher and however often it restarts.

It runs as a thread in the API process (``Settings.webhooks_dispatch``): the API is always up, needs no GPU
and already has a database pool. Several API replicas may each run one: the scan takes a Postgres advisory
lock and deliveries are claimed with ``FOR UPDATE SKIP LOCKED``, so no delivery is sent twice at once.

Receivers check ``Distill-Signature: sha256=<hex>``, the HMAC-SHA256 of ``f"{timestamp}.{body}"`` with the
endpoint's secret, where ``timestamp`` is the ``Distill-Timestamp`` header (Unix seconds); see
:func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from distill.clock import utcnow
from distill.db import transaction
from distill.ids import new_id
from distill.settings import Settings
from distill.tables import Job, JobEvent, WebhookAttempt, WebhookCursor, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Distill-Signature"
TIMESTAMP_HEADER = "Distill-Timestamp"
DELIVERY_HEADER = "Distill-Delivery"
EVENT_HEADER = "Distill-Event"
_SCAN_LOCK = 7_406_352_001  # pg advisory lock key: one scanner at a time across API replicas
_STATUS_PREFIXES = (
    ("job queued", "queued"),
    ("job started", "running"),
    ("job succeeded", "succeeded"),
    ("job failed", "failed"),
    ("job cancelled", "cancelled"),
)
_MAX_BACKOFF_SECONDS = 3600.0


def new_secret() -> str:
    import secrets

    return "whsec_" + secrets.token_urlsafe(32)


def new_endpoint_id() -> str:
    return new_id("wh")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with ``secret``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_seconds: float = 300.0
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (no replays)."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - stamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)


def event_status(event: JobEvent) -> str | None:
    """The status an event announces (``data.status`` when the writer sets it, else its message), or None."""
    status = (event.data or {}).get("status")
    if isinstance(status, str) and status:
        return status
    for prefix, name in _STATUS_PREFIXES:
        if event.message.startswith(prefix):
            return name
    return None


def backoff_seconds(attempt: int, base: float) -> float:
    """Wait before retry ``attempt`` (1: the first retry): ``base * 2**(attempt-1)``, at most an hour."""
    return float(min(base * 2 ** (attempt - 1), _MAX_BACKOFF_SECONDS))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_payload(job: Job, status: str, event: JobEvent | None, delivery_id: str) -> dict[str, Any]:
    """The body POSTed for one status change (the same bytes on every attempt)."""
    return {
        "id": delivery_id,
        "type": f"job.{status}",
        "created_at": _iso(event.created_at if event else utcnow()),
        "data": {
            "job": {
                "id": job.id,
                "object": "job",
                "name": job.name,
                "status": status,
                "created_at": _iso(job.created_at),
                "started_at": _iso(job.started_at),
                "finished_at": _iso(job.finished_at),
                "result": job.result if status == job.status else None,
                "error": job.error if status == job.status else None,
            },
            "event": None
            if event is None
            else {"seq": event.seq, "message": event.message, "created_at": _iso(event.created_at)},
        },
    }


@dataclass
class _Due:
    id: str
    url: str
    secret: str
    event_type: str
    body: bytes
    attempt: int


class Dispatcher:
    """Scans for status changes and delivers what is due; ``run_once`` is one round, ``start`` a thread."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, batch: int = 100) -> None:
        self.sessions = sessions
        self.settings = settings
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)

    # -- the loop --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_seconds + 5)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the loop
                log.exception("webhook dispatcher round failed")
            self._stop.wait(self.settings.webhook_poll_seconds)

    def run_once(self) -> int:
        """Announce new status changes, then send every delivery that is due; return how many were sent."""
        self.scan()
        return self.deliver_due()

    # -- status changes -> deliveries -----------------------------------------------------------------

    def scan(self) -> int:
        """Create deliveries for status changes since each job's cursor; return how many were created."""
        created = 0
        with transaction(self.sessions) as session:
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _SCAN_LOCK})
                if not got:
                    return 0
            with_endpoints = select(WebhookEndpoint.tenant_id).distinct()
            rows = session.execute(
                select(Job, WebhookCursor)
                .outerjoin(WebhookCursor, WebhookCursor.job_id == Job.id)
                .where(Job.tenant_id.in_(with_endpoints))
                .where(Job.event_seq > func.coalesce(WebhookCursor.seq, 0))
                .order_by(Job.id)
                .limit(self.batch)
            ).all()
            for job, cursor in rows:
                created += self._scan_job(session, job, cursor)
        return created

    def _scan_job(self, session: Session, job: Job, cursor: WebhookCursor | None) -> int:
        if cursor is None:
            cursor = WebhookCursor(job_id=job.id, seq=0, status=None)
            session.add(cursor)
        endpoints = list(
            session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == job.tenant_id))
        )
        events = list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job.id, JobEvent.seq > cursor.seq, JobEvent.seq <= job.event_seq)
                .order_by(JobEvent.seq)
            )
        )
        created = 0
        last: JobEvent | None = None
        for event in events:
            last = event
            status = event_status(event)
            if status is None or status == cursor.status:
                continue
            cursor.status = status
            created += self._announce(session, job, status, event, endpoints)
        if job.status != cursor.status:  # a change whose event says nothing we recognise
            cursor.status = job.status
            created += self._announce(session, job, job.status, last, endpoints)
        cursor.seq = job.event_seq
        return created

    def _announce(
        self,
        session: Session,
        job: Job,
        status: str,
        event: JobEvent | None,
        endpoints: list[WebhookEndpoint],
    ) -> int:
        at = event.created_at if event is not None else utcnow()
        count = 0
        for endpoint in endpoints:
            if endpoint.created_at > at:  # registered after the change: only later changes are sent
                continue
            delivery_id = new_id("whd")
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint.id,
                    job_id=job.id,
                    event_type=f"job.{status}",
                    payload=job_payload(job, status, event, delivery_id),
                    state="pending",
                    next_attempt_at=utcnow(),
                )
            )
            count += 1
        return count

    # -- deliveries -> POSTs -----------------------------------------------------------------------------

    def _claim_due(self) -> list[_Due]:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + 5)
        with transaction(self.sessions) as session:
            rows = list(
                session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                )
            )
            due = []
            for row in rows:
                endpoint = session.get_one(WebhookEndpoint, row.endpoint_id)
                row.next_attempt_at = lease  # claimed: another dispatcher skips it until the lease ends
                body = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
                due.append(
                    _Due(row.id, endpoint.url, endpoint.secret, row.event_type, body, row.attempts + 1)
                )
        return due

    def deliver_due(self) -> int:
        sent = 0
        for due in self._claim_due():
            self._attempt(due)
            sent += 1
        return sent

    def _attempt(self, due: _Due) -> None:
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "distill-webhooks/1",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(due.secret, stamp, due.body),
            DELIVERY_HEADER: due.id,
            EVENT_HEADER: due.event_type,
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            response = self._http.post(due.url, content=due.body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        took = int((time.monotonic() - started) * 1000)
        self._record(due, status_code, error, took)

    def _record(self, due: _Due, status_code: int | None, error: str | None, took_ms: int) -> None:
        now = utcnow()
        with transaction(self.sessions) as session:
            row = session.get(WebhookDelivery, due.id, with_for_update=True)
            if row is None:  # the endpoint was deleted meanwhile
                return
            row.attempts = due.attempt
            session.add(
                WebhookAttempt(
                    delivery_id=due.id,
                    number=due.attempt,
                    at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=took_ms,
                )
            )
            if error is None:
                row.state, row.delivered_at, row.next_attempt_at = "succeeded", now, None
            elif due.attempt >= self.settings.webhook_max_attempts:
                row.state, row.next_attempt_at = "failed", None
                log.warning("webhook delivery %s gave up after %d attempts: %s", due.id, due.attempt, error)
            else:
                wait = backoff_seconds(due.attempt, self.settings.webhook_retry_base_seconds)
                row.next_attempt_at = now + timedelta(seconds=wait)
