"""The worker checks a spec against what it actually loaded, with the same rules (distill.plan) as the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import digits_arrays, npz_bytes
from sqlalchemy import select

from client.sdk import Client, DistillError
from distill.db import make_engine, make_session_factory
from distill.ids import new_job_id
from distill.jobstate import JobStatus
from distill.queue import enqueue_job, make_celery
from distill.spec import JobSpec
from distill.tables import File, Job

pytestmark = pytest.mark.integration


def test_a_job_that_got_past_the_api_fails_invalid_spec_in_the_worker(stack, tmp_path: Path) -> None:
    acme: Client = stack.client("acme")
    x, y = digits_arrays()
    path = tmp_path / "one-class.npz"
    path.write_bytes(npz_bytes(x[:40], 0 * y[:40]))
    one_class = acme.upload_file(path, "dataset")
    spec = {"data": {"train": {"file": one_class["id"]}}, "training": {"epochs": 1}}
    with pytest.raises(DistillError) as refused:
        acme.create_job(spec)
    assert refused.value.status == 422
    # The same spec queued without the API's check (as a job queued by an older API would be):
    engine = make_engine(stack.settings.database_url)
    job_id = new_job_id()
    with make_session_factory(engine)() as session:
        tenant_id = session.scalar(select(File.tenant_id).where(File.id == one_class["id"]))
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant_id,
                spec=JobSpec.model_validate(spec).model_dump(mode="json"),
                status=JobStatus.QUEUED,
                progress={"epoch": 0, "epochs": 1, "step": 0, "steps": 0},
            )
        )
        session.commit()
    engine.dispose()
    enqueue_job(make_celery(stack.settings), job_id)
    final = acme.wait(job_id, poll_interval=0.3, timeout=120)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "invalid_spec"
    assert final["error"]["message"].startswith("data.train:")
    assert "at least two classes" in final["error"]["message"]
