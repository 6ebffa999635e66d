"""docker-compose.yml scale-out: a GPU of its own per GPU worker, a CPU-only profile, pinned images and two
worker pools on named queues that the API knows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(data["services"])


def workers(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if list(s.get("command") or [])[:2] == ["distill", "worker"]}


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    return [d for d in reservations.get("devices") or [] if "gpu" in d.get("capabilities", [])]


def test_each_gpu_worker_reserves_a_gpu_of_its_own(services):
    ids = []
    for name, service in workers(services).items():
        for device in gpu_devices(service):
            assert "count" not in device, f"{name}: `count` gives every replica the same GPU; use device_ids"
            ids.extend(device["device_ids"])
    assert len(ids) >= 2 and len(ids) == len(set(ids)), f"GPU ids must differ per worker: {ids}"


def test_gpu_workers_are_in_the_gpu_profile_and_a_cpu_profile_serves_the_default_queue(services):
    for name, service in workers(services).items():
        if gpu_devices(service):
            assert service.get("profiles") == ["gpu"], f"{name} needs the NVIDIA runtime: profile gpu only"
    cpu = [s for s in workers(services).values() if "cpu" in (s.get("profiles") or [])]
    assert cpu, "no worker in the cpu profile"
    assert all(not gpu_devices(s) and s["environment"]["DISTILL_DEVICE"] == "cpu" for s in cpu)
    assert any(s["environment"]["DISTILL_QUEUE_NAME"] == "distill" for s in cpu)
    # Without a profile nothing needs a GPU.
    assert not [n for n, s in services.items() if gpu_devices(s) and not s.get("profiles")]


def test_two_worker_pools_on_queues_the_api_accepts(services):
    pools = {s["environment"]["DISTILL_QUEUE_NAME"] for s in workers(services).values()}
    assert len(pools) >= 2
    accepted = set(services["api"]["environment"]["DISTILL_QUEUES"].split(","))
    assert pools <= accepted


def test_every_image_is_pinned(services):
    for name, service in services.items():
        image = str(service["image"])
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
        assert re.search(r":\D*\d", image), f"{name}: {image} has no version in its tag"
