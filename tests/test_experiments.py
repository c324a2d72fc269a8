"""Experiments (mixes × seeds), their summary with intervals and verdicts, export, and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engine import experiments, runs
from engine.cli import main
from engine.config import DatasetConfig, ImbalanceConfig
from engine.mixes import MixConfig
from engine.training import TrainConfig

TOML = """
name = "tiny"
model = "simple_cnn"
seeds = [0, 1]

[dataset.source]
kind = "digits"

[dataset.imbalance]
kind = "step"
minority = ["0", "1"]
keep_fraction = 0.1

[train]
max_epochs = 3
batch_size = 64
device = "cpu"
precision = "fp32"

[[mixes]]
kind = "oversample"
"""


def tiny_config() -> experiments.ExperimentConfig:
    return experiments.ExperimentConfig(
        dataset=DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1)),
        mixes=(MixConfig("oversample"), MixConfig("reweight")),
        train=TrainConfig(max_epochs=3, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0, 1),
    )


def test_the_baseline_is_always_part_of_an_experiment() -> None:
    cfg = tiny_config()
    assert [m.kind for m in cfg.mixes] == ["real", "oversample", "reweight"]
    assert [(r.mix.kind, r.seed) for r in cfg.run_configs()][:3] == [("real", 0), ("real", 1), ("oversample", 0)]
    assert experiments.ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_errors_name_the_key() -> None:
    with pytest.raises(experiments.ExperimentError, match=r"seeds=\[1, 1\] is not accepted"):
        experiments.ExperimentConfig(seeds=(1, 1))
    with pytest.raises(experiments.ExperimentError, match=r"epochs=3 is not accepted"):
        experiments.ExperimentConfig.from_dict({"epochs": 3})
    with pytest.raises(experiments.ExperimentError, match=r"a mix is repeated"):
        experiments.ExperimentConfig(mixes=(MixConfig("oversample"), MixConfig("oversample")))


def test_an_experiment_runs_and_is_summarised_against_the_baseline() -> None:
    record = experiments.run_experiment(tiny_config())
    assert len(record.run_ids) == 6
    assert {runs.load_record(r).status for _, _, r in record.run_ids} == {"done"}
    summary = experiments.summarize(record.id, n_boot=300)
    assert summary.minority == ("0", "1")
    base, over, _ = summary.mixes
    assert base.label == "real" and base.comparisons == {} and base.runs_done == 2
    comp = over.comparisons["accuracy"]
    assert comp.ci_low <= comp.diff <= comp.ci_high and comp.verdict in ("helps", "no detectable effect", "hurts")
    assert comp.n_seeds == 2 and comp.method.startswith("two-level paired bootstrap over seeds and test images")
    accs = [runs.load_record(r).headline["accuracy"] for label, _, r in record.run_ids if label == "oversample fill"]
    assert over.means["accuracy"] == pytest.approx(np.mean(accs))
    assert comp.diff == pytest.approx(over.means["accuracy"] - base.means["accuracy"])
    assert len(over.recall_diff) == 10 and over.seed_tests["f1_macro"].method.startswith("paired t-interval")
    rows = experiments.results_table(summary)
    assert rows[0]["Δ accuracy"] == "baseline" and rows[1]["verdict (accuracy)"] == comp.verdict
    bundle = experiments.export_bundle(summary)
    assert json.loads(json.dumps(bundle))["config"]["seeds"] == [0, 1]
    assert experiments.list_experiments()[0].id == record.id


def test_cli_runs_a_toml_config_and_re_runs_an_exported_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    assert main(["experiment", str(config), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "oversample fill" in out and "verdict (accuracy)" in out and "minority classes: 0, 1" in out
    assert "two-level paired bootstrap over seeds and test images" in out
    assert len(runs.list_records()) == 4
    exp_id = experiments.list_experiments()[0].id
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(experiments.export_bundle(experiments.summarize(exp_id, n_boot=100))))
    assert main(["experiment", str(bundle), "--n-boot", "100"]) == 0
    assert len(experiments.list_experiments()) == 2 and len(runs.list_records()) == 8
    assert main(["runs"]) == 0 and "oversample fill" in capsys.readouterr().out


def test_cli_rejects_a_bad_config_with_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('model = "vgg"\n')
    assert main(["experiment", str(config)]) == 2
    assert "model='vgg' is not accepted" in capsys.readouterr().err
    assert main(["experiment", str(tmp_path / "missing.toml")]) == 2


def fabricate(effect: float, seed_noise: float, n: int = 3000) -> str:
    """An experiment whose runs are written directly, with predictions of known accuracy."""
    cfg = experiments.ExperimentConfig(mixes=(MixConfig("oversample"),), seeds=(0, 1, 2))
    record = experiments.plan_experiment(cfg)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    for label, _, run_id in record.run_ids:
        accuracy = 0.8 + (effect if label != "real" else 0.0) + rng.normal(0, seed_noise)
        pred = np.where(rng.random(n) < accuracy, y, (y + 1) % 10)
        probs = np.eye(10, dtype=np.float32)[pred]
        folder = runs.runs_dir() / run_id
        np.savez_compressed(folder / "predictions.npz", y_true=y, probs=probs)
        rec = runs.load_record(run_id)
        acc = float((pred == y).mean())
        runs.save_record(
            dataclasses.replace(
                rec,
                status="done",
                class_names=tuple(map(str, range(10))),
                real_counts=(100,) * 10,
                headline={"accuracy": acc, "f1_macro": acc},
            )
        )
    return record.id


def test_a_real_gain_is_called_helps_and_no_gain_is_not() -> None:
    gain = experiments.summarize(fabricate(0.05, 0.003)).mixes[1].comparisons["accuracy"]
    assert gain.verdict == "helps" and gain.ci_low > 0.02 and abs(gain.diff - 0.05) < 0.02
    loss = experiments.summarize(fabricate(-0.05, 0.003)).mixes[1].comparisons["accuracy"]
    assert loss.verdict == "hurts"
    null = experiments.summarize(fabricate(0.0, 0.003)).mixes[1].comparisons["accuracy"]
    assert null.verdict == "no detectable effect" and null.ci_low < 0 < null.ci_high
