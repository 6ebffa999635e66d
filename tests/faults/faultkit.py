"""What the fault tests break things with: a TCP proxy that can be stopped or silenced, a test-owned Redis,
and a stack (API over HTTP + worker processes) wired to them. Nothing here touches the shared services' state:
a test that stops a server stops its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from helpers import free_port, stop_process, wait_for
from services_app import new_key, prepare, settings_from_env
from sqlalchemy import select

from api.app import create_app
from distill.client.sdk import Client
from distill.db import make_engine, make_session_factory
from distill.settings import Settings
from distill.tables import Job, JobEvent

# Short leases and sweeps, so a lost worker is noticed in seconds (production: a minute, ten seconds).
FAST = {
    "DISTILL_LEASE_SECONDS": "3",
    "DISTILL_HEARTBEAT_SECONDS": "0.5",
    "DISTILL_RECONCILE_SECONDS": "0.5",
    "DISTILL_WAKEUP_RESEND_SECONDS": "3",
    "DISTILL_CANCEL_POLL_SECONDS": "0.2",
    "DISTILL_TORCH_THREADS": "1",
    # jobs that must outlive a kill or a timeout ask for thousands of (tiny) epochs: over the default ceiling
    "DISTILL_MAX_EPOCHS": "100000",
}


class Proxy:
    """A TCP proxy on loopback in front of ``target`` that a test can break:

    - ``down()``: closes every connection and refuses new ones (a stopped server);
    - ``silence()``: accepts connections but forwards nothing, either way (a hung server);
    - ``up()``: back to forwarding (connections made while silent stay silent: clients must reconnect).
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.mode = "up"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._silent: list[socket.socket] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stop = False
        self._listen()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def _wake(self) -> None:
        self._wake_w.send(b"x")

    def down(self) -> None:
        with self._lock:
            self.mode = "down"
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for sock in [*self._pairs, *self._silent]:
                self._close(sock)
            self._silent.clear()
        self._wake()

    def silence(self) -> None:
        with self._lock:
            self.mode = "silent"
        self._wake()

    def up(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listen()
            self.mode = "up"
        self._wake()

    def close(self) -> None:
        self.down()
        self._stop = True
        self._wake()
        self._thread.join(timeout=5)

    def _close(self, sock: socket.socket) -> None:
        other = self._pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.5):
                with self._lock:
                    if key.data == "wake":
                        self._wake_r.recv(4096)
                    elif key.data == "accept":
                        self._accept()
                    elif self.mode == "up":
                        self._forward(key.fileobj)  # type: ignore[arg-type]
                    # silent: leave the bytes unread (the kernel still acknowledges them)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self.mode == "silent":
            self._silent.append(client)
            return
        try:
            server = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        self._pairs[client], self._pairs[server] = server, client
        for s in (client, server):
            s.setblocking(False)
            self._selector.register(s, selectors.EVENT_READ, "data")

    def _forward(self, sock: socket.socket) -> None:
        other = self._pairs.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(sock)
            return
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._close(sock)


class OwnRedis:
    """A Redis server of this test's own, without persistence: ``restart()`` loses every message."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        wait_for(lambda: redis.Redis.from_url(self.url, socket_connect_timeout=1).ping(), timeout=20)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class FaultStack:
    """The API served over HTTP in this process plus worker processes, on the given services."""

    env: dict[str, str]
    workdir: Path
    settings: Settings = field(init=False)
    url: str = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.settings = settings_from_env(self.env)
        prepare(self.settings)
        port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, timeout=30)
        self.key = new_key(self.settings, "acme")
        self.engine = make_engine(self.settings.database_url)

    def client(self) -> Client:
        return Client(self.url, self.key)

    def http(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """A raw request with the key, that gives up (raises) after 10 seconds: nothing may hang."""
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def start_workers(self, *names: str) -> list[Worker]:
        """Start ``distill worker`` processes (at once: each takes seconds to import) and wait until
        every one is ready."""
        started = []
        for name in names:
            log = self.workdir / f"worker-{name}.log"
            env = {**os.environ, **self.env, "DISTILL_WORKER_ID": name}
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "distill.cli", "worker", "--loglevel=info"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            started.append(Worker(name, process, log))
        self.workers.extend(started)
        for worker in started:
            ready = lambda w=worker: " ready." in w.text() or w.process.poll() is not None  # noqa: E731
            wait_for(ready, timeout=180, interval=0.2)
            assert worker.process.poll() is None, worker.text()
        return started

    def job_row(self, job_id: str) -> Job:
        with make_session_factory(self.engine)() as session:
            return session.get_one(Job, job_id)

    def events(self, job_id: str) -> list[str]:
        with make_session_factory(self.engine)() as session:
            rows = session.scalars(
                select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
            )
            return list(rows)

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGKILL)
                worker.process.wait(timeout=10)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.engine.dispose()
        if os.environ.get("DISTILL_TEST_SHOW_WORKER_LOG"):
            for worker in self.workers:
                print(f"---- worker {worker.name}\n{worker.text()}")


def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the Postgres server at ``server_url`` (SQLAlchemy URL), dropped afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    base = make_url(server_url)
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"distill_fault_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        stop_process(process)
