"""Public identifiers: a prefix and a time-ordered random part (ULID layout, Crockford base32).

Newer ids sort after older ones, so "newest first" is ``ORDER BY id DESC`` and a page cursor is just an id.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


_lock = threading.Lock()
_last = (0, 0)


def new_id(prefix: str) -> str:
    """``{prefix}_`` + 10 chars of milliseconds since the epoch + 16 random chars.

    Monotonic within a process (ULID's monotonic mode): an id made in the same millisecond as the last one
    takes the last random part plus one, so two rows written back to back (two webhook deliveries of one
    dispatcher round, say) still list newest first.
    """
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last
        if millis <= last_millis and last_random < 2**80 - 1:
            millis, random_part = last_millis, last_random + 1
        else:
            random_part = secrets.randbits(80)
        _last = (millis, random_part)
    return f"{prefix}_{_encode(millis, 10)}{_encode(random_part, 16)}"


def new_tenant_id() -> str:
    return new_id("ten")


def new_key_id() -> str:
    return new_id("key")


def new_file_id() -> str:
    return new_id("file")


def new_job_id() -> str:
    return new_id("job")
