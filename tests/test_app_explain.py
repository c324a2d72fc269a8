"""AppTest: the Explain page compares two runs' attributions on test images, class means and an upload."""

from __future__ import annotations

from engine import experiments
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.training import TrainConfig
from tests.conftest import app_page, image_bytes


def train_two_runs() -> dict[str, str]:
    dataset = build_dataset(DatasetConfig())
    cfg = experiments.ExperimentConfig(
        dataset=dataset.config,
        mixes=(MixConfig("real"), MixConfig("oversample")),
        train=TrainConfig(max_epochs=2),
        seeds=(0,),
    )
    record = experiments.run_experiment(cfg, dataset=dataset)
    return {label: run_id for label, _, run_id in record.run_ids}


def test_without_two_runs_the_page_says_what_to_do() -> None:
    at = app_page("explain")
    assert not at.exception and "at least two runs" in at.info[0].value


def test_explain_page_shows_both_models_side_by_side_and_reads_the_difference() -> None:
    ids = train_two_runs()
    at = app_page("explain")
    assert not at.exception and not at.error
    assert at.selectbox(key="ex_a").value == ids["real"] and at.selectbox(key="ex_b").value == ids["oversample fill"]
    readings = [c.value for c in at.caption if "of its attribution on the central" in c.value]
    assert len(readings) == 6  # one reading per image pair
    predictions = [img.caption for group in at.image for img in group.proto.imgs if img.caption.startswith("A (")]
    assert len(predictions) == 6 and all("%" in p for p in predictions)
    at.selectbox(key="ex_method").set_value("integrated_gradients")
    at.radio(key="ex_how").set_value("confident mistakes").run()
    assert not at.exception
    at.button(key="ex_means").click().run()
    means = [img.caption for group in at.image for img in group.proto.imgs]
    assert means.count("0") >= 2  # a class-mean map of each model
    at.file_uploader(key="ex_upload").set_value(("photo.jpg", image_bytes("JPEG", size=(50, 30)), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert any("of its attribution" in c.value for c in at.caption)
    at.file_uploader(key="ex_upload").set_value(("notes.png", b"not an image", "image/png")).run()
    assert any("'notes.png' is not accepted: corrupt or unreadable" in e.value for e in at.error)
