"""Users of the review app: roles, argon2 password hashes, server-side sessions and a login throttle.

Users are managed from the CLI (`cx-pipeline users ...`). A session is a random token in an HttpOnly cookie;
only its SHA-256 is stored, so a copy of the store does not hand out live sessions.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cx_pipeline.core.appstore import ROLES, iso, transaction, utc_now

SESSION_HOURS = 12  # a working day; then log in again
MIN_PASSWORD = 10
MAX_FAILURES, LOCKOUT_MINUTES = 5, 15  # failed logins per user within the window before it is refused
# Failed logins from one client address within the window, whatever the user names: room for an office
# behind one address to mistype, too few for a client to try name after name.
MAX_CLIENT_FAILURES = 20
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")

_hasher = PasswordHasher()
_checking = threading.BoundedSemaphore(4)
# Verifying against this when the user does not exist takes as long as a real check: no user enumeration.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(ValueError):
    """A user-management request that cannot be done; the message says why."""


class ClientThrottled(AccountError):
    """Too many failed logins from one client address: refused for `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        minutes = math.ceil(retry_after / 60)
        super().__init__(
            f"too many failed logins from your network address; try again in {minutes} minute{'s' * (minutes > 1)}"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Session:
    username: str
    role: str
    csrf_token: str


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")


def add_user(store: sqlite3.Connection, username: str, role: str, password: str) -> None:
    if not USERNAME.match(username):
        raise AccountError("a username is 2-64 characters: lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    _check_password(password)
    with transaction(store):
        if store.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone():
            raise AccountError(f"user {username!r} already exists")
        store.execute(
            "INSERT INTO users (username, role, password_hash, active, created_at) VALUES (?, ?, ?, 1, ?)",
            [username, role, _hasher.hash(password), utc_now()],
        )


def _existing(store: sqlite3.Connection, username: str) -> None:
    if not store.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone():
        raise AccountError(f"no user {username!r}")


def set_password(store: sqlite3.Connection, username: str, password: str) -> None:
    """New password; every session of the user ends."""
    _check_password(password)
    with transaction(store):
        _existing(store, username)
        store.execute("UPDATE users SET password_hash = ? WHERE username = ?", [_hasher.hash(password), username])
        store.execute("DELETE FROM sessions WHERE username = ?", [username])


def set_role(store: sqlite3.Connection, username: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    with transaction(store):
        _existing(store, username)
        store.execute("UPDATE users SET role = ? WHERE username = ?", [role, username])


def set_active(store: sqlite3.Connection, username: str, active: bool) -> None:
    """Disable (every session ends) or re-enable a user; decisions keep their reviewer's name."""
    with transaction(store):
        _existing(store, username)
        store.execute("UPDATE users SET active = ? WHERE username = ?", [int(active), username])
        if not active:
            store.execute("DELETE FROM sessions WHERE username = ?", [username])


def list_users(store: sqlite3.Connection) -> list[dict[str, object]]:
    rows = store.execute("SELECT username, role, active, created_at FROM users ORDER BY username").fetchall()
    return [dict(r) for r in rows]


def has_users(store: sqlite3.Connection) -> bool:
    return store.execute("SELECT 1 FROM users WHERE active = 1 LIMIT 1").fetchone() is not None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(
    store: sqlite3.Connection, username: str, password: str, client: str | None = None, now: datetime | None = None
) -> str:
    """Check the password and open a session; returns the session token for the cookie. Raises AccountError
    with one message for every failure (unknown user, wrong password, disabled). Each attempt counts as a
    failure until it succeeds, so parallel guesses are counted too; with `MAX_FAILURES` in the last
    `LOCKOUT_MINUTES`, the user is refused until the oldest of them is that old. `client` is the address the
    attempt came from: with `MAX_CLIENT_FAILURES` failures from it in the window, whatever the user names, it
    is refused (ClientThrottled) before any name is looked at, so the refusal says nothing about the name."""
    now = now or datetime.now(UTC)
    window = iso(now - timedelta(minutes=LOCKOUT_MINUTES))
    client_attempt = _count_client_attempt(store, client, now) if client is not None else None
    if not USERNAME.match(username):  # never stored; the same work as a real check, so it says nothing
        _verify(_DUMMY_HASH, password)
        raise AccountError("unknown user or wrong password")
    with transaction(store):
        store.execute("DELETE FROM login_failures WHERE failed_at <= ?", [window])
        (failures,) = store.execute("SELECT count(*) FROM login_failures WHERE username = ?", [username]).fetchone()
        if failures >= MAX_FAILURES:
            raise AccountError(f"too many failed attempts; try again in up to {LOCKOUT_MINUTES} minutes")
        store.execute("INSERT INTO login_failures VALUES (?, ?)", [username, iso(now)])
    row = store.execute("SELECT password_hash, active FROM users WHERE username = ?", [username]).fetchone()
    ok = _verify(row["password_hash"] if row else _DUMMY_HASH, password) and row is not None and bool(row["active"])
    if not ok:
        raise AccountError("unknown user or wrong password")
    token = secrets.token_urlsafe(32)
    with transaction(store):
        if _hasher.check_needs_rehash(row["password_hash"]):
            store.execute("UPDATE users SET password_hash = ? WHERE username = ?", [_hasher.hash(password), username])
        store.execute("DELETE FROM login_failures WHERE username = ?", [username])
        # only this attempt stops counting against the client: a login of one's own clears no one's guesses
        store.execute("DELETE FROM login_client_failures WHERE rowid = ?", [client_attempt])
        store.execute("DELETE FROM sessions WHERE expires_at <= ?", [iso(now)])
        store.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            [
                _token_hash(token),
                username,
                secrets.token_urlsafe(32),
                iso(now),
                iso(now + timedelta(hours=SESSION_HOURS)),
            ],
        )
    return token


def _count_client_attempt(store: sqlite3.Connection, client: str, now: datetime) -> int:
    """Count an attempt from `client` as a failure (until it succeeds) and return its row id; raise
    ClientThrottled when the client already has `MAX_CLIENT_FAILURES` in the window."""
    window = now - timedelta(minutes=LOCKOUT_MINUTES)
    with transaction(store):
        store.execute("DELETE FROM login_client_failures WHERE failed_at <= ?", [iso(window)])
        failures, oldest = store.execute(
            "SELECT count(*), min(failed_at) FROM login_client_failures WHERE client = ?", [client]
        ).fetchone()
        if failures >= MAX_CLIENT_FAILURES:
            free_at = datetime.fromisoformat(oldest) + timedelta(minutes=LOCKOUT_MINUTES)
            raise ClientThrottled(max(1, math.ceil((free_at - now).total_seconds())))
        return store.execute("INSERT INTO login_client_failures VALUES (?, ?)", [client, iso(now)]).lastrowid


def _verify(password_hash: str, password: str) -> bool:
    """argon2 check, a few at a time: each takes 64 MiB, and a burst of logins must not exhaust memory."""
    with _checking:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def session(store: sqlite3.Connection, token: str | None) -> Session | None:
    """The live session of a cookie value, or None (missing, unknown, expired, or the user was disabled)."""
    if not token:
        return None
    row = store.execute(
        """SELECT s.username, u.role, s.csrf_token FROM sessions s JOIN users u USING (username)
        WHERE s.token_hash = ? AND s.expires_at > ? AND u.active = 1""",
        [_token_hash(token), utc_now()],
    ).fetchone()
    return Session(row["username"], row["role"], row["csrf_token"]) if row else None


def logout(store: sqlite3.Connection, token: str) -> None:
    with transaction(store):
        store.execute("DELETE FROM sessions WHERE token_hash = ?", [_token_hash(token)])
