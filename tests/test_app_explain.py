"""AppTest: the Explain page compares two runs' attributions on test images, class means and an upload."""

from __future__ import annotations

import json

import numpy as np

from engine import experiments, runs
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.training import TrainConfig
from tests.conftest import app_page, image_bytes
from ui.explain_views import default_pair, heat, reading


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


def record(run_id: str, mix: MixConfig, seed: int, accuracy: float, experiment: str = "e1") -> runs.RunRecord:
    cfg = runs.RunConfig(DatasetConfig(), mix, seed=seed)
    created = float(run_id[1:])
    return runs.RunRecord(run_id, cfg, "done", experiment=experiment, created=created, headline={"accuracy": accuracy})


def test_the_default_pair_is_real_only_against_the_synthetic_mix_of_the_same_seed() -> None:
    add, replace = MixConfig("add", synthetic_set="s1"), MixConfig("replace", synthetic_set="s1")
    newest_first = [
        record("r7", MixConfig("oversample"), 1, 0.99),
        record("r6", replace, 0, 0.95),
        record("r5", add, 1, 0.90),
        record("r4", add, 0, 0.80),
        record("r3", MixConfig("oversample"), 0, 0.99),
        record("r2", MixConfig("real"), 1, 0.85),
        record("r1", MixConfig("real"), 0, 0.85),
    ]
    assert default_pair(newest_first) == ("r1", "r4")  # not the most accurate run: add of the same seed
    assert default_pair([r for r in newest_first if r.id != "r4"]) == ("r1", "r6")  # replace of the same seed
    running = [record("n1", MixConfig("real"), 0, 0.7, experiment="e2")]  # a newer experiment, one run finished
    assert default_pair(running + newest_first) == ("r1", "r4")  # the newest experiment that has both
    controls_only = [r for r in running + newest_first if r.config.mix.kind not in ("add", "replace")]
    assert default_pair(controls_only) == ("n1", "r7")  # no synthetic mix anywhere: the most accurate other run
    assert default_pair(controls_only[1:]) == ("r1", "r7")
    seeds_of_real = [record("q3", MixConfig("real"), 1, 1.0, "e3"), record("q2", MixConfig("reweight"), 0, 0.9, "e3")]
    assert default_pair([*seeds_of_real, record("q1", MixConfig("real"), 0, 1.0, "e3")]) == ("q1", "q2")


def test_a_flat_or_near_uniform_map_is_said_to_show_no_region_not_stretched() -> None:
    assert heat(np.zeros((8, 8))) is None
    assert heat(np.full((8, 8), 3.0) + np.random.default_rng(0).uniform(0, 0.01, (8, 8))) is None
    peaked = np.zeros((8, 8))
    peaked[3, 4] = 1.0
    assert heat(peaked) is not None and heat(peaked).max() == 1.0
    text = reading({"A (real)": None, "B (add fill)": heat(peaked)}, "gradcam")
    assert "found no region" in text and "A (real)" in text and "flat map" not in text
    assert "central" in reading({"A": heat(peaked), "B": heat(peaked.T)}, "occlusion")


def pair_titles(at) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec)["layout"]
        out += [a["text"] for a in layout.get("annotations", [])]
    return out


def test_without_two_runs_the_page_says_what_to_do() -> None:
    at = app_page("explain")
    assert not at.exception and "at least two runs" in at.info[0].value


def test_explain_page_shows_both_models_side_by_side_and_reads_the_difference() -> None:
    ids = train_two_runs()
    at = app_page("explain")
    assert not at.exception and not at.error
    assert at.selectbox(key="ex_a").value == ids["real"] and at.selectbox(key="ex_b").value == ids["oversample fill"]
    readings = [c.value for c in at.caption if "of its attribution on the central" in c.value or "no region" in c.value]
    assert len(readings) == 6  # one reading per image pair
    titles = pair_titles(at)
    predictions = [t for t in titles if t.startswith("A (")]
    assert len(predictions) == 6 and all("%" in p for p in predictions)
    assert sum(t.startswith("true class:") for t in titles) == 6
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["coloraxis"]["colorbar"]["title"]["text"] == "attribution"  # one colour scale
    heatmaps = [t for t in spec["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 2 and all(t["coloraxis"] == "coloraxis" for t in heatmaps)
    at.selectbox(key="ex_method").set_value("integrated_gradients")
    at.radio(key="ex_how").set_value("confident mistakes").run()
    assert not at.exception
    at.button(key="ex_means").click().run()
    means = [t for t in pair_titles(at) if t.startswith("class ")]
    assert means.count("class 0") >= 2  # a class-mean map of each model
    at.file_uploader(key="ex_upload").set_value(("photo.jpg", image_bytes("JPEG", size=(50, 30)), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert any("of its attribution" in c.value or "no region" in c.value for c in at.caption)
    at.file_uploader(key="ex_upload").set_value(("notes.png", b"not an image", "image/png")).run()
    assert any("'notes.png' is not accepted: corrupt or unreadable" in e.value for e in at.error)
