"""Session state shared by the pages: the dataset this session works on, and widget values kept across pages.

Every page reads the dataset through :func:`current_dataset`; the Dataset page replaces it with
:func:`load_into_session`. A failed load leaves the previous dataset in place and returns the
error message, so bad input never loses what the user had. :func:`keep_widget_values` keeps chosen
settings when the user visits another page and comes back. Both are kept per user on the server
(:mod:`engine.user_state`), so a reload, a second tab or a server restart finds the user's dataset and
settings where they were.
"""

from __future__ import annotations

import logging

import streamlit as st

from engine import user_state
from engine.config import ConfigError, DatasetConfig
from engine.datasets import DatasetError, LabDataset, shared_dataset
from engine.sources import SourceError
from ui import auth

log = logging.getLogger(__name__)
DATASET_KEY = "dataset"
KEPT_KEY = "_kept_widgets"
RESTORED_KEY = "_restored_user_state"  # the saved dataset config of this session's user, read once per session
SAVED_KEY = "_saved_user_state"  # what was last written, so an unchanged page run writes nothing


def _restore() -> DatasetConfig | None:
    """Read the user's saved state once per session: kept settings go back at once, the dataset config is returned."""
    if RESTORED_KEY not in st.session_state:
        dataset, kept = user_state.load(auth.user().name)
        st.session_state.setdefault(KEPT_KEY, {}).update({k: v for k, v in kept.items() if k not in st.session_state})
        st.session_state[RESTORED_KEY] = dataset
    restored: DatasetConfig | None = st.session_state[RESTORED_KEY]
    return restored


def _save() -> None:
    """Keep the session's dataset config and kept settings for its user, when they changed."""
    dataset = st.session_state.get(DATASET_KEY)
    config = dataset.config if isinstance(dataset, LabDataset) else st.session_state.get(RESTORED_KEY)
    kept = dict(st.session_state.get(KEPT_KEY, {}))
    if st.session_state.get(SAVED_KEY) == (config, kept):
        return
    try:
        user_state.save(config, kept, auth.user().name)
        st.session_state[SAVED_KEY] = (config, kept)
    except OSError as err:  # a full disk must not take the page down: the work itself is saved elsewhere
        log.warning("could not keep the session's settings: %s", err)


def keep_widget_values(*keys: str) -> None:
    """Make the widgets under ``keys`` keep their values across visits to other pages.

    Streamlit drops a widget's state on a run that does not draw it; call this at the top of a page,
    before its widgets: it copies the values it finds and puts back the ones that were dropped.
    """
    _restore()
    kept = st.session_state.setdefault(KEPT_KEY, {})
    for key in keys:
        if key in st.session_state:
            kept[key] = st.session_state[key]
        elif key in kept:
            st.session_state[key] = kept[key]
    _save()


def current_dataset() -> LabDataset | None:
    """The session's dataset: on first use the user's last one (kept on the server), else the built-in digits."""
    if DATASET_KEY not in st.session_state:
        saved = _restore()
        error = load_into_session(saved) if saved is not None else "no saved dataset"
        if error and saved is not None:
            st.warning(
                f"Your last dataset could not be loaded again ({error}); the built-in digits are loaded instead."
            )
        if error:
            error = load_into_session(DatasetConfig())
        if error:
            st.error(error)
            return None
    dataset: LabDataset = st.session_state[DATASET_KEY]
    return dataset


def load_into_session(cfg: DatasetConfig, *, progress_label: str | None = None) -> str | None:
    """Build ``cfg`` and make it the session's dataset; returns an error message or None."""
    bar = st.progress(0.0, text=progress_label) if progress_label else None

    def on_progress(done: int, total: int) -> None:
        if bar is not None:
            bar.progress(done / max(1, total), text=f"{progress_label} {done:,} / {total:,} images")

    try:
        st.session_state[DATASET_KEY] = shared_dataset(cfg, on_progress=on_progress)
        _save()
        return None
    except (ConfigError, SourceError, DatasetError) as err:
        return str(err)
    except Exception as err:  # a broken file must not take the page down
        log.exception("dataset load failed")
        return f"Unexpected error while loading the dataset: {err or 'no message'} (details are in the server log)"
    finally:
        if bar is not None:
            bar.empty()


def describe(dataset: LabDataset) -> str:
    """One line naming the dataset, for the sidebar and page headers."""
    src = dataset.config.source
    name = {"digits": "built-in digits", "torchvision": src.name}.get(src.kind, src.path.rsplit("/", 1)[-1])
    kind = dataset.config.imbalance.kind
    return (
        f"{name} · {dataset.train.num_classes} classes · {dataset.resolution}px × {dataset.channels}ch · "
        f"{len(dataset.train):,}/{len(dataset.val):,}/{len(dataset.test):,} train/val/test"
        + ("" if kind == "none" else f" · {kind} imbalance")
    )
