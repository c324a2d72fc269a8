"""Record layout versions: every JSON record the lab writes carries ``schema``, and older ones are migrated on read.

A record without ``schema`` is layout 1 (before owners). Each migration step takes a record of one layout to the
next; :func:`migrate` applies the steps a record needs, in order, so a workspace written by any earlier version
of the lab loads, lists and summarises without a conversion pass. Records are upgraded in memory only: the file is
rewritten in the new layout the next time the lab saves that record. A record from a newer lab than this one is
refused with a plain message rather than misread.
Where this stops: reading and writing the files is each record's own module (runs, experiments, sets, generators).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA = 2  # 1: before owners; 2: owner, shared
KINDS = ("run", "experiment", "set", "generator", "sd_request")


def _v1_to_v2(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    if "dataset_identity" in data and kind != "generator":  # the dataset key before it had its own name
        data.setdefault("dataset_key", data.pop("dataset_identity"))
    if kind in ("run", "experiment", "set"):
        data.setdefault("dataset_key", "")
    data.setdefault("owner", "")  # the local user's: see engine.owners.owner_of
    if kind != "sd_request":
        data.setdefault("shared", False)
    return data


STEPS: dict[int, Callable[[str, dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(kind: str, data: dict[str, Any], name: str = "") -> dict[str, Any]:
    """``data`` (a record of ``kind`` as read from disk) in the current layout, ``schema`` set to :data:`SCHEMA`;
    ``name`` (the record's id) is named in the error for a record this lab cannot read."""
    if kind not in KINDS:
        raise ValueError(f"record kind={kind!r} is not accepted: expected one of {', '.join(KINDS)}")
    version = int(data.get("schema", 1))
    if version > SCHEMA:
        raise ValueError(
            f"the {kind} record {name + ' ' if name else ''}has layout {version}, written by a newer version of the "
            f"lab than this one (which reads layouts up to {SCHEMA}): update the lab to read it"
        )
    for step in range(version, SCHEMA):
        data = STEPS[step](kind, data)
    data["schema"] = SCHEMA
    return data
