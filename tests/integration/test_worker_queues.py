"""One ``distill worker --queues a,b`` serves jobs from both queues; its log lines are JSON carrying each
job's ``job_id`` and ``tenant``; its exporter answers ``/metrics`` with the GPU families; the runner's
events carry the status, the learning rate and the throughput, and ``/metrics`` of the job gives them as
series.

The stack's own worker serves only the default queue, so a job on ``…-qa`` or ``…-qb`` that succeeds was
trained by the worker started here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port, start_worker, stop_process, wait_for

from distill.client.sdk import Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_queue_worker(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = stack.env["DISTILL_QUEUE_NAME"]
    queues = [f"{base}-qa", f"{base}-qb"]
    log_path = tmp_path_factory.mktemp("two-queues") / "worker.log"
    port = free_port()
    env = {
        **stack.env,
        "DISTILL_LOG_FORMAT": "json",
        "DISTILL_WORKER_ID": "two-queues",
        "DISTILL_WORKER_METRICS_PORT": str(port),
        "DISTILL_WORKER_METRICS_HOST": "127.0.0.1",
    }
    process = start_worker(env, log_path, "--queues", ",".join(queues))
    try:
        yield {"queues": queues, "log": log_path, "metrics": f"http://127.0.0.1:{port}/metrics"}
    finally:
        stop_process(process)


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def test_one_worker_runs_jobs_from_both_of_its_queues(stack: Any, two_queue_worker) -> None:
    acme: Client = stack.client("acme")
    jobs = []
    for queue in two_queue_worker["queues"]:
        spec = {
            "name": f"on {queue}",
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [16]},
            "training": {"epochs": 2, "batch_size": 64},
            "resources": {"queue": queue},
        }
        jobs.append(acme.create_job(spec))
    finals = [acme.wait(job.id, poll_interval=0.3, timeout=240) for job in jobs]
    assert [final.status for final in finals] == ["succeeded", "succeeded"]
    workers = {
        event.data.get("worker")
        for job in jobs
        for event in acme.iter_events(job.id)
        if event.message.startswith("job started")
    }
    assert workers == {"two-queues"}

    # every status event says the status it records
    events = list(acme.iter_events(jobs[0].id))
    statuses = [event.data.get("status") for event in events if "status" in event.data]
    assert statuses == ["queued", "running", "succeeded"]
    # epoch events carry the learning rate and the throughput; the metrics give them as series
    epochs = [event for event in events if event.message.startswith("epoch ")]
    assert len(epochs) == 2
    for event in epochs:
        assert event.data["learning_rate"] == pytest.approx(jobs[0].spec["training"]["learning_rate"])
        assert event.data["throughput"] > 0
    metrics = httpx.get(
        f"{stack.url}/v1/jobs/{jobs[0].id}/metrics", headers={"Authorization": f"Bearer {acme.api_key}"}
    ).json()
    points = metrics["series"][0]["points"]
    assert [p["throughput"] for p in points] == [e.data["throughput"] for e in epochs]
    assert [p["learning_rate"] for p in points] == [e.data["learning_rate"] for e in epochs]

    # the worker's JSON log lines about each job carry its id and its tenant
    def logged() -> bool:
        ids = {line.get("job_id") for line in json_lines(two_queue_worker["log"])}
        return all(job.id in ids for job in jobs)

    wait_for(logged, timeout=10)
    for job in jobs:
        about = [line for line in json_lines(two_queue_worker["log"]) if line.get("job_id") == job.id]
        assert about and all(line.get("tenant") == "acme" for line in about)
        assert any(line["message"] == f"job {job.id}: succeeded" for line in about)


def test_the_worker_exports_gpu_metric_families_empty_on_cpu(two_queue_worker) -> None:
    def scrape() -> str | None:
        try:
            return httpx.get(str(two_queue_worker["metrics"]), timeout=5).text
        except httpx.HTTPError:
            return None

    wait_for(lambda: scrape() is not None, timeout=60)
    text = scrape() or ""
    for family in (
        "distill_worker_gpu_memory_allocated_bytes",
        "distill_worker_gpu_memory_reserved_bytes",
        "distill_worker_gpu_memory_used_bytes",
        "distill_worker_gpu_utilization_ratio",
    ):
        assert f"# TYPE {family} gauge" in text
        assert not [line for line in text.splitlines() if line.startswith(family + "{")]  # no GPU here
