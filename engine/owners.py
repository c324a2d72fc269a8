"""Who is acting, and what they may see and change: the owner of everything the lab keeps.

Every record the lab writes (experiment, run, generator, synthetic set, Stable Diffusion request, upload,
decode-cache entry) names the user who made it. The acting user is a context variable: a job runs as the user
who submitted it (:func:`acting_as`); a page run (or a fragment's rerun) acts as its session's logged-in user,
read through a resolver the app registers (:func:`set_resolver`); the CLI and tests act as the local
administrator, the default. Listings keep what the actor may see (their own items, items whose
owners shared them, everything for an administrator); deleting, discarding, sharing and clearing check the owner
here, in the engine, not only in a page. Records written before owners existed belong to the local user.
Where this stops: who a user is and how they log in is :mod:`engine.accounts`; limits per user are
:mod:`engine.limits`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

LOCAL = "local"  # the one user of a lab without accounts, and the owner of records older than owners


class OwnershipError(ValueError):
    """The acting user may not change an item that belongs to someone else."""


@dataclass(frozen=True)
class Actor:
    """The user on whose behalf the engine acts."""

    name: str
    admin: bool = False  # sees every user's items and may change or cancel them


_DEFAULT = Actor(LOCAL, admin=True)  # the CLI and tests act as the local administrator
_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("synthlab_actor", default=None)
_resolver: Callable[[], Actor | None] | None = None


def set_resolver(resolver: Callable[[], Actor | None]) -> None:
    """Where the acting user comes from when no job or block names one: the app registers a function that reads
    the user of the page run on this thread (None outside a page run). The engine never imports the app."""
    global _resolver
    _resolver = resolver


def current() -> Actor:
    """The acting user: the one :func:`acting_as` names, else the page run's user, else the local administrator."""
    actor = _actor.get()
    if actor is None and _resolver is not None:
        actor = _resolver()
    return actor or _DEFAULT


def owner_name() -> str:
    """The name recorded as the owner of what the acting user makes now."""
    return current().name


@contextlib.contextmanager
def acting_as(name: str, *, admin: bool = False) -> Iterator[Actor]:
    """Act as ``name`` inside the block (a job runs as the user who submitted it)."""
    actor = Actor(name or LOCAL, admin)
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def check_name(name: str) -> str:
    """``name`` when it can name an owner (a login name or an e-mail: letters, digits, ``.``, ``_``, ``-``, ``@``,
    ``+``; at most 128), else a ValueError naming it."""
    if not re.fullmatch(r"[\w.@+-]{1,128}", name or ""):
        raise ValueError(
            f"user={name!r} is not accepted: expected a user name or e-mail of at most 128 letters, digits, "
            "'.', '_', '-', '@' or '+'"
        )
    return name


def folder_name(owner: str) -> str:
    """A safe folder name for ``owner``'s files: the name itself when it is a plain login or e-mail, else a hash
    (an identity provider's subject may hold any character)."""
    if re.fullmatch(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,63}", owner):
        return owner
    return "user-" + hashlib.sha256(owner.encode()).hexdigest()[:24]


def owner_of(recorded: str) -> str:
    """The owner a record names; records written before owners existed belong to the local user."""
    return recorded or LOCAL


def can_see(owner: str, shared: bool = False) -> bool:
    """Whether the acting user may see an item of ``owner`` (shared with everyone or not)."""
    actor = current()
    return actor.admin or shared or owner_of(owner) == actor.name


def check_can_change(owner: str, what: str, action: str) -> None:
    """Raise :class:`OwnershipError` unless the acting user owns the item or is an administrator.

    ``what`` names the item as a user knows it ("the synthetic set 'digits-gan-1'"), ``action`` what they tried
    ("delete").
    """
    actor = current()
    if actor.admin or owner_of(owner) == actor.name:
        return
    raise OwnershipError(f"{what} belongs to another user: only its owner or an administrator can {action} it.")


def public_source_path(path: str) -> str:
    """A dataset path as exports show it: the file or folder name only, never where it lies on the server."""
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if path else path


def without_server_paths(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute path replaced by its last part: what an export may carry off the
    server (a local pipeline folder, an uploaded zip) without telling where things lie on it."""
    if isinstance(value, dict):
        return {k: without_server_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_server_paths(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"[A-Za-z]:[\\/]", value)):
        return public_source_path(value)
    return value
