"""Limits an admin sets on a shared server: jobs per user, upload size, disk space.

They are kept in ``<workspace>/limits.json`` as ``{"default": {field: value}, "users": {name: {field: value}}}``:
the server default for each field (the :class:`Limits` defaults where the file says nothing) and, per user,
the fields that user has otherwise. :func:`limits_for` is read on every heavy-job submit, so the file is
parsed again only when its modification time or size changes. Writes go through
:func:`engine.store.write_json` (readers see the old file or the new one). ``python -m engine limits show``
and ``python -m engine limits set FIELD VALUE [--user NAME]`` are the admin's way in.
Where this stops: it stores and checks the numbers; the job runner (``jobs.py``) enforces ``max_jobs``,
uploads and the workspace enforce the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import store

FILE = "limits.json"


@dataclass(frozen=True)
class Limits:
    """What one user may use on this server."""

    max_jobs: int = 24  # heavy jobs (trainings, generation, runs) one user may have queued or running at once
    upload_mb: int = 2000  # MiB all of one user's uploads may take together
    disk_gb: float = 20.0  # workspace space one user's sets, generators and runs may take, in GB


FIELDS = tuple(f.name for f in dataclasses.fields(Limits))


class LimitError(ValueError):
    """A limit or its value is not accepted, or limits.json cannot be read; the message says which and why."""


def path() -> Path:
    """Where the limits are kept: ``<workspace>/limits.json``."""
    return store.home() / FILE


def check(field: str, value: Any) -> int | float:
    """``value`` as the number ``field`` holds (a whole number of jobs or MB; GB may have decimals).

    Text is read as a number (the CLI passes text); anything else raises :class:`LimitError` naming the
    field, the value and what is accepted.
    """
    _check_field(field)
    whole = field != "disk_gb"
    expected = "a whole number, 1 or more" if whole else "a number of GB above 0, e.g. 20 or 0.5"
    number: float
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)
    except ValueError:
        raise LimitError(f"{field}={value!r} is not accepted: expected {expected}") from None
    if not math.isfinite(number) or number <= 0 or (whole and (number != int(number) or number < 1)):
        raise LimitError(f"{field}={value!r} is not accepted: expected {expected}")
    return int(number) if whole else number


def _check_field(field: str) -> None:
    if field not in FIELDS:
        raise LimitError(f"field={field!r} is not a limit: expected one of {', '.join(FIELDS)}")


_lock = threading.Lock()
_cached: tuple[tuple[str, int, int, int], dict[str, Any]] | None = None  # (path, inode, mtime, size), contents


def _read() -> dict[str, Any]:
    """limits.json checked, as ``{"default": {...}, "users": {name: {...}}}``; read again only when it changed."""
    global _cached
    file = path()
    try:
        stat = file.stat()
    except FileNotFoundError:
        return {"default": {}, "users": {}}
    key = (str(file), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _lock:
        if _cached is not None and _cached[0] == key:
            return _cached[1]
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LimitError(
            f"{file} cannot be read ({err}): fix it, or delete it and set the limits again with "
            "`python -m engine limits set`"
        ) from None
    data = _parsed(raw, file)
    with _lock:
        _cached = (key, data)
    return data


def _parsed(raw: Any, file: Path) -> dict[str, Any]:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("default", {}), dict)
        or not isinstance(raw.get("users", {}), dict)
    ):
        raise LimitError(f'{file} is not accepted: expected {{"default": {{...}}, "users": {{name: {{...}}}}}}')
    try:
        default = {k: check(k, v) for k, v in raw.get("default", {}).items()}
        users = {str(u): {k: check(k, v) for k, v in dict(over).items()} for u, over in raw.get("users", {}).items()}
    except (LimitError, TypeError, ValueError) as err:
        raise LimitError(f"{file} is not accepted: {err}") from None
    return {"default": default, "users": users}


def limits_for(user: str) -> Limits:
    """The limits of ``user``: their own where an admin set some, else the server default."""
    data = _read()
    return Limits(**{**data["default"], **data["users"].get(user, {})})


def set_limit(field: str, value: Any, *, user: str | None = None) -> Limits:
    """Set ``field`` to ``value`` for everyone (the server default) or for one ``user``; returns their limits now.

    For a user, ``value`` None or ``"default"`` removes their own value, so the server default applies again.
    """
    _check_field(field)
    name = None if user is None else str(user).strip()
    if name == "":
        raise LimitError(f"user={user!r} is not accepted: expected a user name")
    clear = name is not None and (value is None or value == "default")
    number = None if clear else check(field, value)
    data = json.loads(json.dumps(_read()))  # a copy: the cached one is shared
    target = data["default"] if name is None else data["users"].setdefault(name, {})
    if clear:
        target.pop(field, None)
        if not target:
            data["users"].pop(name, None)
    else:
        target[field] = number
    store.write_json(path(), data)
    return Limits(**data["default"]) if name is None else limits_for(name)


def show() -> dict[str, Any]:
    """Every limit as it applies now: ``{"default": {field: value}, "users": {name: {field: value}}}``.

    ``default`` lists every field (the built-in value where none was set); ``users`` lists only the fields
    set for each user.
    """
    data = _read()
    return {
        "default": dataclasses.asdict(Limits(**data["default"])),
        "users": {name: dict(over) for name, over in sorted(data["users"].items())},
        "file": os.fspath(path()),
    }
