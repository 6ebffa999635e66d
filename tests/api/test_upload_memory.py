"""Uploads in bounded memory (issue 9, item 7): the API process, run by uvicorn in a subprocess as in
production, grows by less than 100 MB while it receives, hashes, validates and stores a large CSV, and
refuses a small NPZ that would inflate to gigabytes without inflating it.

The peak is the kernel's own count (``VmHWM`` in ``/proc/PID/status``), reset before each upload through
``/proc/PID/clear_refs``; this is a memory assertion, not a timing one.
"""

from __future__ import annotations

import hashlib
import io
import os
import select
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import free_port, stop_process, wait_for

from distill.settings import Settings

CSV_BYTES = int(os.environ.get("DISTILL_TEST_UPLOAD_MB", "300")) * 1024**2
MAX_GROWTH = 100 * 1024**2
COLUMNS = 8
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS (Linux: ``5`` > clear_refs); the RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return kib(pid, "VmRSS")


@contextmanager
def running_api(
    api_settings: Settings, services_env: dict[str, str], log_path: Path, **env: str
) -> Iterator[tuple[str, int]]:
    """``uvicorn`` serving the API in a subprocess on the test services: its URL and pid."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1"]
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        env={
            **os.environ,
            **services_env,
            "DISTILL_QUEUE_NAME": api_settings.queue_name,
            "DISTILL_WEBHOOKS_DISPATCH": "false",
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), timeout=60)
        yield url, process.pid
    finally:
        stop_process(process)
        log.close()


@pytest.fixture
def api_process(
    api_settings: Settings, services_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, int]]:
    with running_api(api_settings, services_env, tmp_path / "api.log") as found:
        yield found


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def big_csv(path: Path, size: int) -> Path:
    """A valid labelled CSV of at least ``size`` bytes: one block of rows written over and over (long
    numbers, so that the file is large for its number of cells)."""
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.24f}" for v in rng.random(COLUMNS)) + f",{i % 10}" for i in range(10_000)]
    block = ("\n".join(rows) + "\n").encode()
    with path.open("wb") as f:
        f.write((",".join(f"f{i}" for i in range(COLUMNS)) + ",label\n").encode())
        for _ in range(-(-size // len(block))):
            f.write(block)
    return path


def zeros_npz(path: Path, rows: int, cols: int) -> Path:
    """A real NPZ (``np.load`` reads it) whose ``x`` is ``rows x cols`` float32 zeros, deflated, written
    fast: after a full flush deflate restarts, so one compressed block of zeros is repeated instead of
    compressing gigabytes. Under 4 GiB inflated (no zip64 fields needed)."""
    block = bytes(cols * 4 * 1024)
    assert rows % 1024 == 0 and rows * cols * 4 + 128 < 2**32
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)}
    )
    head = header.getvalue()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    packed = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    repeats = rows // 1024
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(block, crc)
    csize = len(first) + len(packed) * repeats + len(end)
    usize = len(head) + len(block) * repeats
    name = b"x.npy"
    fields = (20, 0, 8, 0, 0x21, crc, csize, usize, len(name), 0)
    with path.open("wb") as f:
        f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name + first)
        for _ in range(repeats):
            f.write(packed)
        f.write(end)
        directory = f.tell()
        f.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0) + name)
        size = f.tell() - directory
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, size, directory, 0))
    return path


def upload(url: str, headers: dict[str, str], path: Path, name: str) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(
            f"{url}/v1/files",
            headers=headers,
            files={"file": (name, f)},
            data={"purpose": "dataset"},
            timeout=600,
        )


def test_a_large_csv_upload_grows_the_api_by_less_than_100_mb(api_process, acme, tmp_path):
    url, pid = api_process
    warm = tmp_path / "warm.csv"
    warm.write_text("a,b,label\n1,2,0\n3,4,1\n")
    assert upload(url, acme, warm, "warm.csv").status_code == 201  # imports and pools are warm
    path = big_csv(tmp_path / "big.csv", CSV_BYTES)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)

    before = reset_peak(pid)
    response = upload(url, acme, path, "../../etc/big.csv")
    peak = kib(pid, "VmHWM")

    print(f"\nAPI peak growth: {(peak - before) / 1024**2:.1f} MB for a {size / 1024**2:.0f} MB CSV")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["bytes"] == size and body["sha256"] == digest.hexdigest()
    assert body["filename"] == "big.csv"
    assert body["metadata"]["input_shape"] == [COLUMNS] and body["metadata"]["num_classes"] == 10
    assert peak - before < MAX_GROWTH, (
        f"the API grew by {(peak - before) / 1024**2:.0f} MB for {size / 1024**2:.0f} MB"
    )


def test_a_small_npz_that_inflates_to_gigabytes_is_refused_without_inflating(api_process, acme, tmp_path):
    url, pid = api_process
    path = zeros_npz(tmp_path / "bomb.npz", rows=768 * 1024, cols=1024)  # 3 GiB inflated
    assert path.stat().st_size < 16 * 1024**2

    before = reset_peak(pid)
    response = upload(url, acme, path, "bomb.npz")
    peak = kib(pid, "VmHWM")

    print(f"\nAPI peak growth: {(peak - before) / 1024**2:.1f} MB for a 3 GiB-inflating NPZ")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "file" and "expand to" in error["message"]
    assert peak - before < MAX_GROWTH
    assert httpx.get(f"{url}/v1/files", headers=acme).json()["data"] == []


def test_a_body_over_the_limit_is_answered_413_before_it_is_all_sent(
    api_settings, services_env, acme, tmp_path
):
    """A chunked body (no Content-Length) past ``DISTILL_MAX_UPLOAD_BYTES``: the server answers 413 while
    the client is still sending, so the body is never received (nor spooled) whole."""
    limit, total = 4 * 1024**2, 256 * 1024**2
    env = {"DISTILL_MAX_UPLOAD_BYTES": str(limit)}
    with running_api(api_settings, services_env, tmp_path / "api.log", **env) as (url, _pid):
        host, port = url.removeprefix("http://").split(":")
        part = (
            b'--b0\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n'
            b'--b0\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\na,label\n'
        )
        head = (
            f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: {acme['Authorization']}\r\n"
            "Content-Type: multipart/form-data; boundary=b0\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"1,0\n" * (1 << 16)
        sent = 0
        answer = b""
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
            while sent < total:
                if select.select([conn], [], [], 0)[0]:
                    break  # the server has answered
                try:
                    conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
            while b"\r\n\r\n" not in answer and (data := conn.recv(65536)):
                answer += data
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < total // 4, f"sent {sent:,} of {total:,} bytes before the answer"
        assert httpx.get(f"{url}/v1/files", headers=acme).json()["data"] == []
