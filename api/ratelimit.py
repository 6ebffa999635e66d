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
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage as AsyncStorage
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
    script, keys and prefix), so counts stay exact and shared with the sync limiter of the other routes;
    each answer also carries the counter's time to live (the window's end), read in the same round trip."""

    def __init__(self, storage: Any) -> None:
        self._bridge = storage.bridge  # limits' redis-py bridge: its client, key prefix and scripts
        self._waiting: list[tuple[str, int, int, asyncio.Future[tuple[int, float]]]] = []
        self._gathering = False

    async def incr(self, key: str, expiry: int, amount: int = 1) -> tuple[int, float]:
        """Add ``amount`` to ``key``'s counter: ``(the count now, seconds left in its window)``."""
        future: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self._waiting.append((self._bridge.prefixed_key(key), expiry, amount, future))
        if not self._gathering:  # the first of this turn sends everyone's, after one yield
            self._gathering = True
            await asyncio.sleep(0)
            batch, self._waiting, self._gathering = self._waiting, [], False
            await self._send(batch)
        return await future

    async def _send(self, batch: list[tuple[str, int, int, asyncio.Future[tuple[int, float]]]]) -> None:
        script = self._bridge.lua_incr_expire
        client = self._bridge.get_connection()
        try:
            try:
                pipe = client.pipeline(transaction=False)
                for key, expiry, amount, _ in batch:
                    pipe.evalsha(script.sha, 1, key, expiry, amount)
                    pipe.pttl(key)
                answers = await pipe.execute()
            except NoScriptError:  # a new (or flushed) Redis: the script loads with the first one alone
                answers = []
                for key, expiry, amount, _ in batch:
                    answers += [await script(keys=[key], args=[expiry, amount]), await client.pttl(key)]
        except Exception as error:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for index, (_, expiry, _, future) in enumerate(batch):
            count, pttl = int(answers[2 * index]), int(answers[2 * index + 1])
            if not future.done():
                future.set_result((count, pttl / 1000 if pttl > 0 else float(expiry)))


@dataclass
class _Lease:
    """Requests of one key and window taken from the shared counter ahead of use, spent without I/O."""

    tokens: int = 0
    ends: float = 0.0
    """``time.monotonic()`` at which the window (the Redis counter) ends: the unspent tokens lapse."""
    size: int = 1
    """How many the next take asks for: doubled while the key spends them within the window, back to
    one when the window ends with some unspent (a key that polls rarely takes one at a time)."""


class AsyncRateLimiter:
    """The same fixed-window counters as :class:`RateLimiter` (same Redis keys), counted without blocking
    the event loop: the async status poll's path. Its Redis client belongs to the event loop that made it.

    A key that polls often takes its requests from the shared counter in batches (:class:`_Lease`: 1, 2,
    4... up to 1/:data:`LEASE_SHARE` of the limit) and spends them in this process without a round trip;
    increments of the requests of one event-loop turn go in one pipeline (:class:`_Pipelined`). The counter
    stays shared and is never exceeded: what a process took and has not spent yet is only refused to the
    key's other processes, at most ``limit / LEASE_SHARE`` per API process and window (and lapses with
    the window). A limit of up to ``LEASE_SHARE`` requests per window is counted one request at a time,
    exactly."""

    LEASE_SHARE = 16

    def __init__(self, items: list[RateLimitItem], storage: AsyncStorage) -> None:
        self.items = items
        self._counter = _Pipelined(storage)
        self._leases: dict[str, _Lease] = {}

    async def hit(self, ident: str) -> None:
        for item in self.items:
            try:
                allowed, retry_after = await self._take(item, ident)
            except Exception:  # the counter store is down: let the request through
                log.warning("rate limiter unavailable; request of %s not counted", ident, exc_info=True)
                return
            if not allowed:
                raise RateLimited(str(item), max(1, math.ceil(retry_after)))

    async def _take(self, item: RateLimitItem, ident: str) -> tuple[bool, float]:
        key = item.key_for("api-key", ident)
        lease = self._leases.setdefault(key, _Lease())
        now = time.monotonic()
        if now >= lease.ends:  # the window ended: what is left of its lease lapses
            if lease.tokens > 0:  # some went unspent: take fewer next time
                lease.size = 1
            lease.tokens = 0
        if lease.tokens > 0:
            lease.tokens -= 1
            return True, 0.0
        cap = max(1, item.amount // self.LEASE_SHARE)
        size = min(lease.size, cap)
        count, left = await self._counter.incr(key, item.get_expiry(), size)
        granted = min(size, max(0, item.amount - (count - size)))
        lease.ends = time.monotonic() + left
        if granted == 0:
            lease.size = 1
            return False, left
        lease.tokens += granted - 1  # (+=: requests of the same turn may each have taken some)
        lease.size = min(size * 2, cap)
        return True, 0.0


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
