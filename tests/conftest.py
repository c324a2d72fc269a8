"""Shared fixtures and helpers: a private workspace per test, tiny image folders and zips, AppTest pages."""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.datasets import LabDataset
from engine.synth import sets

os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is first imported: tests never reach the hub


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SYNTHLAB_HOME, so caches and uploads never leak between tests.

    Server folders may be read from the test's temporary folder (the default would be $HOME only).
    """
    home = tmp_path / "workspace"
    monkeypatch.setenv("SYNTHLAB_HOME", str(home))
    monkeypatch.setenv("SYNTHLAB_FOLDER_ROOTS", str(tmp_path))
    return home


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0) -> bytes:
    """A small random image encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def class_files(classes: dict[str, int], *, prefix: str = "", size: tuple[int, int] = (12, 10)) -> dict[str, bytes]:
    """{path: png bytes} for ``count`` images in each class folder under ``prefix``."""
    files = {}
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            files[f"{prefix}{name}/{i:03d}.png"] = image_bytes(size=size, seed=100 * c + i)
    return files


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    def make(files: dict[str, bytes], name: str = "folder") -> Path:
        root = tmp_path / name
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        root.mkdir(exist_ok=True)
        return root

    return make


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    def make(files: dict[str, bytes], name: str = "data.zip") -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel, data in files.items():
                archive.writestr(rel, data)
        return path

    return make


ROOT = Path(__file__).resolve().parent.parent


def app_page(name: str, *, timeout: float = 120, **query: str) -> AppTest:
    """The app run once (optionally with URL query parameters), then switched to ``app_pages/<name>.py``."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    return at.switch_page(f"app_pages/{name}.py").run()


def wait_for_jobs(owner: str, timeout: float = 180) -> None:
    """Block until every job of ``owner`` on the shared runner has finished."""
    from engine.jobs import FINISHED
    from ui.jobs_panel import get_runner

    deadline = time.monotonic() + timeout
    while any(s.status not in FINISHED for s in get_runner().list(owner=owner)):
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline saved once per test session (see engine/synth/tiny_sd.py)."""
    from engine.synth.tiny_sd import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd")


@pytest.fixture
def tiny_sd(tiny_sd_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny pipeline's folder, readable under this test's folder roots."""
    monkeypatch.setenv("SYNTHLAB_FOLDER_ROOTS", os.pathsep.join([str(tmp_path), str(tiny_sd_folder.parent)]))
    return tiny_sd_folder


def store_images_as_set(
    dataset: LabDataset, images: np.ndarray, labels: Sequence[int], *, name: str = "copies", score: float | None = None
) -> str:
    """Store uint8 ``images`` (N, C, R, R) with ``labels`` as a kept synthetic set made for ``dataset``; its id."""
    records = [
        sets.ImageRecord("", int(y), dataset.class_names[int(y)], "test", "h", 0, i, score, True, "")
        for i, y in enumerate(labels)
    ]
    info = sets.create_set(
        name,
        images,
        records,
        dataset.class_names,
        generator="test",
        dataset_key=dataset.key,
        config={},
    )
    return info.id
