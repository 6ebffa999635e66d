"""``resources``: a job's message goes to the queue of the worker pool it names; ``gpus`` is checked
(data-parallel jobs up to ``DISTILL_MAX_GPUS``; text and causal-LM jobs unsharded)."""

from __future__ import annotations

import base64
import json

import redis
from fastapi.testclient import TestClient

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 2}}


def waiting(client: TestClient, queue: str) -> list[str]:
    settings = client.app_state.settings  # type: ignore[attr-defined]
    raw = redis.Redis.from_url(settings.broker_url).lrange(queue, 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in raw]


def test_a_job_naming_a_queue_is_sent_there_and_records_its_resources(client, acme):
    settings = client.app_state.settings  # type: ignore[attr-defined]
    pool = f"{settings.queue_name}-a100"
    try:
        response = client.post(
            "/v1/jobs", headers=acme, json={**DIGITS, "resources": {"queue": pool, "gpus": 1}}
        )
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["spec"]["resources"] == {"queue": pool, "gpus": 1, "sharding": "auto"}
        assert waiting(client, pool) == [job["id"]]
        assert waiting(client, settings.queue_name) == []

        plain = client.post("/v1/jobs", headers=acme, json=DIGITS).json()
        assert plain["spec"]["resources"] == {"queue": None, "gpus": 1, "sharding": "auto"}
        assert waiting(client, settings.queue_name) == [plain["id"]]
    finally:
        redis.Redis.from_url(settings.broker_url).delete(pool)


def test_a_bad_gpu_count_or_queue_name_answers_422_naming_the_field(client, acme):
    for resources, field in (
        ({"gpus": 65}, "resources.gpus"),
        ({"gpus": -1}, "resources.gpus"),
        ({"queue": "no spaces please"}, "resources.queue"),
        ({"cpus": 2}, "resources.cpus"),
    ):
        response = client.post("/v1/jobs", headers=acme, json={**DIGITS, "resources": resources})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field


def test_several_gpus_are_accepted_up_to_the_servers_limit(client, acme, monkeypatch):
    settings = client.app_state.settings  # type: ignore[attr-defined]
    pool = f"{settings.queue_name}-multi"
    monkeypatch.setattr(settings, "max_gpus", 4)
    over = client.post("/v1/jobs", headers=acme, json={**DIGITS, "resources": {"gpus": 5}})
    assert over.status_code == 422
    error = over.json()["error"]
    assert (error["field"], error["code"]) == ("resources.gpus", "over_limit")
    assert "DISTILL_MAX_GPUS" in error["message"]
    try:
        ok = client.post("/v1/jobs", headers=acme, json={**DIGITS, "resources": {"queue": pool, "gpus": 4}})
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["resources"] == {"queue": pool, "gpus": 4, "sharding": "auto"}
        assert waiting(client, pool) == [ok.json()["id"]]
    finally:
        redis.Redis.from_url(settings.broker_url).delete(pool)


def test_a_text_job_asking_for_several_sharded_gpus_answers_422_naming_resources_sharding(client, acme):
    spec = {
        "data": {"train": {"builtin": "digits"}},
        "model": {"arch": "encoder", "layers": 1},
        "resources": {"gpus": 2, "sharding": "fsdp"},
    }
    response = client.post("/v1/jobs", headers=acme, json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "resources.sharding" and "text jobs" in error["message"]


def test_a_queue_no_pool_serves_answers_422_when_the_pools_are_listed(client, acme, monkeypatch):
    settings = client.app_state.settings  # type: ignore[attr-defined]
    a100, cpu = f"{settings.queue_name}-a100", f"{settings.queue_name}-cpu"
    monkeypatch.setattr(settings, "queues", f"{a100},{cpu}")
    response = client.post("/v1/jobs", headers=acme, json={**DIGITS, "resources": {"queue": "gpu-h100"}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "resources.queue" and a100 in error["message"]
    try:
        ok = client.post("/v1/jobs", headers=acme, json={**DIGITS, "resources": {"queue": cpu}})
        assert ok.status_code == 201
        assert waiting(client, cpu) == [ok.json()["id"]]
    finally:
        redis.Redis.from_url(settings.broker_url).delete(cpu)
