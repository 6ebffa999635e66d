"""Per-API-key rate limits (the ``limits`` library): 429 with ``Retry-After`` when a key asks too often.

Counters live in Redis when the broker is Redis, so every API process shares them; in the embedded default
(no Redis) each process counts for itself. A counter store that cannot be reached lets requests through
(logged): an outage of the limiter must not become an outage of the API.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindowRateLimiter
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from redis.exceptions import NoScriptError

from api.errors import ApiError
from distill.settings import Settings

log = logging.getLogger(__name__)


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(
            f"rate limit of {limit} for this API key exceeded; retry after {retry_after} s", field=None
        )
        self.retry_after = retry_after


class RateLimiter:
    """Fixed-window counters per key for each limit in ``settings.rate_limit`` ("20/second;1200/minute")."""

    def __init__(self, items: list[RateLimitItem], storage: Storage, *, shared: bool = False) -> None:
        self.items = items
        self.storage = storage
        self.shared = shared
        """Counted in Redis (a round trip: the async path uses :class:`AsyncRateLimiter`), rather than in
        this process's memory (no I/O: safe to call from the event loop)."""
        self._limiter = FixedWindowRateLimiter(storage)

    def hit(self, ident: str) -> None:
        """Count one request of ``ident`` (an API key's id); raise :class:`RateLimited` past a limit."""
        for item in self.items:
            try:
                allowed = self._limiter.hit(item, "api-key", ident)
                if allowed:
                    continue
                reset = self._limiter.get_window_stats(item, "api-key", ident).reset_time
            except Exception:  # the counter store is down: let the request through
                log.warning("rate limiter unavailable; request of %s not counted", ident, exc_info=True)
                return
            raise RateLimited(str(item), max(1, math.ceil(reset - time.time())))


class _Pipelined:
    """Redis counter increments of the requests that reach the limiter in the same turn of the event loop,
    sent as one pipeline (one round trip, one socket write and read) instead of one round trip each: under
    load, several polls arrive together. Each is still its own atomic INCRBY-and-EXPIRE (``limits``' own
    script, keys and prefix), so counts stay exact and shared with the sync limiter of the other routes."""

    def __init__(self, storage: Any) -> None:
        self._bridge = storage.bridge  # limits' redis-py bridge: its client, key prefix and scripts
        self._waiting: list[tuple[str, int, asyncio.Future[int]]] = []
        self._gathering = False

    async def incr(self, key: str, expiry: int) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((self._bridge.prefixed_key(key), expiry, future))
        if not self._gathering:  # the first of this turn sends everyone's, after one yield
            self._gathering = True
            await asyncio.sleep(0)
            batch, self._waiting, self._gathering = self._waiting, [], False
            await self._send(batch)
        return await future

    async def _send(self, batch: list[tuple[str, int, asyncio.Future[int]]]) -> None:
        script = self._bridge.lua_incr_expire
        try:
            try:
                pipe = self._bridge.get_connection().pipeline(transaction=False)
                for key, expiry, _ in batch:
                    pipe.evalsha(script.sha, 1, key, expiry, 1)
                counts = await pipe.execute()
            except NoScriptError:  # a new (or flushed) Redis: the script loads with the first one alone
                counts = [await script(keys=[key], args=[expiry, 1]) for key, expiry, _ in batch]
        except Exception as error:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, _, future), count in zip(batch, counts, strict=True):
            if not future.done():
                future.set_result(int(count))


class AsyncRateLimiter:
    """The same fixed-window counters as :class:`RateLimiter` (same Redis keys), counted without blocking
    the event loop and pipelined (:class:`_Pipelined`): the async status poll's path. Its Redis client
    belongs to the event loop that made it."""

    def __init__(self, items: list[RateLimitItem], storage: AsyncStorage) -> None:
        self.items = items
        self._limiter = AsyncFixedWindowRateLimiter(storage)
        self._counter = _Pipelined(storage)

    async def hit(self, ident: str) -> None:
        for item in self.items:
            try:
                count = await self._counter.incr(item.key_for("api-key", ident), item.get_expiry())
                if count <= item.amount:
                    continue
                reset = (await self._limiter.get_window_stats(item, "api-key", ident)).reset_time
            except Exception:  # the counter store is down: let the request through
                log.warning("rate limiter unavailable; request of %s not counted", ident, exc_info=True)
                return
            raise RateLimited(str(item), max(1, math.ceil(reset - time.time())))


def make_async_rate_limiter(settings: Settings) -> AsyncRateLimiter | None:
    """The async twin of :func:`make_rate_limiter` for Redis counters (one per event loop), or None without
    a rate limit or without Redis (in-process counters are counted by the sync limiter, without I/O)."""
    if not settings.rate_limit.strip() or not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    items = parse_many(settings.rate_limit)
    url = "async+" + settings.broker_url
    storage = storage_from_string(url, key_prefix="distill-ratelimit", implementation="redispy")
    assert isinstance(storage, AsyncStorage)
    return AsyncRateLimiter(items, storage)


def make_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter ``settings`` ask for, or None when ``rate_limit`` is empty."""
    if not settings.rate_limit.strip():
        return None
    items = parse_many(settings.rate_limit)
    url = settings.broker_url if settings.broker_url.startswith(("redis://", "rediss://")) else "memory://"
    options = {"key_prefix": "distill-ratelimit"} if url != "memory://" else {}
    storage = storage_from_string(url, **options)
    assert isinstance(storage, Storage)  # the sync storages (an ``async+`` URL would give another kind)
    return RateLimiter(items, storage, shared=url != "memory://")
