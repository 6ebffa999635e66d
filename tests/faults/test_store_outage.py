"""The object store unreachable while a job uploads its artifacts.

Invariant: a job is succeeded exactly when its artifacts exist. A short outage is retried through; a long
one fails the job with ``storage_unavailable`` and leaves no artifact behind. The worker reaches the
shared S3 server through a proxy of this test's own (the shared server is never stopped).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from faultkit import FaultStack, Proxy
from helpers import wait_for

pytestmark = pytest.mark.integration

SPEC = {
    "data": {"train": {"builtin": "digits"}},
    "model": {"arch": "mlp", "hidden": [16]},
    "training": {"epochs": 40},
}


@pytest.fixture
def proxy(s3_server) -> Iterator[Proxy]:
    proxy = Proxy(int(urlparse(s3_server).port or 80))
    yield proxy
    proxy.close()


@pytest.fixture
def stack(base_env, proxy, tmp_path) -> Iterator[FaultStack]:
    env = {
        **base_env,
        "DISTILL_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "DISTILL_STORAGE_RETRY_SECONDS": "8",
    }
    stack = FaultStack(env, tmp_path)
    yield stack
    stack.close()


def stored_artifacts(base_env: dict[str, str], job_id: str) -> list[str]:
    """What the store really holds for the job (read straight from the shared S3 server)."""
    import boto3

    bucket, _, prefix = base_env["DISTILL_STORAGE_URL"].removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=base_env["DISTILL_S3_ENDPOINT_URL"],
        aws_access_key_id=base_env["DISTILL_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=base_env["DISTILL_S3_SECRET_ACCESS_KEY"],
        region_name=base_env["DISTILL_S3_REGION"],
    )
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", []) if f"/jobs/{job_id}/artifacts/" in o["Key"]]


def test_a_store_down_during_upload_fails_the_job_and_keeps_nothing(stack, proxy, base_env):
    stack.start_workers("a")
    job_id = stack.client().create_job(SPEC)["id"]
    wait_for(lambda: stack.job_row(job_id).status == "running", timeout=120, interval=0.1)
    proxy.down()
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "storage_unavailable"
    assert "object store" in final["error"]["message"]
    assert stack.client().list_artifacts(job_id)["data"] == []
    proxy.up()
    assert stored_artifacts(base_env, job_id) == []


def test_a_short_store_outage_is_retried_and_the_job_succeeds(stack, proxy, base_env):
    stack.start_workers("a")
    job_id = stack.client().create_job(SPEC)["id"]
    wait_for(lambda: stack.job_row(job_id).status == "running", timeout=120, interval=0.1)
    proxy.down()
    wait_for(
        lambda: any(m.startswith("artifact upload failed") for m in stack.events(job_id)),
        timeout=120,
        interval=0.1,
    )
    proxy.up()
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    listed = {a["name"] for a in stack.client().list_artifacts(job_id)["data"]}
    assert "model.safetensors" in listed
    assert {key.rsplit("/", 1)[-1] for key in stored_artifacts(base_env, job_id)} == listed
