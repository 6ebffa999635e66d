"""Public identifiers: a prefix and a time-ordered random part (ULID layout, Crockford base32).

Newer ids sort after older ones, so "newest first" is ``ORDER BY id DESC`` and a page cursor is just an id.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """``{prefix}_`` + 10 chars of milliseconds since the epoch + 16 random chars."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_encode(millis, 10)}{_encode(secrets.randbits(80), 16)}"


def new_tenant_id() -> str:
    return new_id("ten")


def new_key_id() -> str:
    return new_id("key")


def new_file_id() -> str:
    return new_id("file")


def new_job_id() -> str:
    return new_id("job")
