"""Database engine, sessions and migrations (schema changes only through Alembic)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from distill.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def engine_for(settings: Settings) -> Engine:
    """The API's and the worker's engine: with Postgres, nothing waits on the database past a deadline."""
    return make_engine(
        settings.database_url,
        connect_timeout=settings.db_connect_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
        pool_timeout=settings.db_pool_timeout_seconds,
    )


def make_engine(
    url: str,
    *,
    connect_timeout: int | None = None,
    statement_timeout: float | None = None,
    pool_timeout: float | None = None,
) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout (API and worker share it).

    Postgres with timeouts (``engine_for``): libpq's ``connect_timeout``, the server's
    ``statement_timeout``, a bounded wait for a pooled connection, and a client-side deadline per statement
    (``_Deadlines``) that cuts the connection of a server that accepted it and then went silent.
    Without them (migrations, tests): plain connections with a pre-ping.
    """
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if statement_timeout is None:
        connect_args = {"connect_timeout": connect_timeout} if connect_timeout else {}
        return create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=connect_args
        )
    millis = max(1, int(statement_timeout * 1000))
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_timeout=pool_timeout if pool_timeout is not None else 30.0,
        connect_args={
            "connect_timeout": connect_timeout or 2,
            "options": f"-c statement_timeout={millis} -c idle_in_transaction_session_timeout={millis * 20}",
        },
    )
    _guard_with_deadlines(engine, statement_timeout)
    return engine


class _Deadlines:
    """One daemon thread that cuts (``shutdown``) the socket of a connection whose statement outlived its
    deadline: the server's ``statement_timeout`` only helps while the server answers, and libpq has no
    client-side query timeout. The blocked call then fails with a disconnect error, which SQLAlchemy turns
    into an invalidated connection (and the API into a 503)."""

    def __init__(self) -> None:
        self._armed: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def arm(self, dbapi_connection: Any, seconds: float) -> None:
        with self._lock:
            self._armed[id(dbapi_connection)] = (time.monotonic() + seconds, dbapi_connection)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="db-deadlines", daemon=True)
                self._thread.start()

    def disarm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._armed.pop(id(dbapi_connection), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self._lock:
                late = [(key, conn) for key, (due, conn) in self._armed.items() if due <= now]
                for key, _ in late:
                    self._armed.pop(key, None)
            for _, conn in late:
                _cut(conn)


def _cut(dbapi_connection: Any) -> None:
    try:
        fd = os.dup(dbapi_connection.fileno())
    except Exception:  # already closed: nothing waits on it
        return
    log.warning("database silent past the statement deadline: cutting the connection")
    with socket.socket(fileno=fd) as sock, suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_DEADLINES = _Deadlines()


def _driver(dbapi_connection: Any) -> Any:
    """The driver's own connection (an async engine hands out adapters around it)."""
    return getattr(dbapi_connection, "driver_connection", None) or dbapi_connection


def _guard_statements(engine: Engine, seconds: float) -> None:
    """Arm the client-side deadline around every statement of ``engine``."""
    grace = seconds + 0.25  # the server's own statement_timeout answers first when the server is alive

    @event.listens_for(engine, "before_cursor_execute")
    def _arm(conn: Any, _cursor: Any, _stmt: Any, _params: Any, _context: Any, _many: Any) -> None:
        _DEADLINES.arm(_driver(conn.connection.dbapi_connection), grace)

    @event.listens_for(engine, "after_cursor_execute")
    def _disarm(conn: Any, _cursor: Any, _stmt: Any, _params: Any, _context: Any, _many: Any) -> None:
        _DEADLINES.disarm(_driver(conn.connection.dbapi_connection))

    @event.listens_for(engine, "handle_error")
    def _disarm_on_error(context: Any) -> None:
        connection = context.connection
        if connection is not None and not connection.invalidated:
            _DEADLINES.disarm(_driver(connection.connection.dbapi_connection))


def _guard_with_deadlines(engine: Engine, seconds: float) -> None:
    grace = seconds + 0.25
    _guard_statements(engine, seconds)

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        """The pre-ping, under the same deadline (the pool's own pre-ping would wait for ever)."""
        _DEADLINES.arm(dbapi_connection, grace)
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            if dbapi_connection.info.transaction_status != 0:  # psycopg: idle
                dbapi_connection.rollback()
        except Exception as error:
            raise exc.DisconnectionError(f"connection failed its ping: {error}") from error
        finally:
            _DEADLINES.disarm(dbapi_connection)


def async_url(url: str) -> str:
    """The async driver's form of a database URL: psycopg 3 serves both; SQLite needs ``aiosqlite``."""
    if url.startswith("sqlite+aiosqlite"):
        return url
    if url.startswith("sqlite"):
        return "sqlite+aiosqlite" + url[url.index(":") :]
    for sync in ("postgresql+psycopg2://", "postgresql://"):
        if url.startswith(sync):
            return "postgresql+psycopg://" + url[len(sync) :]
    return url


def async_engine_for(settings: Settings) -> AsyncEngine:
    """The API's async engine (the status poll's read path), with the same deadlines as ``engine_for``.

    Its connections are in autocommit: each read is one statement (a transaction of its own), so a read
    costs one round trip rather than three (BEGIN, the statement, ROLLBACK); a write is one statement too.

    No pre-ping on checkout (a round trip per request): a connection the server dropped fails its first
    statement, SQLAlchemy invalidates the pool's connections from before the failure, and the caller retries
    once (``read_retrying``); a silent server is cut by the same per-statement deadline as the sync engine.
    """
    url = async_url(settings.database_url)
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    seconds = settings.db_statement_timeout_seconds
    millis = max(1, int(seconds * 1000))
    engine = create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",  # reads are one statement each: no BEGIN and ROLLBACK round trips
        pool_size=10,
        max_overflow=10,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_seconds,
            "options": f"-c statement_timeout={millis} -c idle_in_transaction_session_timeout={millis * 20}",
        },
    )
    _guard_statements(engine.sync_engine, seconds)
    return engine


def make_async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def read_retrying(engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run a read on a pooled connection; when that connection turns out to be dead (the server restarted,
    a proxy dropped it), run it once more on a fresh one: without a pre-ping that is how a dropped
    connection is recovered from, invisibly to the caller. Reads only: a write is never silently repeated."""
    for attempt in (1, 2):
        try:
            async with engine.connect() as connection:
                return await read(connection)
        except exc.DBAPIError as error:
            if attempt == 2 or not error.connection_invalidated:
                raise
            log.warning(
                "database connection lost (%s); reading again on a new one", type(error.orig).__name__
            )
    raise AssertionError("unreachable")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on an exception."""
    with factory() as session, session.begin():
        yield session


def affected(result: Result[Any]) -> int:
    """Rows matched by an UPDATE or DELETE: how a conditional update (a claim, a lease check) tells it won."""
    return cast(CursorResult[Any], result).rowcount


def is_transient(error: BaseException) -> bool:
    """A database error that says the database is unreachable, silent or too slow (worth a retry, or an
    HTTP 503), rather than a bug: no connection, a lost connection, a statement or pool timeout."""
    if isinstance(error, exc.TimeoutError | exc.OperationalError | exc.InterfaceError):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


def migrate(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` on the database at ``url``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    command.upgrade(config, revision)
