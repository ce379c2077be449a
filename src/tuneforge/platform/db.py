"""The control plane's tables (SQLAlchemy 2) and the engine/session factory.

SQLite (default, a file in $TUNEFORGE_HOME, WAL) or PostgreSQL (``TUNEFORGE_DATABASE_URL``). Datasets
and models are *indexes* of the content-addressed stores on disk, which stay the truth; jobs, tokens,
evaluations, registered models and OpenAI files live here.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tuneforge.names import looks_like_id


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(20))  # validating | ready | invalid
    format: Mapped[str | None] = mapped_column(String(40), nullable=True)
    kind: Mapped[str | None] = mapped_column(String(40), nullable=True)
    records: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    problems: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (Index("ix_datasets_created", "created_at", "id"),)  # the newest-first pages


class Model(Base):
    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(40), nullable=True)
    info: Mapped[dict] = mapped_column(JSON, default=dict)
    synced_at: Mapped[float] = mapped_column(Float, default=now)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="train")  # train | eval (| command later)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    restart_policy: Mapped[str] = mapped_column(String(20), default="never")
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    resume_from: Mapped[str | None] = mapped_column(String(40), nullable=True)
    folder: Mapped[str] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_ticks: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latest_metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. the OpenAI request fields
    __table_args__ = (
        Index("ix_jobs_queue", "state", "priority", "created_at"),
        Index("ix_jobs_created", "created_at", "id"),
        # the filtered newest-first pages (migration 0006, platform/paging.py)
        Index("ix_jobs_state_created", "state", "created_at", "id"),
        Index("ix_jobs_kind_created", "kind", "created_at", "id"),
    )


class RegisteredModel(Base):
    __tablename__ = "registered_models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(String(500))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    checkpoint: Mapped[str] = mapped_column(String(100))  # final | step-N
    path: Mapped[str] = mapped_column(Text)
    lineage: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (UniqueConstraint("name", "version"),)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(500))
    dataset: Mapped[str] = mapped_column(String(200))
    compare_base: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (Index("ix_evaluations_created", "created_at", "id"),)  # the newest-first pages


class File(Base):
    """An OpenAI-style file: an uploaded JSONL that became a stored dataset."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Deployment(Base):
    """A served model: the wanted state (``desired``) and what the supervisor last saw (``state``)."""

    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    model: Mapped[str] = mapped_column(String(500))  # the reference as given
    base_model: Mapped[str] = mapped_column(Text)  # a store name or a model folder
    adapters: Mapped[dict] = mapped_column(JSON, default=dict)  # alias -> {"ref", "path"}
    default_model_id: Mapped[str] = mapped_column(String(200))
    aliases: Mapped[dict] = mapped_column(JSON, default=dict)  # registered/ft names -> worker model id
    engine: Mapped[str] = mapped_column(String(20), default="auto")
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    options: Mapped[dict] = mapped_column(JSON, default=dict)  # max_batch_size, max_model_len
    state: Mapped[str] = mapped_column(String(20))  # starting | ready | failed | stopped
    desired: Mapped[str] = mapped_column(String(20), default="running")  # running | stopped
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    # An eval-gated promotion's state and traffic split (rollouts.py); {} when none ever ran.
    rollout: Mapped[dict] = mapped_column(JSON, default=dict)


class DeploymentReplica(Base):
    """One serving worker process of a deployment, as the supervisor last started it."""

    __tablename__ = "deployment_replicas"
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    replica: Mapped[int] = mapped_column(Integer, primary_key=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_ticks: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(20), default="starting")
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DeploymentEvent(Base):
    __tablename__ = "deployment_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    time: Mapped[float] = mapped_column(Float, default=now)
    event: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict] = mapped_column(JSON, default=dict)


def by_id_or_name(s: Session, table: type[Base], ref: str, newest=None):
    """The row ``ref`` names: by id when it has an id's shape, by name (the newest first when ``newest``,
    a column, is given) otherwise; None if there is none. Never a name for an id-shaped ``ref``: names are
    refused when they look like ids, and an older row whose name does must not stand in for another
    row's id (a dataset named like another's id once answered for it, and was deleted in its place)."""
    if looks_like_id(ref):
        return s.get(table, ref)
    query = select(table).where(table.name == ref)
    if newest is not None:
        query = query.order_by(newest.desc())
    return s.scalars(query).first()


# A run of 19 digits (after every other byte became a space): a number orjson may not hold as json does
# (it reads -2**63-1 and 2**64 as floats, json as exact integers). bytes.translate and ``in`` scan a
# whole spec in microseconds, where a regular expression took longer than json itself.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def load_json(text: str | bytes):
    """A JSON column's value as ``json.loads`` reads it, through orjson where that gives the same: a list
    page decodes 200 columns (whole specs), and orjson takes a third of json's time for that. What
    orjson refuses and ``json.dumps`` writes (NaN, Infinity, lone surrogates) goes to json, and so does
    any text with a number too long for orjson's integers to hold exactly."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if _LONG_NUMBER not in raw.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, json_deserializer=load_json
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Let SQLAlchemy issue BEGIN itself (below): pysqlite's implicit transactions start too late.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # Sessions that may write take the write lock at BEGIN: a read that later writes can then
            # never fail with "database is locked" half-way (busy_timeout covers waiting for the lock).
            # Read-only sessions begin deferred and, under WAL, never wait for writers.
            options = conn.get_execution_options()
            if options.get("tuneforge_one_statement"):
                return  # Store.rows: one SELECT, SQLite's own statement transaction is its snapshot
            conn.exec_driver_sql("BEGIN" if options.get("tuneforge_read_only") else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, json_deserializer=load_json)


class Store:
    """Engine + session factory; ``with store.session() as s:`` commits on success, rolls back on error."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(tuneforge_read_only=True)
        self._readers = sessionmaker(self._read_engine, expire_on_commit=False)
        # Store.rows: no BEGIN/COMMIT around its one statement. On PostgreSQL each was a round trip (a
        # get was ping, BEGIN, SELECT, COMMIT); autocommit there, and on SQLite the begin hook skips it.
        one = {"tuneforge_read_only": True, "tuneforge_one_statement": True}
        if not url.startswith("sqlite"):
            one["isolation_level"] = "AUTOCOMMIT"
        self._statement_engine = self.engine.execution_options(**one)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """A session that only reads (on SQLite it does not queue behind writers)."""
        with self._readers() as s, s.begin():
            yield s

    @contextlib.contextmanager
    def rows(self) -> Iterator[Connection]:
        """A connection for ONE read-only Core statement, whose rows are named tuples: what the API's
        list and get answers read (the ORM's instances cost a fifth of a 50-job page's CPU). Outside any
        transaction (a single statement sees one snapshot on its own): reads that must agree with each
        other belong in ``reading()``."""
        with self._statement_engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def default_url(home: Path) -> str:
    return f"sqlite:///{Path(home) / 'tuneforge.db'}"
