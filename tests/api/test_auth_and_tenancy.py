"""Every ``/v1`` route needs a key; a tenant never sees another tenant's files, jobs, events or artifacts."""

from __future__ import annotations

import pytest
from factories import digits_arrays, npz_bytes
from test_files_api import upload

from distill.db import transaction
from distill.tables import ApiKey

ROUTES = [
    ("get", "/v1/files"),
    ("post", "/v1/files"),
    ("get", "/v1/files/{file}"),
    ("delete", "/v1/files/{file}"),
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{job}"),
    ("post", "/v1/jobs/{job}/cancel"),
    ("get", "/v1/jobs/{job}/events"),
    ("get", "/v1/jobs/{job}/artifacts"),
    ("get", "/v1/jobs/{job}/artifacts/model.safetensors"),
]


@pytest.fixture
def owned(client, acme):
    x, y = digits_arrays()
    file_id = upload(client, acme, "d.npz", npz_bytes(x[:40], y[:40])).json()["id"]
    job_id = client.post("/v1/jobs", headers=acme, json={"data": {"train": {"file": file_id}}}).json()["id"]
    return {"file": file_id, "job": job_id}


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer dsk_wrong"}, {"Authorization": "Basic abc"}]
)
def test_missing_or_wrong_key_answers_401(client, owned, method, path, headers):
    response = client.request(method, path.format(**owned), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_revoked_key_answers_401(client, acme):
    from distill.clock import utcnow

    with transaction(client.app_state.session_factory) as session:
        for key in session.query(ApiKey):
            key.revoked_at = utcnow()
    assert client.get("/v1/jobs", headers=acme).status_code == 401


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if "{" in r[1]])
def test_other_tenant_gets_404_on_every_route(client, acme, globex, owned, method, path):
    response = client.request(method, path.format(**owned), headers=globex)
    assert response.status_code == 404, response.text
    assert client.get(f"/v1/files/{owned['file']}", headers=acme).status_code == 200
    assert client.get(f"/v1/jobs/{owned['job']}", headers=acme).json()["status"] == "queued"


def test_lists_show_only_own_rows(client, acme, globex, owned):
    assert client.get("/v1/files", headers=globex).json()["data"] == []
    assert client.get("/v1/jobs", headers=globex).json()["data"] == []
    assert [f["id"] for f in client.get("/v1/files", headers=acme).json()["data"]] == [owned["file"]]


def test_health_needs_no_key(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
