"""Run and experiment records made on another machine: they load and list here, and fail only when run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import experiments, runs, store
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.training import TrainConfig, TrainConfigError

CPU = TrainConfig(max_epochs=1, device="cpu", precision="fp32")


def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine a CPU-only one, whatever it really is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def as_if_made_on_a_gpu(path: Path) -> None:
    """Rewrite the training config in the record ``path`` (run or experiment) to CUDA float16."""
    data = json.loads(path.read_text())
    data["config"]["train"].update(device="cuda", precision="fp16")
    store.write_json(path, data)


def test_a_run_recorded_on_a_gpu_machine_loads_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    no_gpu(monkeypatch)
    runs.save_record(runs.RunRecord("gpu", runs.RunConfig(DatasetConfig(), train=CPU), "done", device="cuda fp16"))
    as_if_made_on_a_gpu(runs.runs_dir() / "gpu" / "run.json")
    record = runs.load_record("gpu")
    assert (record.config.train.device, record.config.train.precision) == ("cuda", "fp16")
    assert record.status == "done" and record.device == "cuda fp16"
    assert runs.list_records() == [record]


def test_an_experiment_planned_on_a_gpu_machine_lists_and_summarises(monkeypatch: pytest.MonkeyPatch) -> None:
    no_gpu(monkeypatch)
    cfg = experiments.ExperimentConfig(mixes=(MixConfig("oversample"),), train=CPU, seeds=(0, 1))
    planned = experiments.plan_experiment(cfg)
    as_if_made_on_a_gpu(experiments.experiments_dir() / f"{planned.id}.json")
    for _, _, run_id in planned.run_ids:
        as_if_made_on_a_gpu(runs.runs_dir() / run_id / "run.json")
    assert [e.id for e in experiments.list_experiments()] == [planned.id]
    assert {r.id for r in runs.list_records()} == {run_id for _, _, run_id in planned.run_ids}
    summary = experiments.summarize(planned.id, n_boot=10)
    assert summary.experiment.config.train.device == "cuda"
    assert [(m.label, m.runs_done, m.runs_total) for m in summary.mixes] == [("real", 0, 2), ("oversample fill", 0, 2)]


def test_running_it_here_fails_at_the_start_naming_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    no_gpu(monkeypatch)
    runs.save_record(runs.RunRecord("gpu", runs.RunConfig(DatasetConfig(), train=CPU), "queued"))
    as_if_made_on_a_gpu(runs.runs_dir() / "gpu" / "run.json")
    expected = "train.device='cuda' is not available on this machine, which offers cpu"
    with pytest.raises(TrainConfigError, match=expected):
        runs.execute_run("gpu", runs.load_record("gpu").config, build_dataset(DatasetConfig()))
    record = runs.load_record("gpu")
    assert record.status == "failed" and expected in record.error and record.epochs == 0


def test_a_record_written_before_hosts_loads_and_is_swept_as_this_machines() -> None:
    runs.save_record(runs.RunRecord("old", runs.RunConfig(DatasetConfig(), train=CPU), "running", pid=2**22 + 99))
    path = runs.runs_dir() / "old" / "run.json"
    data = json.loads(path.read_text())
    del data["host"]
    store.write_json(path, data)
    assert runs.load_record("old").host == ""
    assert runs.sweep() == ["old"]  # no such pid here: its process has stopped
    record = runs.load_record("old")
    assert (record.status, record.error) == ("interrupted", "the process running it stopped")
