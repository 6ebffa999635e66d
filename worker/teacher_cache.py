"""Teacher outputs are paid for once: stored content-addressed in the object store, reused by every later
epoch and every later job with the same teachers and inputs (which then never run the teachers).

The key hashes the teachers' weight files, the exact input array (so builtins, uploads and augmented
copies are all covered, in example order) and what was captured (layers, top-k). Nothing about the job that
made it: two tenants' jobs never share an entry, since keys live under the tenant's prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from distill.storage import ObjectNotFound, ObjectStore, teacher_outputs_key

FORMAT = "teacher-outputs/1"


def inputs_digest(x: np.ndarray) -> str:
    """sha256 of an input array: its dtype, shape and bytes in example order."""
    digest = hashlib.sha256(f"{x.dtype.str}{list(x.shape)}".encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def cache_digest(
    *, teacher_sha256: Sequence[str], inputs_sha256: str, capture: Sequence[str], top_k: int | None
) -> str:
    payload = {
        "format": FORMAT,
        "teachers": list(teacher_sha256),
        "inputs": inputs_sha256,
        "capture": sorted(capture),
        "top_k": top_k,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class TeacherCache:
    def __init__(self, store: ObjectStore, tenant_id: str) -> None:
        self.store = store
        self.tenant_id = tenant_id

    def get(self, digest: str) -> bytes | None:
        try:
            return self.store.get_bytes(teacher_outputs_key(self.tenant_id, digest))
        except ObjectNotFound:
            return None

    def put(self, digest: str, blob: bytes) -> None:
        self.store.put_bytes(teacher_outputs_key(self.tenant_id, digest), blob)
