"""Explain page helpers: choosing the two runs, cached models and attributions, and the figures that show them.

The engine computes (``engine.explain``); these helpers pick defaults, cache per run and draw: the image
and both models' attribution overlays at one size on one colour scale, and the per-class mean maps.
"""

from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots
from streamlit.runtime.uploaded_file_manager import UploadedFile
from torch import nn

from engine import experiments, explain, preprocess, runs
from engine.datasets import LabDataset
from engine.mixes import SYNTHETIC_KINDS
from ui.figures import FONT

# Transparent where the map is zero, through orange to opaque yellow at the map's maximum: the image stays
# visible under weak attribution, and the colour bar reads the same on every panel.
HEAT_SCALE = [
    [0.0, "rgba(255, 60, 0, 0)"],
    [0.35, "rgba(255, 60, 0, 0.45)"],
    [1.0, "rgba(255, 235, 0, 0.9)"],
]
# As rgb() strings: Streamlit's chart theme rewrites colours written #0000xx (Inferno's black is #000004).
INFERNO = [f"rgb{px.colors.hex_to_rgb(c)}" for c in px.colors.sequential.Inferno]
FLAT = 0.02  # a map whose spread is below this share of its maximum is near-uniform: no region stands out
METHOD_HELP = (
    "Grad-CAM: which regions of the last convolution's features raised the predicted class. Integrated "
    "Gradients: how much each pixel contributed, summed along a path from a black image. Occlusion: how much "
    "the score drops when a small patch is hidden. Saliency: how sensitive the score is to each pixel."
)


def finished_runs(dataset: LabDataset) -> list[runs.RunRecord]:
    """Finished runs trained on exactly this dataset, newest first."""
    shared = frozenset(e.id for e in experiments.list_experiments() if e.shared)
    return [
        r
        for r in runs.visible_records(shared)
        if r.status == "done"
        and r.config.dataset == dataset.config
        and r.dataset_key in (dataset.key, dataset.identity)
    ]


def _accuracy(record: runs.RunRecord) -> float:
    return record.headline.get("accuracy") or 0.0


def default_pair(records: list[runs.RunRecord]) -> tuple[str, str]:
    """The real-only run and the synthetic mix's run (add first, then replace) to compare, from ``records``
    (finished runs, newest first).

    From the newest experiment that has finished both: its real-only run of the lowest seed and a synthetic
    run of the same seed where there is one. While no experiment has both (e.g. the first runs of an
    experiment are still training), the newest experiment's real-only run against its most accurate run of
    another mix (another seed of real only when there is no other mix).
    """
    for experiment in dict.fromkeys(r.experiment for r in records):
        mine = [r for r in records if r.experiment == experiment]
        reals = sorted((r for r in mine if r.config.mix.kind == "real"), key=lambda r: r.config.seed)
        synthetic = sorted(
            (r for r in mine if r.config.mix.kind in SYNTHETIC_KINDS),
            key=lambda r: (r.config.mix.kind != "add", r.created),
        )
        if reals and synthetic:
            same_seed = [r for r in synthetic if r.config.seed == reals[0].config.seed]
            return reals[0].id, (same_seed or synthetic)[0].id
    newest = [r for r in records if r.experiment == records[0].experiment]
    reals = sorted((r for r in newest if r.config.mix.kind == "real"), key=lambda r: r.config.seed)
    baseline = reals[0] if reals else newest[-1]
    others = [r for r in newest if r.id != baseline.id] or [r for r in records if r.id != baseline.id]
    other_mixes = [r for r in others if r.config.mix.label != baseline.config.mix.label]  # not another seed of it
    return baseline.id, max(other_mixes or others, key=_accuracy).id


def run_label(record: runs.RunRecord) -> str:
    accuracy = record.headline.get("accuracy")
    acc = f"test accuracy {accuracy:.1%}" if accuracy is not None else "no metrics"
    return f"{record.config.mix.label} · seed {record.config.seed} · {acc} · {record.id}"


@st.cache_resource(max_entries=8)
def cached_model(run_id: str) -> nn.Module:
    """The run's classifier, behind the deterministic part of its real-image preset (as its test set saw it)."""
    model = runs.load_model(run_id)
    if preprocess.evaluation_preset(runs.load_record(run_id).config.train.preprocess_real).grayscale:
        return nn.Sequential(explain.GrayInput(), model).eval()
    return model


@st.cache_data(max_entries=32, show_spinner="Computing attributions…")
def cached_maps(run_id: str, method: str, indices: tuple[int, ...], _images: torch.Tensor) -> np.ndarray:
    """Raw attribution maps (N, H, W) of test images ``indices`` (given as ``_images``) under one run's model."""
    return explain.attribute(cached_model(run_id), _images, method)


@st.cache_data(max_entries=8)
def cached_predictions(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    return runs.load_predictions(run_id)


def heat(raw: np.ndarray) -> np.ndarray | None:
    """A raw map (H, W) scaled to [0, 1], or None when it is zero or near-uniform (no region stands out):
    stretching such a map would paint noise as if it were a finding."""
    high, low = float(raw.max()), float(raw.min())
    if high <= 0 or high - low <= FLAT * high:
        return None
    return explain.normalise(raw[None])[0]


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W, 3) uint8."""
    return np.repeat(pixels, 3, axis=0).transpose(1, 2, 0) if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def pair_figure(pixels: np.ndarray, heats: dict[str, np.ndarray | None], titles: list[str]) -> go.Figure:
    """The image, then each model's attribution over it in grey, all panels the same size, one colour bar.

    ``pixels`` (C, H, W) uint8; ``heats`` maps a panel title's model to its [0, 1] map (None: none found);
    ``titles`` are the panel titles, the image's first.
    """
    fig = make_subplots(rows=1, cols=1 + len(heats), subplot_titles=titles, horizontal_spacing=0.04)
    rgb = _rgb(pixels)
    grey = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=1, col=1)
    for col, map_ in enumerate(heats.values(), start=2):
        fig.add_trace(go.Image(z=grey, hoverinfo="skip"), row=1, col=col)
        shown = np.zeros(rgb.shape[:2]) if map_ is None else map_
        fig.add_trace(
            go.Heatmap(
                z=shown,
                coloraxis="coloraxis",
                hovertemplate="attribution %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if map_ is None:
            axis = "" if col == 1 else str(col)
            fig.add_annotation(
                text="no region found",
                xref=f"x{axis} domain",
                yref=f"y{axis} domain",
                x=0.5,
                y=0.5,
                showarrow=False,
                bgcolor="rgba(255,255,255,0.8)",
            )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")
    fig.update_layout(
        height=320,
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        coloraxis={
            "colorscale": HEAT_SCALE,
            "cmin": 0,
            "cmax": 1,
            "colorbar": {
                "title": {"text": "attribution", "side": "right"},
                "tickvals": [0, 0.5, 1],
                "ticktext": ["none", "half", "most"],
                "len": 0.9,
            },
        },
        font=FONT,
    )
    return fig


def show_pair(
    image: torch.Tensor,
    models: dict[str, nn.Module],
    raw: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    *,
    method: str,
    key: str,
    truth: str | None = None,
) -> None:
    """One image and each model's prediction and attribution overlay (``raw`` maps); then the reading."""
    names = list(models)
    heats = {name: heat(raw[name]) for name in names}
    titles = [f"true class: {truth}" if truth else "your image"]
    lines = []
    for name in names:
        top = explain.top_k(models[name], image[None], class_names, k=3)
        titles.append(f"{name}: {top.classes[0]} ({top.probabilities[0]:.0%})")
        lines.append(
            f"{name}: " + " · ".join(f"{c} {p:.0%}" for c, p in zip(top.classes, top.probabilities, strict=True))
        )
    st.plotly_chart(pair_figure(image.numpy(), heats, titles), key=key)
    st.caption("Top three predictions — " + "; ".join(lines))
    st.caption(reading(heats, method))


def reading(heats: dict[str, np.ndarray | None], method: str) -> str:
    """Where the two maps differ, in words; honest about a map in which no region stands out."""
    empty = [name for name, h in heats.items() if h is None]
    if empty:
        hint = " Grad-CAM often finds none on small images; try Occlusion or Integrated Gradients." * (
            method == "gradcam"
        )
        return (
            f"For {' and '.join(empty)}, {explain.METHOD_LABELS[method]} found no region of this image that "
            f"changes the prediction more than the rest (its map is the same everywhere), so there is nothing "
            f"to compare.{hint}"
        )
    names, maps = list(heats), [h for h in heats.values() if h is not None]
    shares = explain.centre_share(np.stack(maps))
    return explain.reading(float(shares[0]), float(shares[1]), names[0], names[1])


def class_means(
    models: dict[str, nn.Module], dataset: LabDataset, method: str, per_class: int = 16
) -> dict[str, np.ndarray]:
    """Per model: (classes, H, W) mean normalised attribution over up to ``per_class`` test images of each class."""
    labels = dataset.test.labels.numpy()
    chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(dataset.class_names))])
    images = dataset.test.images[torch.from_numpy(chosen)]
    out = {}
    for name, model in models.items():
        maps = explain.attribute(model, images, method, targets=labels[chosen])
        out[name] = explain.class_mean_maps(maps, labels[chosen], len(dataset.class_names))
    return out


def class_means_figure(name: str, per_class: np.ndarray, class_names: tuple[str, ...], limit: int = 20) -> go.Figure:
    """One model's mean attribution map per class (at most ``limit`` classes), ten to a row, on one colour scale."""
    shown = per_class[:limit]
    cols = min(10, len(shown))
    rows = (len(shown) + cols - 1) // cols
    titles = [f"class {n}" for n in class_names[: len(shown)]]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.12)
    for i, mean in enumerate(shown):
        fig.add_trace(
            go.Heatmap(z=mean, coloraxis="coloraxis", hovertemplate="mean attribution %{z:.2f}<extra></extra>"),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="", constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="", autorange="reversed")
    for i in range(len(shown)):  # square cells: each y axis scaled to its x axis
        suffix = "" if i == 0 else str(i + 1)
        fig.update_layout({f"yaxis{suffix}": {"scaleanchor": f"x{suffix}"}})
    more = "" if len(per_class) <= limit else f", first {limit} classes"
    fig.update_layout(
        title_text=f"{name}: mean attribution per class (brighter = looked at more{more})",
        height=90 + 130 * rows,
        margin={"t": 70, "b": 10, "l": 10, "r": 10},
        coloraxis={
            "colorscale": INFERNO,
            "cmin": 0,
            "cmax": 1,
            "colorbar": {"title": {"text": "mean attribution", "side": "right"}, "len": 0.9},
        },
        font=FONT,
    )
    return fig


def decoded_upload(upload: UploadedFile, dataset: LabDataset) -> torch.Tensor:
    """An uploaded file as one model input (C, R, R), decoded once per upload and dataset shape, not per rerun.

    Raises :class:`explain.ExplainError` naming the file when it is not an image the datasets accept.
    """
    key = (upload.file_id, dataset.channels, dataset.resolution, dataset.config.source.fit)
    memo = st.session_state.get("ex_upload_memo")
    if memo is None or memo[0] != key:
        image = explain.prepare_upload(
            upload.getvalue(),
            upload.name,
            channels=dataset.channels,
            resolution=dataset.resolution,
            fit=dataset.config.source.fit,
        )[0]
        st.session_state["ex_upload_memo"] = memo = (key, image)
    decoded: torch.Tensor = memo[1]
    return decoded
