"""``/v1/files``: upload, validation (a broken file answers 422 and nothing is stored), list, get, delete."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from factories import csv_bytes, digits_arrays, npz_bytes
from fastapi.testclient import TestClient

from api.app import create_app
from distill.nets import build_model
from distill.settings import Settings
from distill.spec import MLPConfig, StoredModelConfig
from worker.engine.export import model_to_safetensors


def upload(client: TestClient, headers: dict[str, str], name: str, data: bytes, purpose: str = "dataset"):
    return client.post("/v1/files", headers=headers, files={"file": (name, data)}, data={"purpose": purpose})


def stored_objects(client: TestClient) -> int:
    store = client.app_state.store  # type: ignore[attr-defined]
    listing = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + "/")
    return int(listing.get("KeyCount", 0))


def model_bytes(input_shape: list[int], num_classes: int = 10) -> bytes:
    cfg = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=input_shape, num_classes=num_classes)
    return model_to_safetensors(build_model(cfg), cfg)


def test_upload_npz_dataset_answers_201_with_metadata(client, acme):
    x, y = digits_arrays()
    data = npz_bytes(x, y)
    response = upload(client, acme, "digits.npz", data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("file_")
    assert body["object"] == "file"
    assert body["filename"] == "digits.npz"
    assert body["bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["purpose"] == "dataset"
    assert body["created_at"]
    assert body["metadata"]["input_shape"] == [8, 8]
    assert body["metadata"]["num_classes"] == 10
    assert client.get(f"/v1/files/{body['id']}", headers=acme).json() == body


def test_upload_csv_and_unlabeled_transfer_set(client, acme):
    x, y = digits_arrays(flat=True)
    labeled = upload(client, acme, "train.csv", csv_bytes(x[:100], y[:100])).json()
    assert labeled["metadata"]["has_labels"] is True
    assert labeled["metadata"]["input_shape"] == [64]
    unlabeled = upload(client, acme, "transfer.npz", npz_bytes(x[:50])).json()
    assert unlabeled["metadata"]["has_labels"] is False
    assert unlabeled["metadata"]["num_classes"] is None


def test_upload_model_reads_its_config(client, acme):
    response = upload(client, acme, "teacher.safetensors", model_bytes([8, 8]), purpose="model")
    assert response.status_code == 201, response.text
    meta = response.json()["metadata"]
    assert meta["config"]["input_shape"] == [8, 8]
    assert meta["config"]["model"]["arch"] == "mlp"
    assert meta["parameters"] == 64 * 16 + 16 + 16 * 10 + 10


@pytest.mark.parametrize(
    ("name", "data", "purpose", "words"),
    [
        ("bad.csv", b"f0,f1,label\n1,abc,0\n", "dataset", "abc"),
        ("bad.csv", b"f0,f1,label\n1,2,0.5\n", "dataset", "label"),
        ("empty.csv", b"f0,label\n", "dataset", "row"),
        ("bad.npz", b"this is not a zip", "dataset", ""),
        ("pickled.npz", npz_bytes(np.array([{"a": 1}], dtype=object)), "dataset", ""),
        ("model.pt", pickle.dumps({"weight": [1, 2, 3]}), "model", "safetensors"),
        ("model.safetensors", pickle.dumps({"weight": [1, 2, 3]}), "model", ""),
        ("data.npz", npz_bytes(np.zeros((3, 2), np.float32)), "weights", "purpose"),
    ],
)
def test_broken_upload_answers_422_and_stores_nothing(client, acme, name, data, purpose, words):
    before = stored_objects(client)
    response = upload(client, acme, name, data, purpose)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] in {"file", "purpose"}
    assert words.lower() in error["message"].lower()
    assert stored_objects(client) == before
    assert client.get("/v1/files", headers=acme).json()["data"] == []


def test_empty_upload_answers_422(client, acme):
    response = upload(client, acme, "x.npz", b"")
    assert response.status_code == 422
    assert "empty" in response.json()["error"]["message"]


def test_missing_purpose_names_the_field(client, acme):
    response = client.post("/v1/files", headers=acme, files={"file": ("a.npz", b"x")})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "purpose"


def test_list_is_newest_first_with_cursor_and_delete_removes_the_object(client, acme):
    x, y = digits_arrays()
    ids = [upload(client, acme, f"d{i}.npz", npz_bytes(x[:20], y[:20])).json()["id"] for i in range(3)]
    page = client.get("/v1/files?limit=2", headers=acme).json()
    assert page["object"] == "list"
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = client.get(f"/v1/files?limit=2&after={page['data'][-1]['id']}", headers=acme).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False

    objects = stored_objects(client)
    deleted = client.delete(f"/v1/files/{ids[0]}", headers=acme)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": ids[0], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{ids[0]}", headers=acme).status_code == 404
    assert stored_objects(client) == objects - 1


# ------------------------------------------------------------------- limits while streaming, safe names


@contextmanager
def client_with(api_settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    """The real app on the test services, with some settings changed."""
    app = create_app(api_settings.model_copy(update=overrides))
    with TestClient(app, follow_redirects=False) as client:
        client.app_state = app.state  # type: ignore[attr-defined]
        yield client
    app.state.engine.dispose()


def multipart_chunks(name: str, size: int, pulled: list[int], boundary: str = "b0undary") -> Iterator[bytes]:
    """A multipart upload body of a ``size``-byte file, produced 1 MiB at a time; ``pulled`` counts the
    file bytes the server asked for."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    yield b"a,label\n"
    sent = 0
    while sent < size:
        chunk = b"1,0\n" * (1 << 18)
        sent += len(chunk)
        pulled.append(len(chunk))
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_body_over_the_limit_answers_413_while_streaming_and_stores_nothing(api_settings, acme):
    limit = 4 * 1024**2
    with client_with(api_settings, max_upload_bytes=limit) as client:
        pulled: list[int] = []
        before = stored_objects(client)
        response = client.post(
            "/v1/files",
            headers={**acme, "Content-Type": "multipart/form-data; boundary=b0undary"},
            content=multipart_chunks("big.csv", 64 * 1024**2, pulled),
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"]["field"] == "file"
        assert stored_objects(client) == before

        declared = client.post(
            "/v1/files",
            headers={
                **acme,
                "Content-Type": "multipart/form-data; boundary=b0undary",
                "Content-Length": str(10 * limit),
            },
            content=b"--b0undary--\r\n",
        )
        assert declared.status_code == 413, declared.text
        assert client.get("/v1/files", headers=acme).json()["data"] == []


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/digits.npz", "digits.npz"),
        ("C:\\Users\\me\\digits.npz", "digits.npz"),
        ("..\\.hidden.npz", "hidden.npz"),
    ],
)
def test_stored_filenames_are_safe_base_names(client, acme, sent, stored):
    x, y = digits_arrays()
    response = upload(client, acme, sent, npz_bytes(x[:20], y[:20]))
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == stored


def test_a_zip_is_a_dataset_only_as_an_npz(client, acme):
    x, y = digits_arrays()
    response = upload(client, acme, "data.csv", npz_bytes(x[:20], y[:20]))
    assert response.status_code == 422
    assert "zip" in response.json()["error"]["message"]
