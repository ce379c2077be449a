"""Keyset pagination of the control plane's newest-first lists (jobs, datasets, evaluations).

A page is ``ORDER BY created_at DESC, id DESC LIMIT n+1`` from the position the previous page ended at,
so page 200 costs what page 1 costs (an index range, no OFFSET scan, no COUNT) and a row created while
a client walks the list never shifts a later page: it sorts before the cursor. The cursor a page hands
out (``next``, sent back as ``before=``) is opaque to clients: base64url of ``[created_at, id]``. It
holds a position only, never a filter or an access right: which rows a page may hold is decided by the
query and the caller's token on every request, so an edited cursor can at most move the position.
Anything that is not a cursor this module wrote is a 422 saying so, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re

from sqlalchemy import Integer, Select, bindparam, tuple_

from tuneforge.errors import ConfigError

MAX_CURSOR = 200  # characters: a real cursor is about 60; the route refuses longer ones before decoding
# ids are short ASCII (``job-…``, ``ds-…``, ``eval-…``); the cursor's id must look like one
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
BEFORE_DOC = "The `next` cursor of the previous page (opaque); without it, the first (newest) page."
START_AGAIN = "start from the first page (no before=) and follow each page's `next`"


def encode(created_at: float, row_id: str) -> str:
    raw = json.dumps([created_at, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str) -> tuple[float, str]:
    """``(created_at, id)`` of a cursor from ``encode``; a ConfigError (422) for anything else."""
    problem = f"before={cursor[:MAX_CURSOR]!r} is not a cursor a page of this list handed out; {START_AGAIN}"
    if len(cursor) > MAX_CURSOR:
        raise ConfigError(problem)
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):  # not base64, not UTF-8, not JSON
        raise ConfigError(problem) from None
    if not (isinstance(value, list) and len(value) == 2):
        raise ConfigError(problem)
    at, row_id = value
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ConfigError(problem)
    if not isinstance(row_id, str) or not _ID.match(row_id):
        raise ConfigError(problem)
    return float(at), row_id


def newest_first(query: Select, table, limit: int, before: str | None) -> Select:
    """``query`` ordered newest first, one row past ``limit`` (so ``page`` knows whether more follow),
    after the cursor ``before``. ``table`` has ``created_at`` and ``id`` columns and an index on
    ``(created_at, id)`` (with the filtered column first for each filtered list): the row-value
    comparison is one index range on SQLite and PostgreSQL alike, where ``a < x OR (a = x AND …)`` is not.
    """
    return prepared_newest_first(query, table, before is not None).params(**page_params(limit, before))


def prepared_newest_first(query: Select, table, after_cursor: bool) -> Select:
    """``newest_first`` with the limit and the cursor as bound parameters that ``page_params`` fills: a
    statement a hot list builds once, so SQLAlchemy works out its cache key once, not on each request."""
    rows = bindparam("page_rows", type_=Integer)
    query = query.order_by(table.created_at.desc(), table.id.desc()).limit(rows)
    if after_cursor:
        at = bindparam("before_at", type_=table.created_at.type)
        row_id = bindparam("before_id", type_=table.id.type)
        query = query.where(tuple_(table.created_at, table.id) < tuple_(at, row_id))
    return query


def page_params(limit: int, before: str | None) -> dict:
    """The values of ``prepared_newest_first``'s parameters: a cursor is decoded (a 422 if not ours)."""
    if before is None:
        return {"page_rows": limit + 1}
    at, row_id = decode(before)
    return {"page_rows": limit + 1, "before_at": at, "before_id": row_id}


def page(rows: list, limit: int, anchor=lambda row: row) -> tuple[list, str | None]:
    """The rows of a page and the cursor of the next one (None on the last page) from the ``limit + 1``
    rows ``newest_first`` fetched; ``anchor(row)`` is the listed table's row (with ``created_at``, ``id``)
    when a row is a join's tuple."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = anchor(rows[-1])
    return rows, encode(last.created_at, last.id)
