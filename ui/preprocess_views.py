"""Preprocess preview helpers: preset widgets, before/after grids, gap histograms and the gap job's results.

The preset widgets build :class:`engine.preprocess.Preset` objects; the same presets go to training
through their spec strings (the Train page shows them), so what is previewed is what trains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from engine import gap, preprocess, tasks
from engine.datasets import ImageSet
from engine.jobs import FINISHED, JobRunner
from ui.figures import tile

RESIZE_LABELS = {
    "none": "none (as stored)",
    "stretch": "stretch to the square",
    "letterbox": "letterbox (keep aspect, pad)",
    "center_crop": "centre crop (keep aspect)",
    "margins": "keep aspect + random margins",
}

PRESET_FIELDS = ("resize", "fill", "margin", "crop", "jitter", "gray")  # widget keys are f"{prefix}_{field}"


def preset_form(prefix: str, title: str, default: preprocess.Preset) -> preprocess.Preset:
    """Widgets for one preset (keys start with ``prefix``); raises PresetError naming a bad value."""
    st.markdown(f"**{title}**")
    resize = st.selectbox(
        "Resize mode",
        preprocess.RESIZE_MODES,
        index=preprocess.RESIZE_MODES.index(default.resize),
        format_func=RESIZE_LABELS.__getitem__,
        key=f"{prefix}_resize",
    )
    cols = st.columns(2)
    fill = cols[0].number_input("Fill (grey 0-255)", 0, 255, default.fill, key=f"{prefix}_fill")
    margin = cols[1].slider("Smallest margin scale", 0.1, 1.0, default.margin_scale, key=f"{prefix}_margin")
    crop = cols[0].slider(
        "Random resized crop: smallest area (1 = off)", 0.05, 1.0, default.crop_scale, key=f"{prefix}_crop"
    )
    jitter = cols[1].slider("Colour jitter (0 = off)", 0.0, 0.9, default.jitter, key=f"{prefix}_jitter")
    gray = st.checkbox("Grayscale", default.grayscale, key=f"{prefix}_gray")
    return preprocess.Preset(
        resize=resize,
        fill=int(fill),
        margin_scale=float(margin),
        crop_scale=float(crop),
        grayscale=gray,
        jitter=float(jitter),
    )


def draw(images: ImageSet, label: int, count: int, seed: int) -> torch.Tensor:
    """Indices of up to ``count`` images of class ``label``, the same for the same seed."""
    where = torch.nonzero(images.labels == label).flatten()
    order = torch.randperm(len(where), generator=torch.Generator().manual_seed(seed))
    return where[order[:count]]


def show_grid(caption: str, images: torch.Tensor) -> None:
    st.caption(caption)
    st.image([tile(im.numpy()) for im in images], width=72)


def _histogram(title: str, series: dict[str, np.ndarray]) -> go.Figure:
    fig = go.Figure()
    for name, values in series.items():
        fig.add_histogram(x=values, name=name, opacity=0.55, histnorm="probability")
    fig.update_layout(barmode="overlay", height=240, title=title, margin={"t": 40, "b": 10, "l": 10, "r": 10})
    return fig


def gap_pictures(sides: dict[str, torch.Tensor], aspects: dict[str, np.ndarray]) -> pd.DataFrame:
    """Histograms of aspect, brightness, colour and sharpness for each side (real and synthetic, before and
    after the presets); returns a table of their summaries."""
    stats = {name: gap.image_stats(images) for name, images in sides.items()}
    cols = st.columns(2)
    cols[0].plotly_chart(_histogram("Aspect ratio (width / height)", aspects), key="gap_aspect")
    cols[1].plotly_chart(_histogram("Brightness", {k: v["brightness"] for k, v in stats.items()}), key="gap_brightness")
    cols = st.columns(2)
    sharpness = {k: v["sharpness"] for k, v in stats.items()}
    cols[0].plotly_chart(_histogram("Sharpness (variance of the Laplacian)", sharpness), key="gap_sharp")
    channel = {
        k: v["colour"].mean(axis=1) if v["colour"].shape[1] == 1 else v["colour"][:, 0] for k, v in stats.items()
    }
    cols[1].plotly_chart(_histogram("Colour (red channel mean, or grey)", channel), key="gap_colour")
    rows = []
    for side, values in stats.items():
        for measure in ("brightness", "sharpness"):
            rows.append({"images": side, **gap.summary_row(measure, values[measure])})
    return pd.DataFrame(rows)


def gap_results(runner: JobRunner, owner: str) -> None:
    """The latest gap job of ``owner``: its state, then its scores; polled about once a second while it works."""
    unfinished = any(j.status not in FINISHED for j in tasks.list_jobs(runner, tasks.JobKind.GAP, owner=owner))

    def panel() -> None:
        results = tasks.list_jobs(runner, tasks.JobKind.GAP, owner=owner)
        if not results:
            return
        latest = results[-1]
        st.caption(f"{latest.title}: {latest.status} {latest.message or ''} {latest.error or ''}")
        if isinstance(latest.result, dict):
            st.dataframe([{"": k, **v} for k, v in latest.result.items()], hide_index=True)
            st.caption(
                "Domain-gap accuracy: a small CNN trained to tell real from synthetic, scored on held-out images "
                "(0.5 = indistinguishable, 1.0 = trivially different). Fréchet and kernel distances: between the "
                "two sets' features under a classifier trained on the real images (lower = closer)."
            )

    st.fragment(panel, run_every=1.0 if unfinished else None)()
