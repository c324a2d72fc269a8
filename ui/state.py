"""Session state shared by the pages: the dataset this session works on, and widget values kept across pages.

Every page reads the dataset through :func:`current_dataset`; the Dataset page replaces it with
:func:`load_into_session`. A failed load leaves the previous dataset in place and returns the
error message, so bad input never loses what the user had. :func:`keep_widget_values` keeps chosen
settings when the user visits another page and comes back.
"""

from __future__ import annotations

import logging

import streamlit as st

from engine.config import ConfigError, DatasetConfig
from engine.datasets import DatasetError, LabDataset, build_dataset
from engine.sources import SourceError

log = logging.getLogger(__name__)
DATASET_KEY = "dataset"
KEPT_KEY = "_kept_widgets"


def keep_widget_values(*keys: str) -> None:
    """Make the widgets under ``keys`` keep their values across visits to other pages.

    Streamlit drops a widget's state on a run that does not draw it; call this at the top of a page,
    before its widgets: it copies the values it finds and puts back the ones that were dropped.
    """
    kept = st.session_state.setdefault(KEPT_KEY, {})
    for key in keys:
        if key in st.session_state:
            kept[key] = st.session_state[key]
        elif key in kept:
            st.session_state[key] = kept[key]


def current_dataset() -> LabDataset | None:
    """The session's dataset; the built-in digits are loaded on first use."""
    if DATASET_KEY not in st.session_state:
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
        st.session_state[DATASET_KEY] = build_dataset(cfg, on_progress=on_progress)
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
