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
from ui.figures import FONT, readable, tile

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
        help="How each image is made square again after a synthetic one is cut to an aspect drawn from the real "
        "photos: stretch squashes it, letterbox keeps its shape on a filled border, centre crop cuts the middle, "
        "margins also shrinks it and places it at random.",
    )
    cols = st.columns(2)
    fill = cols[0].number_input(
        "Fill (grey 0-255)",
        0,
        255,
        default.fill,
        key=f"{prefix}_fill",
        help="Grey level of the border that letterbox and margins add (0 = black, 255 = white)",
    )
    margin = cols[1].slider(
        "Smallest margin scale",
        0.1,
        1.0,
        default.margin_scale,
        key=f"{prefix}_margin",
        help="margins mode: the image is shrunk to between this share of the side and the whole side",
    )
    crop = cols[0].slider(
        "Random resized crop: smallest area (1 = off)",
        0.05,
        1.0,
        default.crop_scale,
        key=f"{prefix}_crop",
        help="Each time an image is used, a random part covering at least this share of it is cut out and scaled "
        "back up",
    )
    jitter = cols[1].slider(
        "Colour jitter (0 = off)",
        0.0,
        0.9,
        default.jitter,
        key=f"{prefix}_jitter",
        help="Random changes of brightness, contrast and saturation of up to this fraction",
    )
    gray = st.checkbox(
        "Grayscale", default.grayscale, key=f"{prefix}_gray", help="Drop colour: every image becomes grey"
    )
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


# Real in blue, synthetic in orange; before the presets solid, after them dashed: four outlines stay readable
# where four filled histograms would hide each other.
def _style(name: str) -> dict[str, object]:
    after = "after" in name  # a lighter shade, so a dashed "after" line still shows on an unchanged "before"
    colour = (
        ("#f2b880" if after else "#d9822b") if name.startswith("synthetic") else ("#8fb3dc" if after else "#3a6ea5")
    )
    return {"color": colour, "dash": "dash" if after else "solid", "width": 2.5}


def histogram_figure(title: str, series: dict[str, np.ndarray], x_title: str) -> go.Figure:
    """The share of images per bin of one measure, one outline per side, on shared bins."""
    finite = [v[np.isfinite(v)] for v in series.values()]
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    low, high = (float(pooled.min()), float(pooled.max())) if len(pooled) else (0.0, 1.0)
    if high - low < 1e-9:  # one value everywhere: a narrow bin around it
        low, high = low - 0.5 * max(abs(low), 1) * 0.1, high + 0.5 * max(abs(high), 1) * 0.1
    edges = np.linspace(low, high, 26)
    fig = go.Figure()
    for name, values in zip(series, finite, strict=True):
        counts, _ = np.histogram(values, bins=edges)
        share = counts / max(1, len(values))
        centres = (edges[:-1] + edges[1:]) / 2
        fig.add_scatter(x=centres, y=share, name=name, mode="lines", line_shape="hvh", line=_style(name))
    fig.update_layout(
        height=300,
        title_text=title,
        xaxis_title=x_title,
        yaxis_title="share of images",
        yaxis_tickformat=".0%",
        legend={"orientation": "h", "y": -0.3},
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        font=FONT,
    )
    return fig


MEASURES = {  # name in the table -> (key of gap.image_stats, chart title, x axis title)
    "brightness (grey level, 0-255)": ("brightness", "Brightness", "mean grey level (0 = black, 255 = white)"),
    "sharpness (Laplacian variance)": ("sharpness", "Sharpness", "variance of the Laplacian (higher = sharper edges)"),
}


def gap_pictures(sides: dict[str, torch.Tensor], aspects: dict[str, np.ndarray]) -> pd.DataFrame:
    """Histograms of aspect, brightness, colour and sharpness for each side (real and synthetic, before and
    after the presets); returns a table of their summaries, rounded for reading, one measure at a time."""
    stats = {name: gap.image_stats(images) for name, images in sides.items()}
    grey = all(v["colour"].shape[1] == 1 for v in stats.values())
    channel = {k: v["colour"].mean(axis=1) if grey else v["colour"][:, 0] for k, v in stats.items()}
    (_, bright_title, bright_axis), (_, sharp_title, sharp_axis) = MEASURES.values()
    figures = [
        histogram_figure("Aspect ratio of the content", aspects, "width ÷ height (1 = square)"),
        histogram_figure(bright_title, {k: v["brightness"] for k, v in stats.items()}, bright_axis),
        histogram_figure(sharp_title, {k: v["sharpness"] for k, v in stats.items()}, sharp_axis),
        histogram_figure("Colour", channel, "mean grey level (0-255)" if grey else "mean of the red channel (0-255)"),
    ]
    for i, (figure, key) in enumerate(zip(figures, ("aspect", "brightness", "sharp", "colour"), strict=True)):
        if i % 2 == 0:
            cols = st.columns(2)
        cols[i % 2].plotly_chart(figure, key=f"gap_{key}")
    rows = []
    for measure, (key, _, _) in MEASURES.items():
        for side, values in stats.items():
            summary = gap.summary_row(measure, values[key])
            rows.append(
                {"measure": measure, "images": side}
                | {k: readable(float(v)) for k, v in summary.items() if k != "measure"}
            )
    return pd.DataFrame(rows).rename(
        columns={"std": "standard deviation", "q25": "lower quartile", "q75": "upper quartile"}
    )


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
            st.dataframe(gap_table(latest.result), hide_index=True)
            st.caption(
                "Domain-gap accuracy: a small CNN trained to tell real from synthetic images, scored on images it "
                "did not train on (50% = it cannot tell them apart, 100% = they are trivially different). "
                "Fréchet distance: how far apart the two sets' feature averages and spreads are; kernel distance: "
                "the same question answered by comparing every pair of images (both under a classifier trained on "
                "the real images; 0 = the same distribution, lower = closer)."
            )

    st.fragment(panel, run_every=1.0 if unfinished else None)()


GAP_COLUMNS = {
    "domain-gap accuracy": "real-vs-synthetic accuracy",
    "held-out images": "images scored",
    "frechet": "Fréchet distance",
    "kernel": "kernel distance",
}


def gap_table(result: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The gap job's scores, one row per side ("before" / "after" the presets), in words and rounded."""
    rows = []
    for side, values in result.items():
        row: dict[str, object] = {"presets": f"{side} the presets"}
        for key, name in GAP_COLUMNS.items():
            if key in values:
                value = float(values[key])
                row[name] = f"{value:.0%}" if key == "domain-gap accuracy" else readable(value)
        rows.append(row)
    return pd.DataFrame(rows)
