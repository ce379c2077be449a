"""The answers of ``GET /api/v1/jobs`` and ``GET /api/v1/jobs/{id}`` as JSON bytes, each job's answer
encoded once per version of its row (``answer_cache``), not once per request.

A row's version is the row as the database returns it, with the JSON columns read as their stored text
(cast to TEXT in the query, not decoded): compared for equality, so a write to any column through any
path (the ORM, the supervisor's Core updates, another server process, SQL by hand) makes another version
and a fresh answer, and no version column has to be kept up by every writer. A deleted job is never asked
for again and its entry ages out. The one thing an answer reads outside the row, best.json of a job whose
spec sets train.select, is read on every request as before and compared too. A hit costs a tuple
comparison; the JSON columns are decoded (``db.load_json``) only to make an answer.

The bytes are what FastAPI wrote for ``response_model=JobOut`` and ``JobList``: the row's dict validated
by JobOut and written by pydantic's JSON serializer; a page is those rows inside JobList's envelope
(tests/platform/test_job_answers.py compares them byte for byte).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pydantic import TypeAdapter
from sqlalchemy import JSON, Text, bindparam, cast, select

from tuneforge.errors import NotFoundError
from tuneforge.jobs import folder as fmt

from . import jobs as service
from . import paging
from .answer_cache import AnswerCache
from .context import Platform
from .db import Job, load_json
from .schemas import JobOut

_JOBS = Job.__table__
_JSON_AT = tuple(i for i, c in enumerate(_JOBS.c) if isinstance(c.type, JSON))
_RAW = select(*(cast(c, Text).label(c.key) if isinstance(c.type, JSON) else c for c in _JOBS.c))
_RAW_BY_ID = _RAW.where(_JOBS.c.id == bindparam("job_id"))
_JOB_OUT = TypeAdapter(JobOut)


def job_page(ctx: Platform, state: str | None, limit: int, before: str | None, kind: str | None) -> bytes:
    """A page of jobs, newest first, as ``JobList``'s JSON (``paging``'s keyset cursor)."""
    query = _page_query(state is not None, kind is not None, before is not None)
    params = {**paging.page_params(limit, before), "state": state, "kind": kind}
    with ctx.store.rows() as c:
        rows = c.execute(query, params).all()
    rows, nxt = paging.page(rows, limit)
    answers = _answers(ctx.answers, rows)
    # JobList's envelope as pydantic writes it: no spaces, the cursor a plain ASCII string (base64url)
    return b'{"data":[%s],"next":%s}' % (b",".join(answers), json.dumps(nxt).encode())


@functools.cache
def _page_query(by_state: bool, by_kind: bool, after_cursor: bool):
    """The page's statement, built once for each filter (a new one each request was a twentieth of a
    page's CPU: SQLAlchemy works out a statement's cache key anew for each new object)."""
    query = _RAW
    if by_state:
        query = query.where(_JOBS.c.state == bindparam("state", type_=_JOBS.c.state.type))
    if by_kind:
        query = query.where(_JOBS.c.kind == bindparam("kind", type_=_JOBS.c.kind.type))
    return paging.prepared_newest_first(query, _JOBS.c, after_cursor)


def job_answer(ctx: Platform, job_id: str) -> bytes:
    """One job as ``JobOut``'s JSON."""
    with ctx.store.rows() as c:
        row = c.execute(_RAW_BY_ID, {"job_id": job_id}).first()
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return _answers(ctx.answers, [row])[0]


def _answers(cache: AnswerCache, rows) -> list[bytes]:
    answers, made = [], 0
    versions = [tuple(row) for row in rows]
    entries = cache.get_many([(row.id, version) for row, version in zip(rows, versions, strict=True)])
    for row, version, entry in zip(rows, versions, entries, strict=True):
        # the entry's extra: best.json's record (repr: 1 and 1.0 are equal, their JSON is not) when the
        # job selects one, None when it does not (then the file is never opened, as job_dict does)
        best = None if entry is None or entry.extra is None else fmt.read_best(Path(row.folder))
        if entry is not None and (entry.extra is None or entry.extra == repr(best)):
            answers.append(entry.answer)
            continue
        made += 1
        decoded = _decoded(row)
        if entry is None:  # not read yet: the version is new, so whether it selects is too
            best = fmt.read_best(Path(row.folder)) if service.selects_best(decoded) else None
        answer = _JOB_OUT.dump_json(_JOB_OUT.validate_python(service.job_dict(decoded, best)), by_alias=True)
        cache.put(row.id, version, answer, repr(best) if service.selects_best(decoded) else None)
        answers.append(answer)
    cache.count(len(answers) - made, made)
    return answers


def _decoded(row) -> service.JobRow:
    values = list(row)
    for i in _JSON_AT:
        if values[i] is not None:
            values[i] = load_json(values[i])
    return service.JobRow._make(values)
