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
import time
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


def authenticate(store: Store, header: str | None) -> Principal | None:
    """The principal behind an ``Authorization`` header, or None for any kind of failure."""
    if not header or not header.startswith("Bearer "):
        return None
    m = TOKEN_RE.match(header[7:].strip())
    if not m:
        return None
    token_id, secret = m.groups()
    with store.reading() as s:
        row = s.get(Token, token_id)
        if row is None:
            _hash(secret)  # the same work either way
            return None
        if not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        now = time.time()
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        return Principal(row.id, row.name, row.scope)


def revoke_token(store: Store, ref: str) -> Token:
    with store.session() as s:
        row = by_id_or_name(s, Token, ref)
        if row is None:
            raise NotFoundError(f"no token {ref!r}; see `tuneforge tokens list`.")
        if row.revoked_at is None:
            row.revoked_at = time.time()
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
