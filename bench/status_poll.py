"""The status poll against a bare select: throughput of an authenticated ``GET /v1/jobs/{id}`` as a share of
a bare FastAPI endpoint that does one primary-key select of the same job row on the same stack.

One server process (uvicorn, as ``distill serve`` runs it) serves both side by side: ``/bare/{id}`` is a plain
``FastAPI()`` app with one async route that selects the job by primary key through an async engine made with
the same settings and returns the row's columns as JSON (the same bytes the poll returns); every other path
goes to the real app (``api.app.create_app``: middlewares, the NUL check, API-key resolution, the per-key rate
limit counted in Redis, tenancy, the response model). The load comes from this process over keep-alive
HTTP/1.1 connections written by hand on asyncio streams (a few microseconds a request, so the client's cost
does not dilute the difference as a heavy HTTP client would on a small machine). Rounds alternate between the
two (bare first, then the poll, then the other way round), and the ratio of each round is printed; the figure
is the median. Two ratios: of wall-clock throughput, and of requests per CPU-second of the server process
(read from /proc): the server is CPU-bound, so on a quiet machine both say the same, and on a shared one the
second is not moved by other processes taking the cores. ``--per-cpu`` judges the target on the second.

    .venv/bin/python -m bench.status_poll [--seconds 3] [--rounds 6] [--connections 16]

Needs Postgres and Redis on 127.0.0.1 (scripts/services.sh); DISTILL_BENCH_POSTGRES_URL and
DISTILL_BENCH_REDIS_URL override. Exit status 0 when the median ratio is at least 0.9 (issue 9, item 10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.9


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the server (a child process) -----------------------------------------------------------------------


def serve(port: int) -> None:
    """Serve the bare app under ``/bare`` and the real app beside it, in this one process."""
    import uvicorn
    from fastapi import FastAPI
    from sqlalchemy import bindparam, select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from api.app import create_app
    from distill.db import async_engine_for
    from distill.settings import get_settings
    from distill.tables import Job

    settings = get_settings()
    real = create_app(settings)
    engine = async_engine_for(settings)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bare = FastAPI()
    table = Job.__table__
    columns = [column.key for column in table.columns]
    by_id = select(table).where(table.c.id == bindparam("job_id"))

    @bare.get("/bare/{job_id}")
    async def bare_select(job_id: str) -> dict[str, Any]:
        async with sessions() as session:
            row = (await session.execute(by_id, {"job_id": job_id})).mappings().one()
        return {name: row[name] for name in columns}

    async def both(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/bare/"):
            await bare(scope, receive, send)
        else:
            await real(scope, receive, send)

    uvicorn.run(both, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")


# -- the load (this process) ----------------------------------------------------------------------------


async def _connection(port: int, request: bytes, until: float, counts: list[int], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if status != b"200":
                errors.append(f"{status.decode()} {body[:200].decode(errors='replace')}")
                return
            counts[0] += 1
    finally:
        writer.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(port: int, path: str, key: str, seconds: float, connections: int, pid: int) -> tuple[float, float]:
    """(requests per second of wall time, requests per CPU-second of the server process)."""
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    count = asyncio.run(_measure(port, path, key, seconds, connections))
    took = time.perf_counter() - started
    used = max(_cpu_seconds(pid) - cpu, 1e-9)
    return count / took, count / used


async def _measure(port: int, path: str, key: str, seconds: float, connections: int) -> int:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    counts = [0]
    errors: list[str] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(*(_connection(port, request, until, counts, errors) for _ in range(connections)))
    if errors:
        raise SystemExit(f"{path}: {errors[0]}")
    return counts[0]


def _prepare(database_url: str) -> tuple[str, str]:
    """Migrate, create a key and one running job like a real one; return (key, job id)."""
    from distill.db import make_engine, make_session_factory, migrate, transaction
    from distill.ids import new_job_id
    from distill.keys import create_key
    from distill.tables import Job, Tenant

    migrate(database_url)
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        key = create_key(session, tenant_name="bench")
        session.flush()
        tenant = session.query(Tenant).one()
        job_id = new_job_id()
        spec = {
            "name": "poll bench",
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [64]},
            "teachers": [],
            "training": {"epochs": 30, "batch_size": 64, "learning_rate": 0.001, "seed": 0},
        }
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant.id,
                name="poll bench",
                spec=spec,
                status="running",
                progress={"epoch": 7, "epochs": 30, "step": 140, "steps": 600, "train_loss": 0.41},
            )
        )
    engine.dispose()
    return key, job_id


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--per-cpu",
        action="store_true",
        help="judge the target on requests per CPU-second of the server (steadier on a shared machine)",
    )
    parser.add_argument(
        "--rate-limit",
        default="100000000/minute",
        help="DISTILL_RATE_LIMIT of the server: counted (in Redis) on every poll, never reached; '' for none",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    import psycopg
    from psycopg import sql

    pg = os.environ.get("DISTILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("DISTILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    name = f"distill_poll_{secrets.token_hex(4)}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = f"{pg.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    server: subprocess.Popen[bytes] | None = None
    try:
        key, job_id = _prepare(database_url)
        home = Path(tempfile.mkdtemp(prefix="distill-poll-"))
        port = _free_port()
        env = {
            **os.environ,
            "DISTILL_HOME": str(home),
            "DISTILL_DATABASE_URL": database_url,
            "DISTILL_BROKER_URL": redis_url,
            "DISTILL_STORAGE_URL": str(home / "store"),
            "DISTILL_WEBHOOKS_DISPATCH": "false",
            "DISTILL_LOG_FORMAT": "text",
            "DISTILL_RATE_LIMIT": args.rate_limit,
        }
        server = subprocess.Popen([sys.executable, "-m", "bench.status_poll", "--serve", str(port)], env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        paths = {"bare": f"/bare/{job_id}", "poll": f"/v1/jobs/{job_id}"}
        for path in paths.values():  # warm both (connections, compiled and prepared statements)
            _run(port, path, key, 1.0, args.connections, server.pid)
        print(
            f"status poll vs bare primary-key select: {args.rounds} rounds of {args.seconds:g} s, "
            f"{args.connections} keep-alive connections, one uvicorn process, Postgres + Redis"
        )
        print(
            f"{'round':>5} {'bare req/s':>11} {'poll req/s':>11} {'ratio':>6}   "
            f"{'bare req/cpu-s':>15} {'poll req/cpu-s':>15} {'ratio':>6}"
        )
        walls, cpus = [], []
        for index in range(args.rounds):
            order = ["bare", "poll"] if index % 2 == 0 else ["poll", "bare"]
            rates = {}
            for label in order:
                rates[label] = _run(port, paths[label], key, args.seconds, args.connections, server.pid)
            wall = rates["poll"][0] / rates["bare"][0]
            cpu = rates["poll"][1] / rates["bare"][1]
            walls.append(wall)
            cpus.append(cpu)
            print(
                f"{index + 1:>5} {rates['bare'][0]:>11.0f} {rates['poll'][0]:>11.0f} {wall:>6.2f}   "
                f"{rates['bare'][1]:>15.0f} {rates['poll'][1]:>15.0f} {cpu:>6.2f}",
                flush=True,
            )
        median_wall, median_cpu = statistics.median(walls), statistics.median(cpus)
        for what, median, values in (
            ("wall-clock throughput", median_wall, walls),
            ("per CPU-second of the server", median_cpu, cpus),
        ):
            print(f"median ratio, {what}: {median:.2f} (min {min(values):.2f}, max {max(values):.2f})")
        figure = median_cpu if args.per_cpu else median_wall
        verdict = "target met" if figure >= TARGET else "target missed"
        print(f"{verdict}: {figure:.2f} (>= {TARGET}, {'per CPU-second' if args.per_cpu else 'wall-clock'})")
        print(json.dumps({"wall": [round(r, 3) for r in walls], "cpu": [round(r, 3) for r in cpus]}))
        sys.exit(0 if figure >= TARGET else 1)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
