"""AppTest: the Preprocess preview page shows real and synthetic images before and after, measures the gap,
and hands its presets to the Train page."""

from __future__ import annotations

import json

import torch

from engine import tasks
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from tests.conftest import app_page, store_images_as_set, wait_for_jobs
from ui.figures import readable
from ui.jobs_panel import get_runner


def make_square_set() -> str:
    """A synthetic set for the digits: every training image of classes 0-2, brightened (squares, known shift)."""
    dataset = build_dataset(DatasetConfig())
    keep = dataset.train.labels < 3
    images = (dataset.train.images[keep].int() * 3 // 2).clamp(0, 255).to(torch.uint8).numpy()[:90]
    labels = dataset.train.labels[keep].numpy()[:90]
    return store_images_as_set(dataset, images, labels, name="squares")


def test_without_a_synthetic_set_the_page_says_where_to_make_one() -> None:
    at = app_page("preprocess")
    assert not at.exception and "Generate page" in at.info[0].value


def test_preview_shows_before_and_after_measures_the_gap_and_feeds_training() -> None:
    set_id = make_square_set()
    at = app_page("preprocess")
    assert not at.exception and not at.error
    assert at.selectbox(key="pp_set").value == set_id
    captions = [c.value for c in at.caption]
    for name in ("Real, as stored", "Real, after the preset", "Synthetic, as generated", "Synthetic, after the preset"):
        assert name in captions
    assert len(at.image) == 4  # four grids: real and synthetic, before and after
    assert at.selectbox(key="pp_synth_resize").value == "none"  # the digits are square: no resize is suggested
    at.button(key="pp_redraw").click().run()
    assert at.session_state["pp_seed"] == 1 and not at.exception
    titles = {json.loads(c.proto.spec)["layout"]["xaxis"]["title"]["text"] for c in at.get("plotly_chart")}
    assert "mean grey level (0 = black, 255 = white)" in titles and "width ÷ height (1 = square)" in titles
    table = at.dataframe[0].value
    assert all(v == readable(v) for v in table["mean"])  # three significant digits, not 69797.9731
    assert set(table["images"]) == {
        "real, as stored",
        "real, after the preset",
        "synthetic, as generated",
        "synthetic, after the preset",
    }
    at.selectbox(key="pp_synth_resize").set_value("letterbox")
    at.slider(key="pp_synth_jitter").set_value(0.2).run()
    at.button(key="pp_gap").click().run()
    wait_for_jobs(str(at.session_state["owner"]))
    at.run()
    job = tasks.list_jobs(get_runner(), tasks.JobKind.GAP)[-1]
    assert job.status == "done", job.error
    scores = next(d.value for d in at.dataframe if "real-vs-synthetic accuracy" in d.value.columns)
    assert list(scores["presets"]) == ["before the presets", "after the presets"]
    assert (scores["Fréchet distance"] >= 0).all() and "dims" not in scores.columns
    assert all(a.endswith("%") for a in scores["real-vs-synthetic accuracy"])
    assert all(v == readable(v) for v in scores["kernel distance"])  # rounded for reading
    at.button(key="pp_use").click().run()
    assert any("letterbox" in s.value for s in at.success)

    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    assert at.text_input(key="train_pre_synthetic").value == "resize=letterbox;jitter=0.2"
    assert at.text_input(key="train_pre_real").value == ""
    at.switch_page("app_pages/compare.py").run()
    at.switch_page("app_pages/train.py").run()  # widget state is dropped on other pages; the presets are kept
    assert at.text_input(key="train_pre_synthetic").value == "resize=letterbox;jitter=0.2"
