"""Explain page helpers: choosing the two runs, cached models and predictions, side-by-side attribution pairs.

The engine computes (``engine.explain``); these helpers pick defaults, cache per run and draw.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from streamlit.runtime.uploaded_file_manager import UploadedFile
from torch import nn

from engine import explain, preprocess, runs
from engine.datasets import LabDataset
from ui.figures import TILE


def finished_runs(dataset: LabDataset) -> list[runs.RunRecord]:
    """Finished runs trained on exactly this dataset, newest first."""
    return [
        r
        for r in runs.list_records()
        if r.status == "done"
        and r.config.dataset == dataset.config
        and r.dataset_key in (dataset.key, dataset.identity)
    ]


def default_pair(records: list[runs.RunRecord]) -> tuple[str, str]:
    """The real baseline and the best augmented run (by test accuracy) of the newest experiment."""
    newest = [r for r in records if r.experiment == records[0].experiment]
    baseline = next((r for r in newest if r.config.mix.kind == "real"), newest[-1])
    others = [r for r in newest if r.config.mix.kind != "real"] or [r for r in records if r.id != baseline.id]
    best = max(others, key=lambda r: r.headline.get("accuracy") or 0.0)
    return baseline.id, best.id


def run_label(record: runs.RunRecord) -> str:
    accuracy = record.headline.get("accuracy")
    acc = f"acc {accuracy:.3f}" if accuracy is not None else "no metrics"
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
    """Normalised maps of test images ``indices`` (given as ``_images``) under one run's model, batched."""
    return explain.normalise(explain.attribute(cached_model(run_id), _images, method))


@st.cache_data(max_entries=8)
def cached_predictions(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    return runs.load_predictions(run_id)


def _big(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) nearest-neighbour upscaled to about TILE px so small images stay visible."""
    factor = max(1, TILE // image.shape[0])
    return np.repeat(np.repeat(image, factor, 0), factor, 1)


def show_pair(
    image: torch.Tensor,
    models: dict[str, nn.Module],
    heats: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    *,
    truth: str | None = None,
) -> None:
    """One image, then each model's prediction, confidence and attribution overlay (``heats``); then the reading."""
    names = list(models)
    cols = st.columns(len(names) + 1)
    pixels = image.numpy()
    shown = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    cols[0].image(
        _big(np.stack([shown] * 3, -1) if shown.ndim == 2 else shown), caption=f"true: {truth}" if truth else ""
    )
    shares = []
    for col, name in zip(cols[1:], names, strict=True):
        top = explain.top_k(models[name], image[None], class_names, k=3)
        shares.append(float(explain.centre_share(heats[name][None])[0]))
        col.image(
            _big(explain.overlay(pixels, heats[name])), caption=f"{name}: {top.classes[0]} ({top.probabilities[0]:.0%})"
        )
        col.caption(" · ".join(f"{c} {p:.0%}" for c, p in zip(top.classes, top.probabilities, strict=True)))
    st.caption(explain.reading(shares[0], shares[1], names[0], names[1]))


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
