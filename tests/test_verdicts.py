"""The headline: a synthetic mix must beat the baseline and every control; unsound experiments say can't tell."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from engine import experiments, runs, store, verdicts
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.synth import sets
from engine.training import TrainConfig
from tests.conftest import app_page, store_images_as_set

CUT = DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0",), keep_fraction=0.1))
N_CLASSES, PER_CLASS = 3, 40


def config(dataset: DatasetConfig = CUT) -> experiments.ExperimentConfig:
    return experiments.ExperimentConfig(
        dataset=dataset,
        mixes=(MixConfig("add", synthetic_set="s"), MixConfig("oversample"), MixConfig("reweight")),
        seeds=(0, 1, 2),
    )


def predictions(accuracy: dict[int, float], seed: int) -> np.ndarray:
    """(N, C) probabilities whose argmax is right for the given share of each class's test images."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    pred = y.copy()
    for c, share in accuracy.items():
        idx = np.flatnonzero(y == c)
        wrong = rng.choice(idx, size=round((1 - share) * len(idx)), replace=False)
        pred[wrong] = (c + 1) % N_CLASSES
    return np.eye(N_CLASSES, dtype=np.float32)[pred]


def fake_experiment(recall_of_0: dict[str, float], *, epochs: tuple[int, int] = (8, 10)) -> str:
    """An experiment whose runs are done with class 0's recall per mix as given (others always right)."""
    record = experiments.plan_experiment(config())
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    for label, seed, run_id in record.run_ids:
        share = recall_of_0[label] + 0.025 * seed  # seeds differ a little, the same for every mix
        buffer = io.BytesIO()
        np.savez_compressed(buffer, y_true=y, probs=predictions({0: share}, seed))
        store.write_atomic(runs.runs_dir() / run_id / "predictions.npz", buffer.getvalue())
        rec = runs.load_record(run_id)
        runs.save_record(
            dataclasses.replace(
                rec,
                status="done",
                class_names=("0", "1", "2"),
                best_epoch=epochs[0],
                epochs=epochs[1],
                val_counts=(12, 12, 12),
                test_counts=(PER_CLASS,) * 3,
            )
        )
    return record.id


def test_the_primary_metric_is_fixed_by_the_config() -> None:
    assert verdicts.primary_metric(config()) == "minority_recall"
    assert verdicts.primary_metric(config(DatasetConfig())) == "f1_macro"


def test_yes_only_when_every_control_is_beaten() -> None:
    summary = experiments.summarize(
        fake_experiment({"real": 0.3, "add fill": 0.8, "oversample fill": 0.4, "reweight": 0.45}), n_boot=300
    )
    head = verdicts.headline(summary, n_boot=300)
    assert head is not None and head.answer == "yes" and head.metric == "minority_recall"
    assert set(head.against) == {"real", "oversample fill", "reweight"}
    assert all(c.ci_low > 0 for c in head.against.values())
    assert head.sentence.startswith("Yes: on minority-class recall, 'add fill' beat 'real', 'oversample fill' and")
    assert {"accuracy", "f1_macro", "balanced_accuracy"} <= set(head.others)


def test_a_control_that_does_as_well_makes_it_cant_tell_and_one_that_does_better_makes_it_no() -> None:
    tie = experiments.summarize(
        fake_experiment({"real": 0.3, "add fill": 0.6, "oversample fill": 0.6, "reweight": 0.4}), n_boot=300
    )
    head = verdicts.headline(tie, n_boot=300)
    assert head is not None and head.answer == "can't tell"
    assert "did not beat 'oversample fill'" in head.sentence and head.detectable is not None
    assert f"±{100 * head.detectable:.1f} points" in head.sentence
    worse = experiments.summarize(
        fake_experiment({"real": 0.3, "add fill": 0.5, "oversample fill": 0.4, "reweight": 0.9}), n_boot=300
    )
    head = verdicts.headline(worse, n_boot=300)
    assert head is not None and head.answer == "no" and "did worse than 'reweight'" in head.sentence


def test_a_run_stopped_at_once_forbids_a_yes() -> None:
    summary = experiments.summarize(
        fake_experiment({"real": 0.3, "add fill": 0.8, "oversample fill": 0.4, "reweight": 0.45}, epochs=(1, 6)),
        n_boot=200,
    )
    warnings = verdicts.health_warnings(summary)
    assert warnings and "was best after epoch 1 of 6: it stopped learning at once" in warnings[0]
    head = verdicts.headline(summary, n_boot=200)
    assert head is not None and head.answer == "can't tell" and head.reasons == tuple(warnings)


def test_no_synthetic_mix_no_headline() -> None:
    cfg = experiments.ExperimentConfig(dataset=CUT, mixes=(MixConfig("oversample"),), seeds=(0,))
    record = experiments.plan_experiment(cfg)
    assert verdicts.headline(experiments.summarize(record.id, n_boot=50)) is None


def test_a_constant_baseline_is_warned_about_and_cant_tell() -> None:
    exp_id = fake_experiment({"real": 0.0, "add fill": 0.8, "oversample fill": 0.4, "reweight": 0.45})
    summary = experiments.summarize(exp_id, n_boot=200)
    for label, _, run_id in summary.experiment.run_ids:  # the baseline says '1' for every test image
        if label == "real":
            y_true = runs.load_predictions(run_id)[0]
            buffer = io.BytesIO()
            np.savez_compressed(buffer, y_true=y_true, probs=np.tile(np.eye(N_CLASSES)[1], (len(y_true), 1)))
            store.write_atomic(runs.runs_dir() / run_id / "predictions.npz", buffer.getvalue())
    warnings = verdicts.health_warnings(summary)
    assert len(warnings) == 3 and all("predicts '1' for 100% of the test images" in w for w in warnings)
    head = verdicts.headline(summary, n_boot=200)
    assert head is not None and head.answer == "can't tell" and head.sentence.startswith("Can't tell: real seed 0")


@pytest.mark.slow
def test_noise_labelled_as_the_minority_class_never_gets_a_yes() -> None:
    dataset = build_dataset(CUT)
    counts = dataset.train.class_counts()
    need = int(counts.max() - counts[0])
    noise = np.random.default_rng(0).integers(0, 256, size=(need, *dataset.train.images.shape[1:]), dtype=np.uint8)
    noise_id = store_images_as_set(dataset, noise, [0] * need, name="noise")
    cfg = experiments.ExperimentConfig(
        dataset=CUT,
        mixes=(MixConfig("add", synthetic_set=noise_id), MixConfig("oversample"), MixConfig("reweight")),
        train=TrainConfig(max_epochs=6, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0, 1, 2),
    )
    record = experiments.run_experiment(cfg, dataset=dataset, synthetic=sets.load_set)
    head = verdicts.headline(experiments.summarize(record.id, n_boot=500), n_boot=500)
    assert head is not None and head.answer != "yes", head.sentence


def test_compare_leads_with_the_headline_and_the_warnings() -> None:
    fake_experiment({"real": 0.3, "add fill": 0.8, "oversample fill": 0.4, "reweight": 0.45}, epochs=(2, 9))
    at = app_page("compare")
    assert not at.exception and not at.error
    assert at.warning[0].value.startswith("**Did the synthetic images beat every cheap control?** Can't tell: ")
    assert any("was best after epoch 2 of 9" in w.value for w in at.warning[1:])
    table = next(d.value for d in at.dataframe if "against" in d.value.columns)
    assert list(table["against"]) == ["real", "oversample fill", "reweight"]
