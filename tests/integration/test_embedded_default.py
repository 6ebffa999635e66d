"""The same flow on the embedded default: ``distill standalone`` with nothing configured (SQLite, Celery's
filesystem transport, a local folder as object store), driven through the REST API."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import free_port, wait_for

from distill.client.sdk import Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    home = tmp_path_factory.mktemp("embedded-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    env["DISTILL_HOME"] = str(home)
    port = free_port()
    log = (home / "standalone.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "standalone", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=120, interval=0.3)
        key = subprocess.run(
            [sys.executable, "-m", "distill.cli", "keys", "create", "--tenant", "acme"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        with Client(url, key) as client:
            yield client, home
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()


def test_embedded_default_trains_distils_and_streams_artifacts(embedded, tmp_path):
    client, home = embedded
    assert (home / "distill.db").exists()
    teacher = client.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [64]},
            "training": {"epochs": 3, "learning_rate": 0.005},
        }
    )
    teacher = client.wait(teacher["id"], poll_interval=0.3, timeout=300)
    assert teacher["status"] == "succeeded", teacher["error"]
    assert teacher["result"]["test_accuracy"] > 0.8

    student = client.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "model": {"hidden": [8]},
            "teacher": {"job": teacher["id"]},
            "training": {"epochs": 2},
        }
    )
    student = client.wait(student["id"], poll_interval=0.3, timeout=300)
    assert student["status"] == "succeeded", student["error"]
    assert student["result"]["teacher_test_accuracy"] == pytest.approx(teacher["result"]["test_accuracy"])

    # A local store has no presigned URLs: the API streams the bytes itself.
    response = httpx.get(
        f"{client.base_url}/v1/jobs/{student['id']}/artifacts/model.safetensors",
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    assert response.status_code == 200
    listing = {a["name"]: a for a in client.list_artifacts(student["id"])["data"]}
    assert hashlib.sha256(response.content).hexdigest() == listing["model.safetensors"]["sha256"]
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == 'attachment; filename="model.safetensors"'
    curves = httpx.get(
        f"{client.base_url}/v1/jobs/{student['id']}/artifacts/curves.svg",
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    assert curves.status_code == 200 and curves.content.startswith(b"<?xml")
    assert curves.headers["content-type"] == "image/svg+xml"
    assert curves.headers["content-disposition"] == 'inline; filename="curves.svg"'
    assert hashlib.sha256(curves.content).hexdigest() == listing["curves.svg"]["sha256"]
    stored = list((home / "objects").rglob("model.safetensors"))
    assert len(stored) == 2  # the teacher's and the student's, under the tenant's prefix
    assert all("/tenants/" in str(p) for p in stored)
