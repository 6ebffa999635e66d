"""Path and query parameter types shared by the routers, constrained so that bad input answers 422.

Postgres refuses NUL bytes in text and 32-bit columns refuse larger numbers: without these bounds such a
request reached the database and answered 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (NUL among them)."""

INT32_MAX = 2**31 - 1

ObjectId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=PRINTABLE, description="An id such as `job_…`")
]
ArtifactName = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)]
IdCursor = Annotated[
    str | None,
    Query(max_length=64, pattern=PRINTABLE, description="The last id of the previous page"),
]
SeqCursor = Annotated[int | None, Query(ge=0, le=INT32_MAX, description="The last `seq` already read")]
