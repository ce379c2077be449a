"""Bearer tokens: ``tf_<id>_<secret>``; the row holds sha256(secret), compared in constant time.

Scopes: ``admin`` (the management API and everything else) or ``deployment:NAME`` (that deployment's
inference routes only). Every failure is the same 401 so a caller learns nothing about what exists.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.names import check_name

from .db import Store, Token, by_id_or_name

SCOPE_RE = re.compile(r"^(admin|deployment:[A-Za-z0-9][A-Za-z0-9._-]{0,99})$")
TOKEN_RE = re.compile(r"^tf_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ADMIN_TOKEN_FILE = "admin.token"


@dataclass
class Principal:
    token_id: str
    name: str
    scope: str

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str | None) -> float | None:
    """``30d``, ``12h``, ``90m`` → seconds (None: never expires)."""
    if text in (None, "", "never"):
        return None
    m = DURATION_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"expiry {text!r}: use a number and a unit, e.g. 30d, 12h, 90m or 2w.")
    return int(m.group(1)) * UNITS[m.group(2)]


def check_scope(scope: str) -> str:
    if not SCOPE_RE.match(scope or ""):
        raise ConfigError(f"scope {scope!r}: use 'admin' or 'deployment:NAME'.")
    return scope


def create_token(store: Store, name: str, scope: str, expires_in: float | None = None) -> tuple[Token, str]:
    """A new token row and its secret string (shown once, never stored)."""
    check_scope(scope)
    check_name(name, "token")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = Token(
        id=token_id,
        name=name,
        scope=scope,
        secret_hash=_hash(secret),
        created_at=time.time(),
        expires_at=time.time() + expires_in if expires_in else None,
    )
    with store.session() as s:
        s.add(row)
    return row, f"tf_{token_id}_{secret}"


# A token row read once answers for this long: every request of every client used to cost a database
# round trip through the ORM (about a tenth of a 50-job list page's time). The secret is still checked
# against the row's hash and the expiry against the clock on every request; a revocation through this
# server drops the entry at once, so only a change made elsewhere (another control plane on the same
# PostgreSQL, a hand edit) can take up to this long to be seen.
TOKEN_CACHE_S = 5.0


@dataclass
class _Known:
    secret_hash: str
    principal: Principal | None  # None: revoked
    expires_at: float | None
    read_at: float


_known: weakref.WeakKeyDictionary[Store, dict[str, _Known]] = weakref.WeakKeyDictionary()
_known_lock = threading.Lock()
_revocations = [0]  # counts _forget calls: a row read before a revocation committed is not kept


def _token_row(store: Store, token_id: str) -> _Known | None:
    now = time.monotonic()
    with _known_lock:
        known = _known.setdefault(store, {}).get(token_id)
        generation = _revocations[0]
    if known is not None and now - known.read_at < TOKEN_CACHE_S:
        return known
    with store.reading() as s:
        row = s.get(Token, token_id)
        if row is None:
            return None
        who = None if row.revoked_at is not None else Principal(row.id, row.name, row.scope)
        known = _Known(row.secret_hash, who, row.expires_at, now)
    with _known_lock:
        cache = _known.setdefault(store, {})
        if len(cache) > 10_000:  # only ids with a row get here; a bound all the same
            cache.clear()
        if generation == _revocations[0]:
            cache[token_id] = known
    return known


def answers_at_once(store: Store, header: str | None) -> bool:
    """Whether ``authenticate`` answers ``header`` without the database (a malformed header, or a token
    whose row was read less than TOKEN_CACHE_S ago): the request dependencies then call it on the event
    loop, and hand only a database read to a worker thread."""
    m = TOKEN_RE.match(header[7:].strip()) if header and header.startswith("Bearer ") else None
    if m is None:
        return True
    with _known_lock:
        known = _known.get(store, {}).get(m.group(1))
    return known is not None and time.monotonic() - known.read_at < TOKEN_CACHE_S


def _forget(store: Store, token_id: str) -> None:
    with _known_lock:
        _revocations[0] += 1
        _known.get(store, {}).pop(token_id, None)


def authenticate(store: Store, header: str | None) -> Principal | None:
    """The principal behind an ``Authorization`` header, or None for any kind of failure."""
    if not header or not header.startswith("Bearer "):
        return None
    m = TOKEN_RE.match(header[7:].strip())
    if not m:
        return None
    token_id, secret = m.groups()
    known = _token_row(store, token_id)
    if known is None:
        _hash(secret)  # the same work either way
        return None
    if not hmac.compare_digest(known.secret_hash, _hash(secret)):
        return None
    if known.principal is None or (known.expires_at is not None and known.expires_at <= time.time()):
        return None
    return known.principal


def revoke_token(store: Store, ref: str) -> Token:
    with store.session() as s:
        row = by_id_or_name(s, Token, ref)
        if row is None:
            raise NotFoundError(f"no token {ref!r}; see `tuneforge tokens list`.")
        if row.revoked_at is None:
            row.revoked_at = time.time()
    _forget(store, row.id)  # after the commit: a request racing the revocation reads the row again
    return row


def list_tokens(store: Store) -> list[Token]:
    with store.reading() as s:
        return list(s.scalars(select(Token).order_by(Token.created_at)))


def ensure_admin_token(store: Store, home: Path) -> str | None:
    """On first start: create an admin token, write it to ``home/admin.token`` (0600), return it once.

    Later starts return None. A lost file is replaced by a new admin token (the old one stays valid
    until revoked): whoever can write $TUNEFORGE_HOME owns the server anyway.
    """
    path = Path(home) / ADMIN_TOKEN_FILE
    if path.exists():
        return None
    _, secret = create_token(store, "admin", "admin")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.replace(tmp, path)
    return secret
