"""Plotly figure builders for the Dataset page: class counts, original sizes, sample grids.

Pure functions from engine objects to figures; no widgets and no session state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine.datasets import ImageSet, LabDataset

TILE = 40  # pixels per sample tile in the grid, so 8x8 digits are visible


def class_counts_figure(dataset: LabDataset) -> go.Figure:
    """Grouped bars: training images per class before and after the imbalance profile."""
    rows = dataset.summary()
    frame = pd.DataFrame(
        {
            "class": [r["class"] for r in rows] * 2,
            "images": [r["train (before)"] for r in rows] + [r["train"] for r in rows],
            "training split": ["before imbalance"] * len(rows) + ["after imbalance"] * len(rows),
        }
    )
    fig = px.bar(
        frame,
        x="class",
        y="images",
        color="training split",
        barmode="group",
        title="Training images per class",
        color_discrete_sequence=["#b8c4d0", "#3a6ea5"],
    )
    fig.update_xaxes(type="category")
    fig.update_layout(height=360, margin={"t": 50, "b": 10}, legend_title_text="")
    return fig


def sizes_figure(dataset: LabDataset) -> go.Figure:
    """Histograms of the original longer side and aspect ratio (width / height), all splits."""
    provs = [s.provenance for s in (dataset.train, dataset.val, dataset.test)]
    width = np.concatenate([p.orig_width for p in provs]).astype(float)
    height = np.concatenate([p.orig_height for p in provs]).astype(float)
    frame = pd.DataFrame({"longer side (px)": np.maximum(width, height), "aspect ratio (w/h)": width / height})
    long = frame.melt(var_name="measure", value_name="value")
    fig = px.histogram(long, x="value", facet_col="measure", nbins=40, title="Original image sizes")
    fig.update_xaxes(matches=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(height=300, margin={"t": 60, "b": 10}, showlegend=False)
    return fig


def sample_grid(
    images: ImageSet, *, per_class: int = 8, max_classes: int = 20, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """A (rows*TILE, per_class*TILE, 3) uint8 grid, one row of random samples per class."""
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    rows, names = [], []
    for c, name in enumerate(images.class_names[:max_classes]):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else idx
        tiles = [tile(images.images[i].numpy()) for i in chosen]
        tiles += [np.full((TILE, TILE, 3), 255, np.uint8)] * (per_class - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
        names.append(name)
    return np.concatenate(rows, axis=0), names


def sample_grid_figure(images: ImageSet, *, per_class: int = 8, seed: int = 0) -> go.Figure:
    grid, names = sample_grid(images, per_class=per_class, seed=seed)
    fig = px.imshow(grid, title="Samples per class (training split)")
    fig.update_yaxes(tickvals=[TILE * (i + 0.5) for i in range(len(names))], ticktext=names, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_layout(height=max(240, 30 + TILE * len(names)), margin={"t": 40, "b": 0, "l": 0, "r": 0})
    return fig


def tile(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (TILE, TILE, 3), nearest-neighbour scaled so pixels stay visible."""
    hwc = np.repeat(chw, 3, axis=0).transpose(1, 2, 0) if chw.shape[0] == 1 else chw.transpose(1, 2, 0)
    ys = (np.arange(TILE) * hwc.shape[0] // TILE).clip(0, hwc.shape[0] - 1)
    xs = (np.arange(TILE) * hwc.shape[1] // TILE).clip(0, hwc.shape[1] - 1)
    return np.ascontiguousarray(hwc[ys][:, xs])
