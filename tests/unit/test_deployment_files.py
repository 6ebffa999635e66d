"""docker-compose.yml and the Dockerfiles: valid, wired as documented, and in step with the settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
API_DOCKERFILE = ROOT / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"

SERVICES = {"postgres", "redis", "minio", "migrate", "api", "worker"}
DISTILL_SERVICES = ("migrate", "api", "worker")
REQUIRED_ENV = {
    "DISTILL_DATABASE_URL",
    "DISTILL_BROKER_URL",
    "DISTILL_STORAGE_URL",
    "DISTILL_S3_ENDPOINT_URL",
    "DISTILL_S3_PUBLIC_ENDPOINT_URL",
    "DISTILL_S3_ACCESS_KEY_ID",
    "DISTILL_S3_SECRET_ACCESS_KEY",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # SafeLoader resolves the anchors and `<<` merges
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/services.sh installs Debian's package as root)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stdout}\n{result.stderr}"


def test_compose_services_and_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= SERVICES

    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert str(services["redis"]["image"]).startswith("redis:7")
    assert str(services["minio"]["image"]).startswith("minio/minio")
    assert command(services["minio"])[:2] == ["server", "/data"]
    for name in ("postgres", "redis", "minio"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"

    assert "migrate" in command(services["migrate"])
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    assert depends_on(services["migrate"]).get("minio") == "service_healthy"
    assert services["migrate"].get("restart", "no") == "no"

    api = services["api"]
    assert command(api)[:2] == ["distill", "serve"]
    assert any(str(port).split(":")[0] == "8000" for port in api.get("ports", []))
    assert depends_on(api).get("migrate") == "service_completed_successfully"

    worker = services["worker"]
    assert command(worker)[:2] == ["distill", "worker"]
    assert depends_on(worker).get("migrate") == "service_completed_successfully"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    # `--scale worker=N` needs no fixed container name and no published host port.
    assert "container_name" not in worker
    assert not worker.get("ports")

    assert {"postgres-data", "redis-data", "minio-data"} <= set(compose.get("volumes") or {})


def test_compose_env_matches_settings(compose: dict[str, Any]) -> None:
    known = {f"DISTILL_{name.upper()}" for name in Settings.model_fields}
    services = compose["services"]
    for name in DISTILL_SERVICES:
        env = environment(services[name])
        distill_vars = {key for key in env if key.startswith("DISTILL_")}
        assert distill_vars <= known, f"{name}: unknown settings {sorted(distill_vars - known)}"
        assert env.keys() >= REQUIRED_ENV, f"{name}: missing {sorted(REQUIRED_ENV - env.keys())}"
        assert env["DISTILL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["DISTILL_DATABASE_URL"]
        assert env["DISTILL_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["DISTILL_STORAGE_URL"].startswith("s3://")
        assert env["DISTILL_S3_ENDPOINT_URL"] == "http://minio:9000"

    # The S3 credentials are MinIO's root credentials.
    minio_env = environment(services["minio"])
    api_env = environment(services["api"])
    assert api_env["DISTILL_S3_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert api_env["DISTILL_S3_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]


def dockerfile_cmd(text: str) -> str:
    commands = re.findall(r"^CMD\s+(.+)$", text, flags=re.MULTILINE)
    assert commands, "no CMD"
    return commands[-1]


def test_api_dockerfile() -> None:
    text = API_DOCKERFILE.read_text()
    assert re.search(r"^FROM\s+python:3\.11-slim", text, flags=re.MULTILINE)
    assert "torch==${TORCH_VERSION}" in text and "TORCH_VERSION=2.13.0" in text
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", text, flags=re.MULTILINE), "must run as a non-root user"
    healthcheck = re.search(r"^HEALTHCHECK\b(?:.*\\\n)*.*$", text, flags=re.MULTILINE)
    assert healthcheck and "/healthz" in healthcheck.group(0)
    assert dockerfile_cmd(text) == '["distill", "serve", "--host", "0.0.0.0", "--port", "8000"]'


def test_worker_dockerfile() -> None:
    text = WORKER_DOCKERFILE.read_text()
    base = re.search(r"^ARG\s+CUDA_IMAGE=(\S+)", text, flags=re.MULTILINE)
    assert base and base.group(1).startswith("nvidia/cuda:") and "cudnn-runtime" in base.group(1)
    assert "python3.11" in text
    assert "download.pytorch.org/whl/cu" in text and "TORCH_VERSION=2.13.0" in text
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", text, flags=re.MULTILINE), "must run as a non-root user"
    assert dockerfile_cmd(text) == '["distill", "worker"]'


def test_dockerignore_keeps_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".distill"} <= ignored
