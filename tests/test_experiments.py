"""Experiments (mixes × seeds), their summary with intervals and verdicts, export, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score

from engine import experiments, runs, stats, summaries, tasks, verdicts
from engine.cli import main
from engine.config import DatasetConfig, ImbalanceConfig, SplitConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import JobRunner
from engine.mixes import MixConfig
from engine.synth import sets
from engine.training import TrainConfig
from tests.conftest import store_images_as_set

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
    assert comp.ci_low <= comp.diff <= comp.ci_high and comp.verdict == stats.verdict_from_ci(comp.ci_low, comp.ci_high)
    assert comp.n_seeds == 2 and comp.method.startswith("two-level paired bootstrap over seeds and test images")
    accs = [runs.load_record(r).headline["accuracy"] for label, _, r in record.run_ids if label == "oversample fill"]
    assert over.means["accuracy"] == pytest.approx(np.mean(accs))
    assert comp.diff == pytest.approx(over.means["accuracy"] - base.means["accuracy"])
    assert len(over.recall_diff) == 10 and over.seed_tests["f1_macro"].method.startswith("paired t-interval")
    rows = experiments.results_table(summary)
    assert rows[0]["Δ accuracy"] == "baseline" and rows[1]["verdict (accuracy)"] == comp.verdict
    # The minority classes' mean recall, compared like accuracy: checked against scikit-learn per run.
    minority = over.comparisons["minority_recall"]
    recalls = {}
    for label, seed, run_id in record.run_ids:
        y_true, probs = runs.load_predictions(run_id)
        recalls[(label, seed)] = recall_score(y_true, probs.argmax(1), labels=[0, 1], average="macro")
    expected = np.mean([recalls[("oversample fill", s)] - recalls[("real", s)] for s in (0, 1)])
    assert minority.diff == pytest.approx(expected) and minority.ci_low <= minority.diff <= minority.ci_high
    assert rows[1]["verdict (minority_recall)"] == minority.verdict and "minority_recall" not in base.comparisons
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
    assert "oversample fill" in out and "minority recall*" in out and "minority classes: 0, 1" in out
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


def stored_set(dataset: LabDataset, per_class: int = 3) -> str:
    """A stored synthetic set for ``dataset``: the first ``per_class`` training images of every class."""
    labels = dataset.train.labels.numpy()
    index = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(dataset.train.num_classes)])
    return store_images_as_set(dataset, dataset.train.images[index].numpy(), labels[index])


def test_a_set_made_for_another_split_is_refused_before_anything_is_planned() -> None:
    digits = build_dataset(DatasetConfig())
    other = build_dataset(DatasetConfig(split=SplitConfig(seed=1)))  # same files: its training split holds our tests
    set_id = stored_set(other)
    assert sets.list_sets(digits.key) == []
    cfg = experiments.ExperimentConfig(
        dataset=digits.config, mixes=(MixConfig("add", per_class=2, synthetic_set=set_id),), seeds=(0,)
    )
    with pytest.raises(
        experiments.ExperimentError, match=rf"mix.synthetic_set='{set_id}' is not accepted: .*another split"
    ):
        tasks.submit_experiment(JobRunner(), cfg, digits, owner="me", synthetic=sets.load_set)
    assert experiments.list_experiments() == [] and runs.list_records() == []


def test_queued_runs_train_on_the_set_as_it_was_when_they_were_submitted() -> None:
    digits = build_dataset(DatasetConfig())
    set_id = stored_set(digits)
    cfg = experiments.ExperimentConfig(
        dataset=digits.config,
        mixes=(MixConfig("add", per_class=3, synthetic_set=set_id),),
        train=TrainConfig(max_epochs=1, device="cpu", precision="fp32"),
        seeds=(0, 1),
    )
    runner, gate = JobRunner(), threading.Event()
    runner.submit("another user's job", lambda ctx: gate.wait(60), owner="other")  # the runs queue behind it
    record = tasks.submit_experiment(runner, cfg, digits, owner="me", synthetic=sets.load_set)
    sets.delete_set(set_id)  # deleted (or edited) while the runs wait
    gate.set()
    for job in runner.list(owner="me"):
        runner.wait(job.id, timeout=120)
    recs = [runs.load_record(run_id) for _, _, run_id in record.run_ids]
    assert [r.status for r in recs] == ["done"] * 4
    assert {r.synthetic_counts for r in recs if r.config.mix.kind == "add"} == {(3,) * 10}


def test_a_summary_without_a_finished_baseline_still_names_the_classes() -> None:
    cfg = dataclasses.replace(
        tiny_config(), mixes=(MixConfig("oversample"),), seeds=(0,), train=TrainConfig(max_epochs=1, device="cpu")
    )
    record = experiments.run_experiment(cfg)
    base_id = next(run_id for label, _, run_id in record.run_ids if label == "real")
    base = runs.load_record(base_id)  # as if it had been cancelled while queued: it never saw the data
    runs.save_record(dataclasses.replace(base, status="cancelled", class_names=(), real_counts=()))
    summary = experiments.summarize(record.id, n_boot=50)
    assert len(summary.class_names) == 10 and summary.minority == ("0", "1")
    assert summary.mixes[0].runs_done == 0 and summary.mixes[1].runs_done == 1


def test_controls_are_matched_to_the_add_mix_and_its_set() -> None:
    cfg = experiments.ExperimentConfig(
        mixes=(
            MixConfig("add", synthetic_set="s1"),
            MixConfig("oversample"),
            MixConfig("augment", per_class=5),  # another amount than add: not its control
            MixConfig("reweight"),
        ),
    )
    by_label = {m.label: m for m in cfg.mixes}
    assert by_label["oversample fill"].synthetic_set == "s1" and by_label["reweight"].synthetic_set == "s1"
    assert by_label["augment +5/class"].synthetic_set == "" and by_label["real"].synthetic_set == ""
    again = experiments.ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_a_short_set_still_gives_every_add_run_and_the_summary_says_which_class() -> None:
    dataset = build_dataset(
        DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1))
    )
    counts = dataset.train.class_counts()
    want = int(counts.max() - counts[1])
    labels = dataset.train.labels.numpy()
    full = int(counts.max() - counts[0])  # class 0 gets all it asks for (repeats are fine here), class 1 three images
    picks = np.concatenate([np.resize(np.flatnonzero(labels == 0), full), np.flatnonzero(labels == 1)[:3]])
    set_id = store_images_as_set(dataset, dataset.train.images[picks].numpy(), dataset.train.labels[picks].tolist())
    cfg = experiments.ExperimentConfig(
        dataset=dataset.config,
        mixes=(MixConfig("add", synthetic_set=set_id), MixConfig("oversample")),
        train=TrainConfig(max_epochs=1, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0,),
    )
    record = experiments.run_experiment(cfg, dataset=dataset, synthetic=sets.load_set)
    recs = {label: runs.load_record(run_id) for label, _, run_id in record.run_ids}
    assert [r.status for r in recs.values()] == ["done"] * 3
    added = np.array(recs["add fill"].synthetic_counts)
    assert added[0] == full and added[1] == 3 and added[2:].sum() == 0
    assert recs["add fill"].short == (f"'1': 3 of {want}",)
    assert recs["real"].versions["torch"] == torch.__version__ and recs["real"].versions["python"].startswith("3.")
    assert recs["real"].val_counts == tuple(dataset.val.class_counts().tolist())
    assert recs["real"].test_counts == tuple(dataset.test.class_counts().tolist())
    # the control adds as many images per class as add could take from the set
    assert np.array(recs["oversample fill"].real_counts) - counts == pytest.approx(added)
    notes = experiments.shortfall_notes(experiments.summarize(record.id, n_boot=50))
    assert notes == [
        f"add fill: the synthetic set had fewer images than asked for class '1': 3 of {want}; "
        "the mix used what the set had (the controls were matched to the same counts)"
    ]


def test_pretrain_on_synthetic_then_fine_tune_runs_beside_its_real_schedule_control() -> None:
    digits = build_dataset(DatasetConfig())
    set_id = stored_set(digits)
    cfg = experiments.ExperimentConfig(
        dataset=digits.config,
        mixes=(
            MixConfig("pretrain", synthetic_set=set_id, pretrain_epochs=2, finetune_lr_scale=0.5),
            MixConfig("pretrain_real"),
        ),
        train=TrainConfig(max_epochs=2, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0,),
    )
    control = next(m for m in cfg.mixes if m.kind == "pretrain_real")
    assert (control.synthetic_set, control.pretrain_epochs, control.finetune_lr_scale) == (set_id, 2, 0.5)
    record = experiments.run_experiment(cfg, dataset=digits, synthetic=sets.load_set)
    recs = {label: runs.load_record(run_id) for label, _, run_id in record.run_ids}
    assert [r.status for r in recs.values()] == ["done"] * 3
    history = runs.load_history(recs["pretrain synthetic"].id)
    assert [(row["epoch"], row["phase"]) for row in history] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert history[2]["lr"] == pytest.approx(0.5 * cfg.train.lr)
    assert recs["pretrain real"].epochs == 4 and recs["pretrain real"].synthetic_counts == (0,) * 10
    with pytest.raises(experiments.ExperimentError, match="linear probe"):
        dataclasses.replace(cfg, model="probe:efficientnet_lite0")
    with pytest.raises(experiments.ExperimentError, match="'pretrain real' is not accepted without a synthetic set"):
        experiments.ExperimentConfig(mixes=(MixConfig("pretrain_real"),))


def test_a_minority_class_without_test_images_is_not_measured_and_not_judged() -> None:
    exp_id = fabricate(0.05, 0.003)
    for _, _, run_id in experiments.load_experiment(exp_id).run_ids:  # class 9: a minority with no test image
        y, probs = runs.load_predictions(run_id)
        keep = y != 9
        np.savez_compressed(runs.runs_dir() / run_id / "predictions.npz", y_true=y[keep], probs=probs[keep])
        counts = (10,) * 9 + (0,)
        rec = dataclasses.replace(runs.load_record(run_id), val_counts=counts, test_counts=counts)
        runs.save_record(dataclasses.replace(rec, real_counts=(100,) * 9 + (10,)))
    summary = experiments.summarize(exp_id, n_boot=100)
    assert summary.minority == ("9",)
    added = summary.mixes[1]
    assert experiments.MINORITY_RECALL not in added.seed_tests and "accuracy" in added.seed_tests
    row = experiments.results_table(summary)[1]
    assert row[f"verdict ({experiments.MINORITY_RECALL})"] == "not measured"
    assert row[f"Δ {experiments.MINORITY_RECALL}"] == "—" and row["verdict (accuracy)"] == "helps"
    assert any("class '9' has 0 validation and 0 test images" in w for w in verdicts.health_warnings(summary))
    from ui.compare_views import results_frame  # the Compare page's table says the same

    shown = results_frame(summaries.results(exp_id)).iloc[1]
    assert shown["verdict: minority-class recall"] == "not measured" and shown["verdict: accuracy"] == "helps"
