"""Submission under load: 1,000 jobs from 50 concurrent clients, one in ten sent twice with the same
``Idempotency-Key`` (from another client, so some duplicates race the original).

Runs a real API (``distill serve``, uvicorn) on a throw-away Postgres database and Redis queue, with a folder
object store. Each client has its own API key. Checks that exactly the unique jobs exist and that every
duplicate got the original's job back, prints submission throughput and p50/p99 latency, then brings every
job to a terminal state:

- by default (``--workers 0``) by cancelling them through the API (this measures the submission path; a
  2-core machine cannot also train 1,000 jobs in a bench's time);
- with ``--workers N``, N real workers train them (digits, one epoch, a 16-unit MLP: well under a second
  each) and the bench waits for all to finish, then prints how long that took.

    .venv/bin/python -m bench.load_submit [--jobs 1000] [--clients 50] [--workers 0] [--api-workers 2]

Needs Postgres and Redis on 127.0.0.1 (scripts/services.sh); DISTILL_BENCH_POSTGRES_URL and
DISTILL_BENCH_REDIS_URL override. Exit status 0 when the counts are exact and every job ended, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql
from sqlalchemy import text

from distill.db import make_engine, make_session_factory, migrate, transaction
from distill.keys import create_key

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"succeeded", "failed", "cancelled"}
TENANTS = 5


@dataclass
class Submission:
    index: int
    spec: dict[str, Any]
    key: str
    twice: bool


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] = self.statuses.get(status, 0) + 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def submit(client: httpx.Client, bearer: str, sub: Submission, stats: Stats) -> str:
    """POST the job; a 409 (the same key still in progress) is retried as a client would, backing off."""
    headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": sub.key}
    pause = 0.05
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = client.post("/v1/jobs", json=sub.spec, headers=headers)
        stats.record(time.perf_counter() - started, response.status_code)
        if response.status_code == 201:
            return str(response.json()["id"])
        if response.status_code in (409, 429):
            time.sleep(float(response.headers.get("Retry-After", pause)))
            pause = min(pause * 2, 1.0)
            continue
        raise RuntimeError(f"submission {sub.index}: {response.status_code} {response.text}")
    raise RuntimeError(f"submission {sub.index}: still in progress after 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duplicate-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="real workers that train the jobs (0: cancel)")
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clients % TENANTS:
        parser.error(f"--clients must be a multiple of {TENANTS} (the clients share {TENANTS} tenants)")

    pg = os.environ.get("DISTILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    redis_base = os.environ.get("DISTILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    name = f"distill_bench_{secrets.token_hex(5)}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = f"{pg.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    queue = f"distill-bench-{secrets.token_hex(5)}"
    home = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    env = {
        **os.environ,
        "DISTILL_HOME": str(home),
        "DISTILL_DATABASE_URL": database_url,
        "DISTILL_BROKER_URL": redis_base,
        "DISTILL_QUEUE_NAME": queue,
        "DISTILL_STORAGE_URL": str(home / "objects"),
        "DISTILL_DEVICE": "cpu",
        "DISTILL_TORCH_THREADS": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []
    api_log = (home / "api.log").open("wb")
    ok = False
    try:
        migrate(database_url)
        engine = make_engine(database_url)
        with transaction(make_session_factory(engine)) as session:
            bearers = [create_key(session, tenant_name=f"bench-{i % TENANTS}") for i in range(args.clients)]
        engine.dispose()

        port = _free_port()
        cli = [sys.executable, "-m", "distill.cli"]
        processes.append(
            subprocess.Popen(
                [*cli, "serve", "--port", str(port), "--workers", str(args.api_workers)],
                env=env,
                cwd=ROOT,
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
        )
        for _ in range(args.workers):
            processes.append(
                subprocess.Popen(
                    [*cli, "worker", "--loglevel", "warning"],
                    env=env,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=api_log,
                    stderr=subprocess.STDOUT,
                )
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start within 60 s")
            time.sleep(0.2)

        rng = random.Random(args.seed)
        subs = [
            Submission(
                index=i,
                spec={
                    "name": f"bench-{i}",
                    "data": {"train": {"builtin": "digits"}},
                    "model": {"arch": "mlp", "hidden": [16]},
                    "training": {"epochs": 1, "seed": i},
                },
                key=f"bench-{secrets.token_hex(8)}-{i}",
                twice=i % args.duplicate_every == 0,
            )
            for i in range(args.jobs)
        ]
        work = [(s, False) for s in subs] + [(s, True) for s in subs if s.twice]
        rng.shuffle(work)
        stats = Stats()
        answers: dict[tuple[int, bool], str] = {}
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(args.clients)]
        lanes = [work[i :: args.clients] for i in range(args.clients)]

        def lane(index: int) -> None:
            # Keys are scoped by tenant: a duplicate comes with another key of the original's tenant.
            for sub, second in lanes[index]:
                owner = sub.index % args.clients
                bearer = bearers[(owner + TENANTS) % args.clients if second else owner]
                answers[(sub.index, second)] = submit(clients[index], bearer, sub, stats)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lane, range(args.clients)))
        took = time.perf_counter() - started
        for client in clients:
            client.close()

        unique = {answers[(s.index, False)] for s in subs}
        mismatched = [
            s.index for s in subs if s.twice and answers[(s.index, True)] != answers[(s.index, False)]
        ]
        engine = make_engine(database_url)
        with engine.connect() as conn:
            in_db = int(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())
        requests = len(stats.latencies)
        print(
            f"submissions: {len(work)} ({args.jobs} unique, {len(work) - args.jobs} repeated) "
            f"from {args.clients} clients, {requests} HTTP requests"
        )
        print(f"answers: {dict(sorted(stats.statuses.items()))}")
        print(f"throughput: {len(work) / took:.1f} submissions/s ({took:.2f} s)")
        print(
            f"latency: p50 {_percentile(stats.latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {_percentile(stats.latencies, 0.99) * 1000:.1f} ms"
        )
        print(
            f"jobs in the database: {in_db} (expected {args.jobs}); distinct ids answered: {len(unique)}; "
            f"duplicates answered another job: {len(mismatched)}"
        )

        owner = {s.index: bearers[s.index % args.clients] for s in subs}
        ended_at = time.perf_counter()
        if args.workers == 0:
            with httpx.Client(base_url=base, timeout=60) as client:
                for s in subs:
                    job_id = answers[(s.index, False)]
                    headers = {"Authorization": f"Bearer {owner[s.index]}"}
                    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
                    if response.status_code == 429:
                        time.sleep(float(response.headers["Retry-After"]))
                        response = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
        deadline = time.monotonic() + 3600
        while True:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
            counts = {str(status): int(n) for status, n in rows}
            if all(status in TERMINAL for status in counts) or time.monotonic() > deadline:
                break
            time.sleep(1)
        engine.dispose()
        how = "cancelled through the API" if args.workers == 0 else f"trained by {args.workers} workers"
        print(f"terminal: {counts} ({how}, {time.perf_counter() - ended_at:.1f} s)")
        ok = (
            in_db == args.jobs
            and len(unique) == args.jobs
            and not mismatched
            and all(status in TERMINAL for status in counts)
        )
    finally:
        api_log.close()
        if not ok:
            print(f"the API's and workers' log: {home / 'api.log'}; its last lines:")
            print("\n".join((home / "api.log").read_text(errors="replace").splitlines()[-40:]))
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        client_r = redis.Redis.from_url(redis_base)
        keys = list(client_r.scan_iter(match=f"*{queue}*"))
        if keys:
            client_r.delete(*keys)
        client_r.close()
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if ok:  # a failed run keeps its folder: the log is in it
            shutil.rmtree(home, ignore_errors=True)
    print("OK: exactly the unique jobs, all terminal" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
