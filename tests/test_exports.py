"""Exports: a set as a zip of class folders that loads back as a dataset, a classifier that predicts as its run did."""

from __future__ import annotations

import csv
import io
import json
import runpy
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from engine import exports, models, runs, sources
from engine.config import DatasetConfig, SourceConfig
from engine.datasets import LabDataset, build_dataset
from engine.experiments import ExperimentConfig, run_experiment
from engine.mixes import MixConfig
from engine.store import REPO_ROOT
from engine.synth import sets
from engine.training import TrainConfig
from tests.conftest import class_files, store_images_as_set


@pytest.fixture
def small(make_zip: Callable[[dict[str, bytes]], Path]) -> LabDataset:
    """Three classes of 24 random RGB images (12 x 10 px: the working side is 12), a class named with a space."""
    path = make_zip(class_files({"cat": 24, "dog": 24, "red fox": 24}))
    return build_dataset(DatasetConfig(source=SourceConfig(kind="zip", path=str(path))))


def test_a_set_zip_holds_its_kept_images_in_class_folders_and_loads_back_as_a_dataset(
    small: LabDataset, tmp_path: Path
) -> None:
    pick = np.concatenate([np.flatnonzero(small.train.labels.numpy() == c)[:3] for c in range(3)])
    images, labels = small.train.images[pick].numpy(), small.train.labels[pick].numpy()
    set_id = store_images_as_set(small, images, labels)
    rejected = sets.load_manifest(set_id)[4]
    sets.set_kept(set_id, [rejected.file], False)
    path = exports.save_set_zip(set_id, tmp_path / "set.zip")
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        about = json.loads(archive.read("manifest.json"))
        table = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        first = np.asarray(Image.open(io.BytesIO(archive.read(table[0]["file"]))))
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 8 and {n.split("/")[0] for n in pngs} == {"cat", "dog", "red fox"}
    assert about["id"] == set_id and about["images_in_zip"] == 8 and about["class_names"] == list(small.class_names)
    assert len(table) == 9 and table[4]["file"] == "" and table[4]["kept"] == "False"
    assert table[4]["reason"] == "rejected by hand" and table[0]["class"] == small.class_names[labels[0]]
    assert np.array_equal(first, images[0].transpose(1, 2, 0))  # lossless
    assert exports.set_zip(set_id)[:2] == b"PK"
    # The zip is a dataset source as it stands: class folders, the manifests skipped as "not an image".
    decoded = sources.load(SourceConfig(kind="zip", path=str(path)))
    kept = np.delete(np.arange(9), 4)
    assert sorted(decoded.class_names) == sorted({small.class_names[y] for y in labels[kept]})
    counts = {name: int((decoded.labels == i).sum()) for i, name in enumerate(decoded.class_names)}
    assert counts == {small.class_names[y]: int((labels[kept] == y).sum()) for y in set(labels[kept])}
    assert len(decoded.report.skipped) == 2
    with pytest.raises(exports.ExportError, match=r"out='.*set.tar' is not accepted: expected .*\.zip"):
        exports.save_set_zip(set_id, tmp_path / "set.tar")


def finished_run(dataset: LabDataset, model: str) -> str:
    cfg = ExperimentConfig(
        dataset=dataset.config,
        mixes=(MixConfig("real"),),
        model=model,
        train=TrainConfig(max_epochs=2, batch_size=16, device="cpu", precision="fp32", preprocess_real="grayscale"),
        seeds=(0,),
    )
    [(_, _, run_id)] = run_experiment(cfg, dataset=dataset).run_ids
    assert runs.load_record(run_id).status == "done", runs.load_record(run_id).error
    return run_id


def test_an_exported_classifier_reloads_and_predicts_as_its_run_did(
    small: LabDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = finished_run(small, "simple_cnn")
    folder = exports.export_classifier(run_id, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "load.py", "model.safetensors"]
    loaded = exports.load_classifier(folder)
    config = loaded.config
    assert config["class_names"] == ["cat", "dog", "red fox"] and (config["channels"], config["resolution"]) == (3, 12)
    weights = load_file(str(folder / "model.safetensors"))
    assert config["normalisation"]["mean"] == pytest.approx(weights["mean"].flatten().tolist())
    _, stored = runs.load_predictions(run_id)
    assert np.abs(loaded.predict(small.test.images) - stored).max() < 1e-5  # the grayscale preset applied as in the run
    # One image file, decoded as the dataset was: the same answer as the run's stored prediction.
    image = tmp_path / "one.png"
    Image.fromarray(small.test.images[0].numpy().transpose(1, 2, 0)).save(image)
    top, p = loaded.predict_file(image)[0]
    assert top == small.class_names[int(stored[0].argmax())] and p == pytest.approx(float(stored[0].max()), abs=1e-5)
    # load.py, run as the README says (here in this process: a new interpreter costs seconds), prints the same class.
    monkeypatch.setenv("SYNTHLAB_ROOT", str(REPO_ROOT))
    monkeypatch.setattr(sys, "argv", ["load.py", str(image)])
    runpy.run_path(str(folder / "load.py"), run_name="__main__")
    assert capsys.readouterr().out.splitlines()[0] == f"{top}\t{p:.3f}"
    with zipfile.ZipFile(io.BytesIO(exports.classifier_zip(run_id))) as archive:
        assert f"{run_id}/model.safetensors" in archive.namelist()


def test_an_exported_probe_carries_its_backbone_and_reloads_without_the_pretrained_weights(
    small: LabDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "PRETRAINED_SIZE", 32)  # the same code path, cheaper than 128 px on two cores
    run_id = finished_run(small, "probe:efficientnet_lite0")
    folder = exports.export_classifier(run_id, tmp_path / "probe")
    assert len(load_file(str(folder / "model.safetensors"))) > 100  # every backbone weight, not only the head
    monkeypatch.setattr(models, "PRETRAINED_SIZE", 128)  # the input side comes from config.json, not the default
    monkeypatch.setattr("engine.backbones.read_weights", lambda name: pytest.fail("pretrained weights were read"))
    loaded = exports.load_classifier(folder)
    assert loaded.config["backbone_input_size"] == 32
    _, stored = runs.load_predictions(run_id)
    assert np.abs(loaded.predict(small.test.images) - stored).max() < 2e-3  # features were computed in batches


def test_only_finished_runs_are_exported(small: LabDataset, tmp_path: Path) -> None:
    record = runs.RunRecord("queued-run", runs.RunConfig(small.config), "queued")
    runs.save_record(record)
    with pytest.raises(
        exports.ExportError, match="run='queued-run' is not accepted: it is queued; expected a finished"
    ):
        exports.export_classifier("queued-run", tmp_path / "out")
    assert not (tmp_path / "out").exists()
