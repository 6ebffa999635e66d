"""``Idempotency-Key`` on POST /v1/jobs and /v1/files: a retry gets the first answer, never a second job."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from factories import digits_arrays, npz_bytes
from sqlalchemy import func, select, update
from test_files_api import upload
from test_jobs_api import DIGITS, queued_messages

from api.idempotency import fingerprint
from distill.clock import utcnow
from distill.db import transaction
from distill.spec import JobSpec
from distill.tables import File, IdempotencyKey, Job, Tenant


def count(client, model) -> int:
    with client.app_state.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)))


def with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def test_same_key_and_body_answers_the_first_response_and_makes_one_job(client, acme):
    first = client.post("/v1/jobs", headers=with_key(acme, "k-1"), json=DIGITS)
    assert first.status_code == 201, first.text
    again = client.post("/v1/jobs", headers=with_key(acme, "k-1"), json=DIGITS)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert [j["id"] for j in client.get("/v1/jobs", headers=acme).json()["data"]] == [first.json()["id"]]
    assert queued_messages(client) == [first.json()["id"]]


def test_same_body_with_keys_in_another_order_is_the_same_request(client, acme):
    body = {"training": {"epochs": 2}, "data": {"train": {"builtin": "digits"}}}
    first = client.post("/v1/jobs", headers=with_key(acme, "k-order"), json=DIGITS).json()
    again = client.post("/v1/jobs", headers=with_key(acme, "k-order"), json=body)
    assert again.status_code == 201 and again.json()["id"] == first["id"]


def test_without_a_key_each_submission_is_a_new_job(client, acme):
    ids = {client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"] for _ in range(2)}
    assert len(ids) == 2


def test_same_key_with_another_body_answers_422_naming_the_header(client, acme):
    assert client.post("/v1/jobs", headers=with_key(acme, "k-2"), json=DIGITS).status_code == 201
    other = {**DIGITS, "training": {"epochs": 3}}
    response = client.post("/v1/jobs", headers=with_key(acme, "k-2"), json=other)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "Idempotency-Key"
    assert error["code"] == "idempotency_key_reused"
    assert count(client, Job) == 1


def test_same_key_on_another_route_answers_422(client, acme):
    assert client.post("/v1/jobs", headers=with_key(acme, "k-route"), json=DIGITS).status_code == 201
    x, y = digits_arrays()
    response = client.post(
        "/v1/files",
        headers=with_key(acme, "k-route"),
        files={"file": ("d.npz", npz_bytes(x[:40], y[:40]))},
        data={"purpose": "dataset"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert count(client, File) == 0


def test_keys_are_scoped_by_tenant(client, acme, globex):
    mine = client.post("/v1/jobs", headers=with_key(acme, "shared"), json=DIGITS).json()
    theirs = client.post("/v1/jobs", headers=with_key(globex, "shared"), json=DIGITS)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert client.get(f"/v1/jobs/{theirs.json()['id']}", headers=acme).status_code == 404


def _tenant_id(client, name: str) -> str:
    with client.app_state.session_factory() as session:
        return str(session.scalar(select(Tenant.id).where(Tenant.name == name)))


def _digits_fingerprint() -> str:
    return fingerprint("POST /v1/jobs", JobSpec.model_validate(DIGITS).model_dump(mode="json"))


def test_a_request_still_in_progress_under_the_key_answers_409(client, acme):
    # What a concurrent request with the same key and body leaves while it runs: claimed, no answer yet.
    with transaction(client.app_state.session_factory) as session:
        session.add(
            IdempotencyKey(
                tenant_id=_tenant_id(client, "acme"), key="k-busy", request_sha256=_digits_fingerprint()
            )
        )
    response = client.post("/v1/jobs", headers=with_key(acme, "k-busy"), json=DIGITS)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "idempotency_key_in_progress"
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert count(client, Job) == 0


def test_a_claim_abandoned_by_a_dead_request_is_taken_over(client, acme, api_settings):
    stale = utcnow() - timedelta(seconds=api_settings.idempotency_lock_seconds + 5)
    with transaction(client.app_state.session_factory) as session:
        session.add(
            IdempotencyKey(
                tenant_id=_tenant_id(client, "acme"),
                key="k-dead",
                request_sha256=_digits_fingerprint(),
                created_at=stale,
            )
        )
    response = client.post("/v1/jobs", headers=with_key(acme, "k-dead"), json=DIGITS)
    assert response.status_code == 201, response.text


def test_keys_expire_after_the_ttl(client, acme, api_settings):
    first = client.post("/v1/jobs", headers=with_key(acme, "k-old"), json=DIGITS).json()
    assert api_settings.idempotency_ttl_seconds >= 24 * 3600
    with transaction(client.app_state.session_factory) as session:
        session.execute(
            update(IdempotencyKey).values(
                created_at=utcnow() - timedelta(seconds=api_settings.idempotency_ttl_seconds + 1)
            )
        )
    again = client.post("/v1/jobs", headers=with_key(acme, "k-old"), json=DIGITS)
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]


def test_a_key_is_kept_for_a_day(client, acme):
    first = client.post("/v1/jobs", headers=with_key(acme, "k-day"), json=DIGITS).json()
    with transaction(client.app_state.session_factory) as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=23, minutes=59)))
    again = client.post("/v1/jobs", headers=with_key(acme, "k-day"), json=DIGITS)
    assert again.json()["id"] == first["id"]


def test_a_failed_request_gives_its_key_back(client, acme):
    bad = {"data": {"train": {"file": "file_missing"}}}
    response = client.post("/v1/jobs", headers=with_key(acme, "k-fix"), json=bad)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "data.train.file"
    fixed = client.post("/v1/jobs", headers=with_key(acme, "k-fix"), json=DIGITS)
    assert fixed.status_code == 201, fixed.text
    assert count(client, IdempotencyKey) == 1


def test_bad_keys_answer_422(client, acme):
    for key in ("x" * 256, "has space"):
        response = client.post("/v1/jobs", headers=with_key(acme, key), json=DIGITS)
        assert response.status_code == 422, (key, response.text)
        assert response.json()["error"]["field"] == "Idempotency-Key"
    assert count(client, Job) == 0


def test_file_upload_with_the_same_key_and_content_is_stored_once(client, acme):
    x, y = digits_arrays()
    data = npz_bytes(x[:40], y[:40])
    headers = with_key(acme, "f-1")
    first = upload(client, headers, "d.npz", data)
    assert first.status_code == 201, first.text
    again = upload(client, headers, "d.npz", data)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(client, File) == 1
    other = upload(client, headers, "d.npz", npz_bytes(x[:41], y[:41]))
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"
    renamed = upload(client, headers, "e.npz", data)
    assert renamed.status_code == 422
    assert count(client, File) == 1


def test_an_invalid_upload_gives_its_key_back(client, acme):
    headers = with_key(acme, "f-bad")
    assert upload(client, headers, "d.npz", b"not an npz").status_code == 422
    x, y = digits_arrays()
    fixed = upload(client, headers, "d.npz", npz_bytes(x[:40], y[:40]))
    assert fixed.status_code == 201, fixed.text


def test_concurrent_duplicates_make_exactly_the_unique_jobs(client, acme):
    # 40 requests at once (the server's thread pool is 40 wide, its database pool 20): each key sent twice,
    # the copies racing. A copy that finds its key in progress answers 409 and is retried, as a client would.
    specs = {f"race-{i}": {**DIGITS, "name": f"race-{i}"} for i in range(20)}
    work = [key for key in specs for _ in range(2)]

    def send(key: str) -> tuple[str, str, list[int]]:
        seen = []
        for _ in range(200):
            response = client.post("/v1/jobs", headers=with_key(acme, key), json=specs[key])
            seen.append(response.status_code)
            if response.status_code == 201:
                return key, response.json()["id"], seen
            assert response.status_code == 409, response.text
            time.sleep(0.05)
        raise AssertionError(f"{key}: still in progress after 200 tries")

    with ThreadPoolExecutor(len(work)) as pool:
        answers = list(pool.map(send, work))
    ids: dict[str, set[str]] = {}
    for key, job_id, _seen in answers:
        ids.setdefault(key, set()).add(job_id)
    assert all(len(found) == 1 for found in ids.values()), ids
    assert count(client, Job) == len(specs)
    names = {j["name"] for j in client.get("/v1/jobs?limit=100", headers=acme).json()["data"]}
    assert names == set(specs)
