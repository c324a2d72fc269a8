"""Plotly figure builders shared by the pages: class counts, original sizes, labelled sample grids, rounding.

Pure functions from engine objects (or arrays) to figures and numbers people read; no widgets and no
session state (:func:`memo` keeps built figures for every session). Every chart names its axes with units
and its series in words.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from plotly.subplots import make_subplots

from engine.datasets import ImageSet, LabDataset

TILE = 40  # pixels per sample tile in the grid, so 8x8 digits are visible
GAP = 4  # white pixels between tiles and between rows of a grid
FONT = {"size": 13}
FigureT = TypeVar("FigureT", go.Figure, go.Figure | None)


@st.cache_resource(max_entries=512, show_spinner=False)
def _memo(key: tuple[object, ...], _build: Callable[..., Any], _args: tuple[Any, ...], _kwargs: dict[str, Any]) -> Any:
    return _build(*_args, **_kwargs)  # the leading underscores keep Streamlit from hashing the builder and its inputs


def memo(key: tuple[object, ...], build: Callable[..., FigureT], *args: Any, **kwargs: Any) -> FigureT:
    """``build(*args, **kwargs)``, built once per ``key`` and shared read-only by every session (building
    plotly figures was most of a page's time under many users). ``key`` must name everything the figure
    shows: the dataset's key, or an experiment and the state of its runs, and the options chosen. Streamlit
    copies a figure before drawing it, so a shared one is never changed."""
    figure: FigureT = _memo(key, build, args, kwargs)
    return figure


def readable(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits`` significant digits (69797.9731 -> 69800.0, 0.012345 -> 0.0123)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


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
    fig.update_xaxes(type="category", title_text="class")
    fig.update_yaxes(title_text="training images")
    fig.update_layout(height=360, margin={"t": 50, "b": 10}, legend_title_text="", font=FONT)
    return fig


def _original_sizes(dataset: LabDataset) -> tuple[np.ndarray, np.ndarray]:
    provs = [s.provenance for s in (dataset.train, dataset.val, dataset.test)]
    width = np.concatenate([p.orig_width for p in provs]).astype(float)
    height = np.concatenate([p.orig_height for p in provs]).astype(float)
    return width, height


def sizes_summary(dataset: LabDataset) -> str:
    """One sentence on the original image sizes, all splits (what the histograms show, in words)."""
    width, height = _original_sizes(dataset)
    if not len(width):
        return "No original sizes were recorded."
    longer, aspect = np.maximum(width, height), width / np.maximum(height, 1)
    if longer.min() == longer.max() and aspect.min() == aspect.max():
        size = f"{width[0]:.0f} × {height[0]:.0f} px"
        return f"All {len(width):,} images (training, validation and test) were {size} in their files."
    return (
        f"Original images, all splits: longer side {longer.min():.0f}–{longer.max():.0f} px "
        f"(median {np.median(longer):.0f}); aspect ratio (width ÷ height) {aspect.min():.2f}–{aspect.max():.2f} "
        f"(median {np.median(aspect):.2f})."
    )


def sizes_figure(dataset: LabDataset) -> go.Figure | None:
    """Histograms of the original longer side and aspect ratio (width / height), all splits; None when every
    image had the same size (one bar says less than :func:`sizes_summary`)."""
    width, height = _original_sizes(dataset)
    longer, aspect = np.maximum(width, height), width / np.maximum(height, 1)
    if not len(width) or (np.ptp(longer) == 0 and np.ptp(aspect) == 0):
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.18)
    for col, (values, title, pad) in enumerate(
        ((longer, "longer side (px)", 1.0), (aspect, "aspect ratio (width ÷ height)", 0.05)), start=1
    ):
        fig.add_histogram(x=values, nbinsx=30, marker_color="#3a6ea5", showlegend=False, row=1, col=col)
        fig.update_xaxes(title_text=title, nticks=5, row=1, col=col)
        if np.ptp(values) == 0:  # one value: a bar with room around it and a single tick, not colliding ticks
            fig.update_xaxes(range=[values[0] - pad, values[0] + pad], tickvals=[values[0]], row=1, col=col)
    fig.update_yaxes(title_text="images", row=1, col=1)
    fig.update_layout(
        height=300, title_text="Original image sizes (all splits)", margin={"t": 50, "b": 10}, bargap=0.05, font=FONT
    )
    return fig


def sample_tiles(
    images: ImageSet, *, per_class: int = 8, max_classes: int = 20, seed: int = 0
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Up to ``per_class`` random tiles (TILE, TILE, 3) per class of the first ``max_classes`` classes; the names."""
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    rows, names = [], []
    for c, name in enumerate(images.class_names[:max_classes]):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else idx
        rows.append([tile(images.images[i].numpy()) for i in chosen])
        names.append(name)
    return rows, names


def grid_canvas(rows: list[list[np.ndarray]], *, gap: int = GAP) -> np.ndarray:
    """Tiles (h, w, 3) laid out row by row on a white canvas with ``gap`` px between tiles and rows."""
    h, w = next((r[0].shape[:2] for r in rows if r), (TILE, TILE))
    columns = max([len(r) for r in rows] + [1])
    canvas = np.full((len(rows) * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    return canvas


def png_data_uri(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a PNG ``data:`` URI: what a browser draws fastest, and ~50× smaller than the
    pixel values as JSON."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def grid_figure(rows: list[list[np.ndarray]], row_names: list[str], title: str) -> go.Figure:
    """A labelled sample grid: one row of tiles per class, its name on the left, white gaps between tiles."""
    canvas = grid_canvas(rows)
    h = next((r[0].shape[0] for r in rows if r), TILE)
    fig = go.Figure(go.Image(source=png_data_uri(canvas), hoverinfo="skip"))  # a PNG, not 1 MB of pixel numbers
    fig.update_yaxes(
        tickvals=[i * (h + GAP) + h / 2 for i in range(len(row_names))],
        ticktext=row_names,
        ticks="",
        showgrid=False,
        title_text="class",
    )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")
    scale = max(1.0, 36 / h)  # small tiles are drawn at least 36 px high
    fig.update_layout(
        title_text=title,
        height=int(max(220, 70 + scale * canvas.shape[0])),
        margin={"t": 40, "b": 0, "l": 10, "r": 0},
        font=FONT,
    )
    return fig


def split_grid(grid: np.ndarray, columns: int) -> list[list[np.ndarray]]:
    """A seamless grid (rows*R, columns*R, 3) as rows of tiles, each scaled up to about TILE px."""
    side = grid.shape[1] // columns
    if side == 0:
        return []
    tiles = []
    for i in range(grid.shape[0] // side):
        row = grid[i * side : (i + 1) * side]
        tiles.append([tile(row[:, j * side : (j + 1) * side].transpose(2, 0, 1)) for j in range(columns)])
    return tiles


def sample_grid_figure(images: ImageSet, *, per_class: int = 8, seed: int = 0) -> go.Figure:
    rows, names = sample_tiles(images, per_class=per_class, seed=seed)
    shown = "" if len(names) == len(images.class_names) else f", first {len(names)} classes"
    return grid_figure(rows, names, f"Random training images, one row per class{shown}")


def tile(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (TILE, TILE, 3), nearest-neighbour scaled so pixels stay visible."""
    hwc = np.repeat(chw, 3, axis=0).transpose(1, 2, 0) if chw.shape[0] == 1 else chw.transpose(1, 2, 0)
    ys = (np.arange(TILE) * hwc.shape[0] // TILE).clip(0, hwc.shape[0] - 1)
    xs = (np.arange(TILE) * hwc.shape[1] // TILE).clip(0, hwc.shape[1] - 1)
    return np.ascontiguousarray(hwc[ys][:, xs])
