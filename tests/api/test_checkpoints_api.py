"""``GET /v1/jobs/{id}/checkpoints``: a job's checkpoints, read from the object store (S3 here), for its
tenant only; a job cancelled by the API loses them unless its spec keeps them."""

from __future__ import annotations

from datetime import datetime

from fastapi.testclient import TestClient

from distill.storage import ObjectStore, checkpoint_key, list_checkpoints
from distill.tables import Job

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 2}}


def store_of(client: TestClient) -> ObjectStore:
    return client.app_state.store  # type: ignore[attr-defined]


def tenant_of(client: TestClient, job_id: str) -> str:
    with client.app_state.session_factory() as session:  # type: ignore[attr-defined]
        return session.get_one(Job, job_id).tenant_id


def put_checkpoints(client: TestClient, job_id: str, *positions: tuple[int, int]) -> str:
    tenant = tenant_of(client, job_id)
    for step, epoch in positions:
        store_of(client).put_bytes(checkpoint_key(tenant, job_id, step, epoch), b"c" * (step + 10))
    return tenant


def test_a_job_without_checkpoints_lists_none(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    answer = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=acme)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"object": "list", "data": [], "has_more": False}


def test_checkpoints_are_listed_oldest_first_with_step_epoch_bytes_and_time(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    put_checkpoints(client, job_id, (120, 4), (7, 0))
    answer = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=acme)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert [(c["object"], c["step"], c["epoch"], c["bytes"]) for c in data] == [
        ("checkpoint", 7, 0, 17),
        ("checkpoint", 120, 4, 130),
    ]
    assert all(datetime.fromisoformat(c["created_at"]).tzinfo is not None for c in data)


def test_another_tenants_job_and_an_unknown_job_answer_404(client, acme, globex):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    put_checkpoints(client, job_id, (7, 0))
    theirs = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=globex)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["field"] == "id"
    unknown = client.get("/v1/jobs/job_doesnotexist0000000000/checkpoints", headers=acme)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "id"


def test_cancelling_a_queued_job_deletes_its_checkpoints_unless_kept(client, acme):
    gone = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    kept_spec = {**DIGITS, "training": {"epochs": 2, "keep_checkpoints": True}}
    kept = client.post("/v1/jobs", headers=acme, json=kept_spec).json()["id"]
    tenant = put_checkpoints(client, gone, (7, 0))
    put_checkpoints(client, kept, (7, 0))
    for job_id in (gone, kept):  # queued again after a lost attempt, say: then cancelled
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=acme).json()["status"] == "cancelled"
    assert list_checkpoints(store_of(client), tenant, gone) == []
    assert client.get(f"/v1/jobs/{gone}/checkpoints", headers=acme).json()["data"] == []
    assert [c["step"] for c in client.get(f"/v1/jobs/{kept}/checkpoints", headers=acme).json()["data"]] == [7]
