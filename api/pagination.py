"""Cursor pagination over time-ordered ids: newest first, ``after`` is the last id of the previous page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

Row = TypeVar("Row")


@dataclass
class Page(Generic[Row]):
    rows: list[Row]
    has_more: bool


def paginate(
    session: Session,
    query: Select[Row],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    after: Any | None,
    descending: bool = True,
) -> Page[Row]:
    if after is not None:
        query = query.where(key < after if descending else key > after)
    query = query.order_by(key.desc() if descending else key.asc()).limit(limit + 1)
    rows = list(session.scalars(query))
    return Page(rows=rows[:limit], has_more=len(rows) > limit)
