"""Per-key rate limits (429 + Retry-After) and ceilings on what a spec may ask (422 naming the field)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from factories import digits_arrays, npz_bytes
from fastapi.testclient import TestClient
from limits import parse_many
from limits.storage import storage_from_string
from test_files_api import upload
from test_jobs_api import DIGITS

from api.app import create_app
from api.ratelimit import RateLimited, RateLimiter
from api.services.ceilings import cnn_parameters, mlp_parameters
from distill.nets import build_model, count_parameters
from distill.settings import Settings
from distill.spec import CNNConfig, MLPConfig, StoredModelConfig


@contextmanager
def client_with(api_settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    """The real app on the test services, with some settings changed."""
    app = create_app(api_settings.model_copy(update=overrides))
    with TestClient(app, follow_redirects=False) as client:
        client.app_state = app.state  # type: ignore[attr-defined]
        yield client
    app.state.engine.dispose()


# ------------------------------------------------------------------------------------------- rate limits


def test_a_key_over_its_rate_limit_answers_429_with_retry_after(api_settings, acme, globex):
    with client_with(api_settings, rate_limit="3/minute") as client:
        answers = [client.get("/v1/jobs", headers=acme) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        assert "3 per 1 minute" in limited.json()["error"]["message"]
        # the limit is per key: another key is not held back
        assert client.get("/v1/jobs", headers=globex).status_code == 200
        # a write is limited the same way
        assert client.post("/v1/jobs", headers=acme, json=DIGITS).status_code == 429


def test_limits_are_shared_through_redis_by_every_api_process(api_settings, acme):
    assert api_settings.broker_url.startswith("redis://")
    with (
        client_with(api_settings, rate_limit="2/minute") as one,
        client_with(api_settings, rate_limit="2/minute") as two,
    ):
        assert one.get("/v1/files", headers=acme).status_code == 200
        assert two.get("/v1/files", headers=acme).status_code == 200
        assert one.get("/v1/files", headers=acme).status_code == 429
        assert two.get("/v1/files", headers=acme).status_code == 429


def test_no_rate_limit_when_unset(api_settings, acme):
    with client_with(api_settings, rate_limit="") as client:
        assert all(client.get("/v1/jobs", headers=acme).status_code == 200 for _ in range(5))


def test_in_process_limiter_for_the_embedded_default():
    limiter = RateLimiter(parse_many("2/second;3/minute"), storage_from_string("memory://"))
    limiter.hit("key_a")
    limiter.hit("key_a")
    with pytest.raises(RateLimited) as caught:
        limiter.hit("key_a")
    assert caught.value.retry_after >= 1
    limiter.hit("key_b")


# -------------------------------------------------------------------------------------------- ceilings


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": {"arch": "mlp", "hidden": [65536] * 16}}, "model.hidden"),
        ({"training": {"epochs": 10_000}}, "training.epochs"),
        ({"training": {"epochs": 2, "max_runtime_s": 10**9}}, "training.max_runtime_s"),
        ({"model": {"arch": "cnn", "channels": [4096] * 8, "kernel_size": 15}}, "model.channels"),
        (
            {
                "model": {
                    "arch": "encoder",
                    "layers": 6,
                    "hidden": 4096,
                    "intermediate": 65536,
                    "init": "random",
                }
            },
            "model",
        ),
    ],
)
def test_specs_over_the_default_ceilings_answer_422_naming_the_field(client, acme, overrides, field):
    response = client.post("/v1/jobs", headers=acme, json={**DIGITS, **overrides})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"].startswith(field)
    assert error["code"] == "over_limit"
    assert client.get("/v1/jobs", headers=acme).json()["data"] == []


def test_ceilings_are_configurable(api_settings, acme):
    with client_with(api_settings, max_epochs=5, max_parameters=10_000, max_runtime_s=60) as client:
        ok = {
            "data": DIGITS["data"],
            "model": {"hidden": [32]},
            "training": {"epochs": 5, "max_runtime_s": 60},
        }
        assert client.post("/v1/jobs", headers=acme, json=ok).status_code == 201
        epochs = {**ok, "training": {"epochs": 6}}
        assert (
            client.post("/v1/jobs", headers=acme, json=epochs).json()["error"]["field"] == "training.epochs"
        )
        runtime = {**ok, "training": {"epochs": 1, "max_runtime_s": 61}}
        answer = client.post("/v1/jobs", headers=acme, json=runtime).json()["error"]
        assert answer["field"] == "training.max_runtime_s"
        # digits: 64 inputs, 10 classes; 64*200+200 + 200*10+10 = 15010 parameters
        wide = {**ok, "model": {"hidden": [200]}}
        answer = client.post("/v1/jobs", headers=acme, json=wide).json()["error"]
        assert answer["field"] == "model.hidden"
        assert "15,010 parameters" in answer["message"]


def test_parameter_ceiling_uses_an_uploaded_datasets_shape(api_settings, acme):
    x, y = digits_arrays()
    with client_with(api_settings, max_parameters=20_000) as client:
        file_id = upload(client, acme, "d.npz", npz_bytes(x[:50], y[:50])).json()["id"]
        spec = {"data": {"train": {"file": file_id}}, "model": {"hidden": [300]}, "training": {"epochs": 1}}
        answer = client.post("/v1/jobs", headers=acme, json=spec)
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "model.hidden"
        spec["model"] = {"hidden": [100]}
        assert client.post("/v1/jobs", headers=acme, json=spec).status_code == 201


@pytest.mark.parametrize(
    ("model", "input_shape"),
    [
        (MLPConfig(hidden=[32, 16]), [8, 8]),
        (CNNConfig(channels=[8, 16], kernel_size=3), [8, 8]),
        (CNNConfig(channels=[4], kernel_size=5), [40]),
        (CNNConfig(channels=[4, 4], kernel_size=2), [3, 8, 8]),
    ],
)
def test_parameter_count_matches_the_built_model(model, input_shape):
    built = build_model(StoredModelConfig(model=model, input_shape=input_shape, num_classes=10))
    counted = (
        mlp_parameters(model, input_shape, 10)
        if isinstance(model, MLPConfig)
        else cnn_parameters(model, input_shape, 10)
    )
    assert counted == count_parameters(built)
