"""Who is using the lab: the auth mode, local accounts, failed-login limits, server-side sessions.

Three modes, from ``$SYNTHLAB_AUTH``: ``none`` (one local user, the default), ``users`` (accounts in a
users file, passwords kept only as bcrypt hashes) and ``oidc`` (an outside OpenID provider; Streamlit
does the login, this module only turns its claims into a :class:`User`). The users file
(``$SYNTHLAB_USERS_FILE``, default ``<workspace>/users.json``, mode 0600) holds three tables: the users,
the sessions (a SHA-256 of each token, never the token) and the failed logins per name, so locks and
sessions survive a restart. Every change is a read-modify-write under an exclusive file lock, written
atomically. A session cookie's value is the token signed with itsdangerous; the secret comes from
the caller (the ui layer reads Streamlit's secrets file).
Where this stops: no Streamlit, no cookies set, no forms; docs/accounts.md describes the modes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from itsdangerous import BadSignature, TimestampSigner

from engine import store

logger = logging.getLogger(__name__)

AUTH_ENV = "SYNTHLAB_AUTH"
USERS_FILE_ENV = "SYNTHLAB_USERS_FILE"
SESSION_DAYS_ENV = "SYNTHLAB_SESSION_DAYS"
MODES = ("none", "users", "oidc")
ROLES = ("admin", "user")
BCRYPT_ROUNDS = 12  # about 0.25 s a check on one core; tests lower it
MAX_FAILURES = 5  # failed logins for one name within FAILURE_WINDOW_S lock that name ...
FAILURE_WINDOW_S = 15 * 60
LOCK_S = 15 * 60  # ... for this long
DEFAULT_SESSION_DAYS = 7.0
COOKIE_NAME = "synthlab_session"
NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")
WRONG_LOGIN = "wrong user name or password"  # the same for an unknown name: names are not revealed
SECRET_FIX = (
    "users mode needs [synthlab] cookie_secret in .streamlit/secrets.toml; make one with "
    'python -c "import secrets; print(secrets.token_hex(32))" and add it as cookie_secret = "..."'
)


class AccountError(ValueError):
    """A refused account request (bad name, wrong password, locked name, broken users file)."""


@dataclass(frozen=True)
class User:
    """One person using the lab; ``name`` owns what their sessions make."""

    name: str
    role: str  # "admin" | "user"
    display: str = ""  # how the sidebar shows them, when not the name

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL = User("local", "admin", "this computer")


def auth_mode() -> str:
    """``$SYNTHLAB_AUTH``: ``none`` (default), ``users`` or ``oidc``."""
    mode = os.environ.get(AUTH_ENV, "").strip().lower() or "none"
    if mode not in MODES:
        raise AccountError(f"{AUTH_ENV}={mode!r} is not accepted: expected one of {', '.join(MODES)}")
    return mode


def users_file() -> Path:
    """``$SYNTHLAB_USERS_FILE``, else ``users.json`` in the workspace."""
    raw = os.environ.get(USERS_FILE_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else store.home() / "users.json"


def session_seconds() -> float:
    """How long a login lasts: ``$SYNTHLAB_SESSION_DAYS`` days (default 7)."""
    raw = os.environ.get(SESSION_DAYS_ENV, "").strip()
    try:
        days = float(raw) if raw else DEFAULT_SESSION_DAYS
    except ValueError:
        days = -1.0
    if not (0 < days <= 366):
        raise AccountError(
            f"{SESSION_DAYS_ENV}={raw!r} is not accepted: expected a number of days above 0 and at most 366"
        )
    return days * 86400


# The users file -------------------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AccountError(f"users file {str(path)!r} is not valid JSON ({err}): restore it or remove it") from None
    if not isinstance(data, dict):
        raise AccountError(f"users file {str(path)!r} is not accepted: expected a JSON object")
    for table in ("users", "sessions", "failures"):
        data.setdefault(table, {})
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    store.write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())  # mkstemp: created 0600
    os.chmod(path, 0o600)


@contextlib.contextmanager
def _edit() -> Iterator[dict[str, Any]]:
    """The users file's content under an exclusive lock; saved when the block ends without an error."""
    path = users_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # also between threads: each open() is its own lock holder
        data = _load(path)
        yield data
        _save(path, data)
    finally:
        os.close(fd)  # releases the lock


def _read() -> dict[str, Any]:
    return _load(users_file())  # writes are atomic renames: a reader sees the old or the new file


def _user(name: str, record: Mapping[str, Any]) -> User:
    return User(name, str(record.get("role", "user")))


# Users ----------------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` when it is 1-32 letters, digits, ``.``, ``_`` or ``-``; else an error naming it."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise AccountError(
            f"user name {name!r} is not accepted: expected 1 to 32 characters, each a letter, digit, '.', '_' or '-'"
        )
    return name


def _hash(password: str) -> str:
    size = len(password.encode())
    if not 8 <= size <= 72:  # bcrypt reads at most 72 bytes
        raise AccountError(f"password of {size} bytes is not accepted: expected 8 to 72 bytes")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def _known(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    record = data["users"].get(name)
    if record is None:
        known = ", ".join(sorted(data["users"])) or "none yet"
        raise AccountError(f"user {name!r} is not accepted: no such user (users: {known})")
    return dict(record)


def add_user(name: str, password: str, *, admin: bool = False) -> User:
    """A new account; the password is stored only as a bcrypt hash."""
    check_name(name)
    hashed = _hash(password)
    with _edit() as data:
        if name in data["users"]:
            raise AccountError(f"user {name!r} is not accepted: that name is taken (change its password instead)")
        data["users"][name] = {"hash": hashed, "role": "admin" if admin else "user", "created": time.time()}
    logger.info("user %r added (%s)", name, "admin" if admin else "user")
    return User(name, "admin" if admin else "user")


def remove_user(name: str) -> None:
    """Delete an account and end all its sessions at once."""
    with _edit() as data:
        _known(data, name)
        del data["users"][name]
        data["failures"].pop(name, None)
        data["sessions"] = {k: s for k, s in data["sessions"].items() if s.get("user") != name}
    logger.info("user %r removed", name)


def set_password(name: str, password: str) -> None:
    """A new password for ``name``; their open sessions end (log in again with it)."""
    hashed = _hash(password)
    with _edit() as data:
        data["users"][name] = {**_known(data, name), "hash": hashed}
        data["failures"].pop(name, None)
        data["sessions"] = {k: s for k, s in data["sessions"].items() if s.get("user") != name}


def get_user(name: str) -> User:
    """The account called ``name``; an error listing the accounts there are when there is none."""
    data = _read()
    return _user(name, _known(data, name))


def list_users() -> list[User]:
    """Every account, by name."""
    return [_user(name, record) for name, record in sorted(_read()["users"].items())]


# Logins and their limit -----------------------------------------------------------------------------------


def _lock_message(name: str, until: float, now: float) -> str:
    minutes = max(1, math.ceil((until - now) / 60))
    return f"too many failed logins for {name!r}; try again in {minutes} min"


def check_password(name: str, password: str, *, client: str = "", now: float | None = None) -> User:
    """The user whose name and password these are, else an :class:`AccountError`.

    A wrong name and a wrong password read the same. After ``MAX_FAILURES`` failures for one name within
    ``FAILURE_WINDOW_S`` seconds the name is locked for ``LOCK_S`` seconds, even for the right password.
    ``client`` (an address) only goes to the log; ``now`` (Unix seconds) is for tests.
    """
    now = time.time() if now is None else now
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise AccountError(WRONG_LOGIN)
    # 1. A locked name is refused before any password check.
    data = _read()
    until = float(data["failures"].get(name, {}).get("locked_until", 0))
    if until > now:
        raise AccountError(_lock_message(name, until, now))
    # 2. The bcrypt check runs outside the file lock: logins at a lesson's start must not queue on it.
    record = data["users"].get(name)
    hashed = str(record["hash"]) if record else _dummy_hash()
    raw = password.encode() if isinstance(password, str) else b""
    ok = record is not None and len(raw) <= 72 and bcrypt.checkpw(raw, hashed.encode())
    if record is None:
        bcrypt.checkpw(b"-", hashed.encode())  # the same time for an unknown name
    # 3. Record the outcome (a lock that a parallel attempt set meanwhile holds for this one too).
    with _edit() as data:
        entry = data["failures"].get(name, {})
        until = float(entry.get("locked_until", 0))
        if until > now:
            raise AccountError(_lock_message(name, until, now))
        if ok and name in data["users"]:
            data["failures"].pop(name, None)
            return _user(name, data["users"][name])
        times = [t for t in entry.get("times", []) if t > now - FAILURE_WINDOW_S] + [now]
        if len(times) >= MAX_FAILURES:
            data["failures"][name] = {"times": [], "locked_until": now + LOCK_S}
        else:
            data["failures"][name] = {"times": times, "locked_until": 0}
        # Stale entries go, so guessed names cannot grow the file without bound.
        data["failures"] = {
            n: e
            for n, e in data["failures"].items()
            if e.get("locked_until", 0) > now or any(t > now - FAILURE_WINDOW_S for t in e.get("times", []))
        }
    logger.warning("failed login for %r from %s (%d in 15 min)", name, client or "an unknown client", len(times))
    if len(times) >= MAX_FAILURES:
        raise AccountError(_lock_message(name, now + LOCK_S, now))
    raise AccountError(WRONG_LOGIN)


_DUMMY: dict[int, str] = {}


def _dummy_hash() -> str:
    if BCRYPT_ROUNDS not in _DUMMY:
        _DUMMY[BCRYPT_ROUNDS] = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
    return _DUMMY[BCRYPT_ROUNDS]


# Sessions -------------------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User, *, now: float | None = None) -> str:
    """A new random session token for ``user``; only its hash is stored, with the expiry."""
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    with _edit() as data:
        _known(data, user.name)
        data["sessions"] = {k: s for k, s in data["sessions"].items() if float(s.get("expires", 0)) > now}
        data["sessions"][_digest(token)] = {"user": user.name, "expires": now + session_seconds(), "started": now}
    return token


def session_user(token: str, *, now: float | None = None) -> User | None:
    """The user of a live session, or None (unknown or expired token, removed user)."""
    now = time.time() if now is None else now
    if not isinstance(token, str) or not token:
        return None
    data = _read()
    session = data["sessions"].get(_digest(token))
    if session is None or float(session.get("expires", 0)) <= now:
        return None
    record = data["users"].get(session.get("user"))
    return None if record is None else _user(session["user"], record)


def end_session(token: str) -> None:
    """Forget a session (logging out); unknown tokens are ignored."""
    with _edit() as data:
        data["sessions"].pop(_digest(token), None)


# The cookie and the settings the ui layer passes in ---------------------------------------------------------


def check_cookie_secret(secret: object) -> str:
    """The cookie-signing secret, when it is a string of at least 32 characters; else how to make one."""
    if not isinstance(secret, str) or len(secret.strip()) < 32:
        raise AccountError(SECRET_FIX)
    return secret.strip()


def _signer(secret: str) -> TimestampSigner:
    return TimestampSigner(check_cookie_secret(secret), salt="synthlab.session")


def sign_token(token: str, secret: str) -> str:
    """The cookie value for a session token: the token and an itsdangerous signature (URL- and cookie-safe)."""
    return _signer(secret).sign(token).decode()


def unsign_token(value: str, secret: str) -> str | None:
    """The session token inside a cookie value, or None when the signature is wrong or older than a session."""
    try:
        return _signer(secret).unsign(value, max_age=math.ceil(session_seconds())).decode()
    except BadSignature:  # also a SignatureExpired
        return None


def check_admins(admins: object) -> frozenset[str]:
    """The OIDC admins allow-list (``[synthlab] admins``), lower-cased; an error when it is not a list of e-mails."""
    if admins is None:
        return frozenset()
    if isinstance(admins, str) or not isinstance(admins, Iterable) or not all(isinstance(a, str) for a in admins):
        raise AccountError(
            f"[synthlab] admins = {admins!r} is not accepted: expected a list of e-mail addresses, "
            'like admins = ["ada@example.org"]'
        )
    return frozenset(a.strip().lower() for a in admins if a.strip())


def oidc_user(claims: Mapping[str, Any], admins: Iterable[str]) -> User:
    """The user an OpenID provider vouches for: named by e-mail (else ``sub``), admin when on the allow-list."""
    email = str(claims.get("email") or "").strip()
    name = email or str(claims.get("sub") or "").strip()
    if not name:
        raise AccountError("the identity provider sent neither an e-mail nor a subject (sub) for this login")
    role = "admin" if email and email.lower() in check_admins(list(admins)) else "user"
    return User(name, role, str(claims.get("name") or ""))
