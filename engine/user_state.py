"""What each user was working on, kept on the server: their dataset config and the settings their pages keep.

A page reload, a second tab and a server restart all start a new browser session; the lab restores the user's
current dataset (source, split, imbalance) and kept settings (preprocess presets, generator family, Stable
Diffusion fields) from ``<workspace>/user_state/<user>.json``. Only plain JSON values are kept (widget values
that are not are left out); a file that cannot be read is ignored with a log line, never an error for the user.
Where this stops: building the dataset and putting widget values back is the page layer's job (``ui/state.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine import owners, store
from engine.config import DatasetConfig

log = logging.getLogger(__name__)
PLAIN = (str, int, float, bool, type(None))


def _path(user: str) -> Path:
    return store.subdir("user_state") / f"{owners.folder_name(user)}.json"


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, PLAIN) for v in value)
    return isinstance(value, PLAIN)


def load(user: str | None = None) -> tuple[DatasetConfig | None, dict[str, Any]]:
    """The user's (the acting user's by default) last dataset config and kept settings; (None, {}) when none."""
    path = _path(user or owners.owner_name())
    if not path.is_file():
        return None, {}
    try:
        data = json.loads(path.read_text())
        dataset = DatasetConfig.from_dict(data["dataset"]) if data.get("dataset") else None
        kept = {str(k): v for k, v in dict(data.get("kept", {})).items() if _plain(v)}
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable user state %s: %s", path.name, err)
        return None, {}
    return dataset, kept


def save(dataset: DatasetConfig | None, kept: dict[str, Any], user: str | None = None) -> None:
    """Keep the user's current dataset config and plain kept settings (written atomically)."""
    plain = {str(k): list(v) if isinstance(v, tuple) else v for k, v in kept.items() if _plain(v)}
    value = {"dataset": dataset.to_dict() if dataset is not None else None, "kept": plain}
    store.write_json(_path(user or owners.owner_name()), value)
