"""Dataset page helpers that look at the loaded data: near-copies of training images in the other splits."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.dataset_health import THRESHOLD, CrossDuplicate, cross_split_duplicates
from engine.datasets import LabDataset


@st.cache_data(show_spinner="Looking for near-copies of training images…", max_entries=8)
def _duplicates(key: str, _dataset: LabDataset) -> list[CrossDuplicate]:
    """Cached per dataset key (content, split and imbalance); the dataset itself is not hashed."""
    return cross_split_duplicates(_dataset)


def duplicates_panel(dataset: LabDataset) -> None:
    """How many validation and test images nearly copy a training image, and which."""
    found = _duplicates(dataset.key, dataset)
    if not found:
        st.caption(f"No validation or test image nearly copies a training image (similarity ≥ {THRESHOLD}).")
        return
    val = sum(d.split == "val" for d in found)
    test = len(found) - val
    st.warning(
        f"{test} test and {val} validation images nearly copy a training image (similarity ≥ {THRESHOLD}): a model "
        "answers them from memory, so every accuracy comes out a little too high. Remove the copies from your "
        "folder, or keep them in mind when reading the results."
    )
    with st.expander("Near-copies across splits"):
        table = pd.DataFrame([d.__dict__ for d in found]).rename(
            columns={"image": "held-out image", "train_image": "training image it copies"}
        )
        table["similarity"] = table["similarity"].round(3)
        st.dataframe(table, hide_index=True)
        st.caption(
            "Similarity: of the two images shrunk to 16 px in grey, with their mean brightness removed (1 = identical)."
        )
