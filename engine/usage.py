"""Workspace space per user: what each user's runs, synthetic sets, generators and uploads take on disk.

An admin sees it per user on the Server page; :func:`check_disk` refuses new heavy work from a user past their
``disk_gb`` limit (:mod:`engine.limits`) with a plain message that says what to delete. It walks the workspace,
so it is called once per click that starts work or per visit of the admin page, never from a polling loop.
Content-keyed entries (the decode cache) are shared and counted for no one.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from engine import limits, owners, store

log = logging.getLogger(__name__)
KINDS = ("runs", "sets", "generators", "uploads")


class DiskLimitReached(ValueError):
    """A user's items already take as much workspace space as an admin allows them."""


def _owner(path: Path) -> str:
    try:
        return owners.owner_of(str(json.loads(path.read_text()).get("owner", "")))
    except (OSError, ValueError, AttributeError):
        return owners.LOCAL


def disk_by_user() -> dict[str, dict[str, int]]:
    """Bytes per user and kind (``runs``, ``sets``, ``generators``, ``uploads``)."""
    used: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    for kind, folder, record in (
        ("runs", "runs", "run.json"),
        ("sets", "synthetic", "set.json"),
        ("generators", "generators", "origin.json"),
    ):
        for path in store.subdir(folder).glob(f"*/{record}"):
            used[_owner(path)][kind] += store.folder_bytes(path.parent)
    for upload_folder in store.subdir("uploads").iterdir():
        if upload_folder.is_dir():
            used[upload_folder.name]["uploads"] += store.folder_bytes(upload_folder)
    return dict(used)


def disk_used(user: str) -> int:
    """Bytes the items of ``user`` take in the workspace."""
    return sum(disk_by_user().get(user, {}).values())


def check_disk(user: str | None = None) -> None:
    """Raise :class:`DiskLimitReached` when the user (the acting one by default) is past their disk limit."""
    name = user or owners.owner_name()
    limit_gb = limits.limits_for(name).disk_gb
    used = disk_used(name)
    if used >= limit_gb * 1e9:
        raise DiskLimitReached(
            f"your runs, sets, generators and uploads take {used / 1e9:,.2f} GB, the most this server allows you "
            f"({limit_gb:g} GB): delete sets or uploads you no longer need, or ask an admin to raise the limit"
        )
