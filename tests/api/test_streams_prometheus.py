"""Observability: Prometheus metrics at ``/metrics`` and JSON log lines that carry job_id and tenant."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from distill.clock import utcnow
from distill.logs import ContextFilter, JsonFormatter
from distill.tables import Job

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 2}}


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_jobs_by_status_queue_depth_and_requests_by_route(client, acme):
    settings = client.app_state.settings  # type: ignore[attr-defined]
    ids = [client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=acme)
    client.get(f"/v1/jobs/{ids[1]}", headers=acme)
    client.get("/v1/jobs/job_nope", headers=acme)

    samples = scrape(client)
    assert samples[("distill_jobs", (("status", "queued"),))] == 2
    assert samples[("distill_jobs", (("status", "cancelled"),))] == 1
    assert samples[("distill_jobs", (("status", "running"),))] == 0
    assert (
        samples[("distill_queue_depth", (("queue", settings.queue_name),))] == 3
    )  # cancel leaves the message
    route = (("method", "GET"), ("route", "/v1/jobs/{job_id}"))
    assert samples[("distill_http_requests_total", (*route, ("status", "200")))] >= 1
    assert samples[("distill_http_requests_total", (*route, ("status", "404")))] >= 1
    assert samples[("distill_http_request_duration_seconds_count", route)] >= 2
    routes = {dict(labels).get("route", "") for _, labels in samples}
    assert not [r for r in routes if "job_nope" in r or any(i in r for i in ids)]  # templates, not paths


def test_metrics_give_job_durations_and_worker_heartbeats(client, acme):
    engine = client.app_state.engine  # type: ignore[attr-defined]
    done, running = (client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"] for _ in range(2))
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == done)
            .values(status="succeeded", started_at=now - timedelta(seconds=42), finished_at=now)
        )
        conn.execute(
            update(Job)
            .where(Job.id == running)
            .values(
                status="running",
                started_at=now,
                lease_owner="gpu-a-1",
                heartbeat_at=now - timedelta(seconds=5),
            )
        )
    samples = scrape(client)
    status = (("status", "succeeded"),)
    assert samples[("distill_job_duration_seconds_count", status)] == 1
    assert abs(samples[("distill_job_duration_seconds_sum", status)] - 42) < 1
    assert samples[("distill_job_duration_seconds_bucket", (("le", "30"), *status))] == 0
    assert samples[("distill_job_duration_seconds_bucket", (("le", "60"), *status))] == 1
    assert samples[("distill_worker_heartbeat_age_seconds", (("worker", "gpu-a-1"),))] >= 5


def test_log_lines_are_json_and_carry_the_job_and_the_tenant(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    access = logging.getLogger("distill.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        client.get(f"/v1/jobs/{job_id}/events", headers=acme)
    finally:
        access.removeHandler(handler)
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["job_id"] == job_id and line["tenant"] == "acme"
    assert line["route"] == "/v1/jobs/{job_id}/events" and line["status"] == 200
    assert line["level"] == "info" and line["time"]
