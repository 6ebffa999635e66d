"""How fast an idle worker picks up a job: the first one after it started against the next ones.

Starts a real ``distill worker`` on a throw-away Postgres database, a Redis queue of its own and a folder
store, waits until it is ready, then sends jobs one at a time (each waits for the previous to end, so the
worker is idle when its wake-up arrives). The pick-up time of a job is from just before its wake-up is sent
to its "job started" event (written by the worker right after its claim: a connection, the claim, the
event; one machine, one clock). A worker makes and warms its runner at start (engine, connection, compiled
statements, store client: ``Runner.warm_up``), so the first job should be picked up about as fast as the
others (issue 9: it took 246 ms against 7 ms before).

    .venv/bin/python -m bench.worker_pickup [--jobs 5]

Needs Postgres and Redis on 127.0.0.1 (DISTILL_BENCH_POSTGRES_URL, DISTILL_BENCH_REDIS_URL override).
Exit status 0 when the first pick-up is within 50 ms of the median of the others.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

MARGIN_S = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()

    import psycopg
    import redis
    from psycopg import sql
    from sqlalchemy import select

    from distill.db import make_engine, make_session_factory, migrate, transaction
    from distill.ids import new_job_id
    from distill.keys import create_key
    from distill.queue import enqueue_job, make_celery
    from distill.settings import Settings
    from distill.tables import Job, JobEvent, Tenant

    pg = os.environ.get("DISTILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("DISTILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    name = f"distill_pickup_{secrets.token_hex(4)}"
    queue = f"distill-pickup-{secrets.token_hex(4)}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = f"{pg.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    home = Path(tempfile.mkdtemp(prefix="distill-pickup-"))
    env = {
        "DISTILL_HOME": str(home),
        "DISTILL_DATABASE_URL": database_url,
        "DISTILL_BROKER_URL": redis_url,
        "DISTILL_STORAGE_URL": str(home / "store"),
        "DISTILL_QUEUE_NAME": queue,
        "DISTILL_TORCH_THREADS": "1",
        "DISTILL_LOG_FORMAT": "text",
    }
    log_path = home / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    engine = None
    try:
        migrate(database_url)
        engine = make_engine(database_url)
        sessions = make_session_factory(engine)
        with transaction(sessions) as session:
            create_key(session, tenant_name="bench")
        with sessions() as session:
            tenant_id = session.query(Tenant.id).scalar()
        with log_path.open("ab") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "distill.cli", "worker", "--loglevel=info"],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 180
        while " ready." not in log_path.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        time.sleep(1.0)  # let it settle: the pick-up of the first job is what is measured, not the start
        celery = make_celery(
            Settings.model_validate({k.removeprefix("DISTILL_").lower(): v for k, v in env.items()})
        )
        spec = {
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [16]},
            "training": {"epochs": 1, "batch_size": 64},
        }
        # the bench's own first publish connects to Redis and sets Celery up (about 100 ms): do that
        # before measuring, to a queue nobody serves
        enqueue_job(celery, "job_none", f"{queue}-warm")
        pickups = []
        for index in range(args.jobs):
            job_id = new_job_id()
            with transaction(sessions) as session:
                session.add(Job(id=job_id, tenant_id=tenant_id, spec=spec, status="queued", progress={}))
            sent = time.time()
            enqueue_job(celery, job_id)
            while True:
                with sessions() as session:
                    job = session.get_one(Job, job_id)
                if job.status in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            with sessions() as session:  # the "job started" event: written once the claim is made
                at = session.scalars(
                    select(JobEvent.created_at)
                    .where(JobEvent.job_id == job_id, JobEvent.message.startswith("job started"))
                    .order_by(JobEvent.seq)
                ).first()
            assert at is not None, f"job {job_id} has no 'job started' event"
            started = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
            pickups.append(started - sent)
            print(
                f"job {index + 1}: picked up in {1000 * (started - sent):6.1f} ms ({job.status})", flush=True
            )
        first, later = pickups[0], statistics.median(pickups[1:])
        print(f"first job {1000 * first:.1f} ms, later jobs (median) {1000 * later:.1f} ms")
        ok = first - later <= MARGIN_S
        print(
            "target met" if ok else "target missed", f"(first within {1000 * MARGIN_S:.0f} ms of the others)"
        )
        sys.exit(0 if ok else 1)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if engine is not None:
            engine.dispose()
        redis.Redis.from_url(redis_url).delete(queue, f"{queue}-warm")
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
