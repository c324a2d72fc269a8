"""The workspace's safety on disk: who may write into it, and what a full disk says.

:func:`check_private` refuses a workspace that another user could write into (a folder writable by its
group or by everyone, or owned by someone else), unless ``$SYNTHLAB_SHARED_WORKSPACE`` says it is shared
on purpose. :func:`full_disk` turns the operating system's or SQLite's "no space left" into one line that
says what to do. Where this stops: it neither creates nor deletes anything (:mod:`engine.store` writes,
:mod:`engine.cleanup` deletes).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

SHARED_ENV = "SYNTHLAB_SHARED_WORKSPACE"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
ALMOST_FULL = 2**20  # bytes: below this, any SQLite error on the workspace's disk is taken for a full disk


class WorkspaceNotPrivate(PermissionError):
    """The workspace, or a folder in it, may be changed by a user other than the one running the lab."""


NOT_PRIVATE_NOTICE = (
    "This server's workspace folder may be changed by other accounts on the machine, so the lab does not open. "
    "The server's log (and `python -m engine runs` run by the server's account) says which folder and how to fix it."
)


class DiskFull(OSError):
    """The disk holding the workspace has no room left for what the lab was writing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def shared_on_purpose() -> bool:
    """Whether ``$SYNTHLAB_SHARED_WORKSPACE`` says the workspace is shared with a group on purpose."""
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes")


def check_private(root: Path) -> None:
    """Raise :class:`WorkspaceNotPrivate` unless ``root`` and every folder under it belong to this process's user
    and are writable by that user only (mode & 0o022 == 0).

    Folders only: a file in a private folder cannot be reached by anyone else. Symbolic links to folders are
    checked where they point, and not followed further.
    """
    if shared_on_purpose():
        return
    uid = os.geteuid()
    for folder, subfolders, _ in os.walk(root):
        for path in [Path(folder), *(Path(folder) / name for name in subfolders)]:
            try:
                info = path.stat()
            except OSError:
                continue  # removed meanwhile, or a dangling link: nothing anyone can write through
            if info.st_uid != uid:
                raise WorkspaceNotPrivate(
                    f"the workspace folder {path} belongs to user id {info.st_uid}, not to the user running SynthLab "
                    f"(id {uid}): run `chown -R {_user_name(uid)} {root}`, or set {SHARED_ENV}=1 if the workspace "
                    "is shared on purpose"
                )
            if info.st_mode & 0o022:
                raise WorkspaceNotPrivate(
                    f"the workspace folder {path} may be changed by other users (mode {info.st_mode & 0o777:o}): "
                    f"run `chmod -R go-w {root}`, or set {SHARED_ENV}=1 if the workspace is shared on purpose"
                )


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def is_full(err: BaseException, where: Path | None = None) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full: ENOSPC / EDQUOT, or SQLite's SQLITE_FULL.

    With ``where``, also any SQLite error while the disk holding it has (almost) no space left: SQLite reports
    a shared-memory file it cannot create as "disk I/O error".
    """
    if isinstance(err, DiskFull):
        return True
    if isinstance(err, OSError):
        return err.errno in _FULL_ERRNOS
    if not isinstance(err, sqlite3.Error):
        return False
    if "disk is full" in str(err).lower():
        return True
    free = free_bytes(where) if where is not None else None
    return free is not None and free < ALMOST_FULL


def free_bytes(path: Path) -> int | None:
    """Bytes free for this user on the disk holding ``path`` (None when the system cannot say)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


_FREE_UP = (
    "free space on that disk, or delete uploads, decoded datasets, synthetic sets or generators you no longer need "
    "on the Dataset page (Clean up)"
)


def _full(where: Path) -> str:
    free = free_bytes(where)
    return "the disk holding the workspace is full" + (f" ({free / 2**20:,.1f} MiB free)" if free is not None else "")


def full_disk(what: str, where: Path) -> DiskFull:
    """The one-line error for ``what`` (e.g. "the upload 'pets.zip'") not saved on the full disk holding ``where``."""
    return DiskFull(f"{_full(where)}: {what} was not saved; {_FREE_UP}, then try again")


def full_notice(where: Path) -> str:
    """The one line the app shows when it starts on a full disk holding ``where``."""
    return f"{_full(where)}: what is stored still shows, but nothing new can be saved; {_FREE_UP}"
