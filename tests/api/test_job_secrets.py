"""An endpoint teacher's API key through the REST API: stored apart (``job_secrets``), shown as ``***`` in
every answer (create, get, list, events, an idempotent replay), refused as a placeholder, and deleted when
the job ends (a cancel of a queued job, the reconciler's sweep of ended jobs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lm_support import archive, char_tokenizer, tiny_causal_lm
from sqlalchemy import text
from sqlalchemy.orm import Session
from test_files_api import upload

from distill.secrets import ENDPOINT_API_KEY, delete_ended_secrets

KEY = "sk-api-test-5e8d1f0a9b7c"


@pytest.fixture(scope="module")
def model_zip() -> bytes:
    tok = char_tokenizer()
    return archive(tiny_causal_lm(tok), tok)


def black_box_spec(client: TestClient, headers: dict[str, str], model_zip: bytes) -> dict[str, Any]:
    prompts = "".join(json.dumps({"prompt": f"{a}+{a}"}) + "\n" for a in range(10)).encode()
    data = upload(client, headers, "prompts.jsonl", prompts)
    assert data.status_code == 201, data.text
    start = upload(client, headers, "start.zip", model_zip, purpose="model")
    assert start.status_code == 201, start.text
    return {
        "task": "causal_lm",
        "data": {"train": {"file": data.json()["id"]}},
        "teacher": {"endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "teacher", "api_key": KEY}},
        "model": {"arch": "pretrained", "file": start.json()["id"]},
    }


def secrets_of(client: TestClient, job_id: str) -> dict[str, str]:
    engine = client.app_state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, value FROM job_secrets WHERE job_id = :id"), {"id": job_id})
        return {name: value for name, value in rows}


def test_the_key_is_stored_apart_and_never_answered(
    client: TestClient, acme: dict[str, str], model_zip: bytes
) -> None:
    spec = black_box_spec(client, acme, model_zip)
    headers = {**acme, "Idempotency-Key": "bb-1"}
    created = client.post("/v1/jobs", json=spec, headers=headers)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["spec"]["teacher"]["endpoint"]["api_key"] == "***"
    assert secrets_of(client, job["id"]) == {ENDPOINT_API_KEY: KEY}
    replay = client.post("/v1/jobs", json=spec, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json()["id"] == job["id"]
    answers = [
        created,
        replay,
        client.get(f"/v1/jobs/{job['id']}", headers=acme),
        client.get("/v1/jobs", headers=acme),
        client.get(f"/v1/jobs/{job['id']}/events", headers=acme),
    ]
    for answer in answers:
        assert answer.status_code == 200 or answer.status_code == 201
        assert KEY not in answer.text


def test_the_placeholder_is_refused_as_a_key(
    client: TestClient, acme: dict[str, str], model_zip: bytes
) -> None:
    spec = black_box_spec(client, acme, model_zip)
    spec["teacher"]["endpoint"]["api_key"] = "***"
    response = client.post("/v1/jobs", json=spec, headers=acme)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == ENDPOINT_API_KEY


def test_secrets_go_when_the_job_ends(client: TestClient, acme: dict[str, str], model_zip: bytes) -> None:
    spec = black_box_spec(client, acme, model_zip)
    cancelled = client.post("/v1/jobs", json=spec, headers=acme).json()["id"]
    assert client.post(f"/v1/jobs/{cancelled}/cancel", headers=acme).json()["status"] == "cancelled"
    assert secrets_of(client, cancelled) == {}

    queued = client.post("/v1/jobs", json=spec, headers=acme).json()["id"]
    failed = client.post("/v1/jobs", json=spec, headers=acme).json()["id"]
    engine = client.app_state.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:  # ended by someone else (a reconciler giving up on a lost worker, say)
        conn.execute(text("UPDATE jobs SET status = 'failed' WHERE id = :id"), {"id": failed})
    with Session(engine) as session, session.begin():
        assert delete_ended_secrets(session) == 1
    assert secrets_of(client, failed) == {}
    assert secrets_of(client, queued) == {ENDPOINT_API_KEY: KEY}  # a live job keeps its key
