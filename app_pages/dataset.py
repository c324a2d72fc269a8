"""Dataset page: choose the real images, split them, make them scarce on purpose, and look."""

import pandas as pd
import streamlit as st

from engine.config import ConfigError, DatasetConfig, ImbalanceConfig
from engine.disk import DiskFull
from ui import figures
from ui.cleanup_views import cleanup_panel
from ui.dataset_form import imbalance_form, source_form
from ui.dataset_views import duplicates_panel
from ui.state import current_dataset, describe, load_into_session

st.title("Dataset")
dataset = current_dataset()
current = dataset.config if dataset is not None else DatasetConfig()

with st.expander("Source, working resolution and split", expanded=dataset is None):
    try:
        chosen = source_form(current.source, current.split)
    except (ConfigError, DiskFull) as err:  # a full disk refuses an upload in one line
        st.error(str(err))
        chosen = None
    if chosen is not None:
        error = load_into_session(DatasetConfig(*chosen, ImbalanceConfig()), progress_label="Decoding")
        if error:
            st.error(error)
        else:  # a new source starts without imbalance: reset those widgets too
            for key in [k for k in st.session_state if str(k).startswith("im_")]:
                del st.session_state[key]

CLEAN_UP = "Clean up: uploads, decoded datasets, synthetic sets, generators"
dataset = current_dataset()  # a load above replaces it
if dataset is None:
    cleanup_panel(CLEAN_UP)  # reachable even when no dataset loads (a full disk)
    st.stop()

with st.expander("Imbalance and scarcity (training split only)", expanded=True):
    try:
        profile = imbalance_form(dataset.class_names, dataset.config.imbalance)
    except ConfigError as err:
        st.error(str(err))
        profile = None
    if profile is not None:
        error = load_into_session(DatasetConfig(dataset.config.source, dataset.config.split, profile))
        if error:
            st.error(error)
        dataset = current_dataset() or dataset

st.caption(describe(dataset) + (" · read from cache" if dataset.from_cache else ""))
for note in dataset.notes:
    st.info(note)
st.plotly_chart(figures.memo((dataset.key, "counts"), figures.class_counts_figure, dataset), key="class_counts")

left, right = st.columns([3, 2])
with left:
    if st.button("New samples"):
        st.session_state["grid_seed"] = st.session_state.get("grid_seed", 0) + 1
    seed = st.session_state.get("grid_seed", 0)
    grid = figures.memo((dataset.key, "grid", seed), figures.sample_grid_figure, dataset.train, seed=seed)
    st.plotly_chart(grid, key="grid")
with right:
    st.dataframe(pd.DataFrame(dataset.summary()), hide_index=True)
    st.caption(
        "train (before): training images as loaded; train: after the imbalance profile; kept %: the share kept; "
        "val and test: real images held out for early stopping and for the final score."
    )
    sizes = figures.sizes_figure(dataset)
    if sizes is not None:
        st.plotly_chart(sizes, key="sizes")
    st.caption(figures.sizes_summary(dataset))

duplicates_panel(dataset)
report = dataset.report
skipped = len(report.skipped)
st.caption(f"Layout: {report.layout} · {report.scanned:,} files scanned · {skipped:,} skipped")
if skipped:
    with st.expander(f"{skipped:,} files skipped: " + ", ".join(f"{n} {r}" for r, n in report.reasons().items())):
        st.dataframe(pd.DataFrame(report.skipped, columns=["file", "reason"]), hide_index=True)
cleanup_panel(CLEAN_UP)
