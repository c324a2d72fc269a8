"""Interrupted runs: per-epoch checkpoints, exact resume, heartbeats and the sweep, a killed process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine import checkpoints, experiments, heartbeat, runs, store
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import ImageSet, LabDataset, build_dataset
from engine.mixes import MixConfig
from engine.synth import gan, generators
from engine.training import TrainConfig, TrainEvent
from tests.conftest import app_page, wait_for_jobs
from ui.jobs_panel import get_runner

REPO = Path(__file__).resolve().parent.parent
TRAIN = TrainConfig(max_epochs=3, batch_size=32, lr=5e-3, patience=2, flip=True, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> LabDataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHLAB_HOME", str(tmp_path_factory.mktemp("home")))
        return build_dataset(DatasetConfig(imbalance=ImbalanceConfig(kind="subsample", fraction=0.3)))


def as_synthetic(images: ImageSet) -> ImageSet:
    """The training images inverted and marked synthetic: a stand-in set for a pretrain mix."""
    n = len(images)
    prov = dataclasses.replace(images.provenance, synthetic=np.ones(n, bool), generator=np.full(n, "stub", object))
    return dataclasses.replace(images, images=255 - images.images, provenance=prov)


class Killed(KeyboardInterrupt):
    """Stands in for the process dying at a chosen step (a KeyboardInterrupt keeps the checkpoint)."""


def kill_at(step: int) -> object:
    def on_event(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == step:
            raise Killed

    return on_event


def weights(run_id: str) -> dict[str, torch.Tensor]:
    return load_file(str(runs.runs_dir() / run_id / "model.safetensors"))


def assert_same_run(a: str, b: str) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    ra, rb = runs.load_record(a), runs.load_record(b)
    assert (ra.epochs, ra.best_epoch, ra.headline) == (rb.epochs, rb.best_epoch, rb.headline)
    timing = ("images_per_s",)
    rows_a = [{k: v for k, v in row.items() if k not in timing} for row in runs.load_history(a)]
    rows_b = [{k: v for k, v in row.items() if k not in timing} for row in runs.load_history(b)]
    assert rows_a == rows_b


@pytest.mark.parametrize(
    ("mix", "kill_step"),
    [
        (MixConfig(), 30),  # in epoch 3 of a plain run (12 steps an epoch)
        (MixConfig("pretrain", synthetic_set="s", pretrain_epochs=2), 18),  # in the second epoch of the first phase
        (MixConfig("pretrain", synthetic_set="s", pretrain_epochs=2), 42),  # in the fine-tuning's second epoch
    ],
)
def test_a_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one(
    digits: LabDataset, mix: MixConfig, kill_step: int
) -> None:
    cfg = runs.RunConfig(digits.config, mix=mix, train=TRAIN, seed=3)
    synthetic = as_synthetic(digits.train) if mix.synthetic_set else None
    runs.execute_run("whole", cfg, digits, synthetic=synthetic)
    events: list[TrainEvent] = []

    def count(event: TrainEvent) -> None:
        events.append(event)
        kill_at(kill_step)(event)  # type: ignore[operator]

    with pytest.raises(Killed):
        runs.execute_run("cut", cfg, digits, synthetic=synthetic, on_event=count)
    cut = runs.load_record("cut")
    assert cut.status == "interrupted" and cut.error == runs.PROCESS_STOPPED
    assert checkpoints.has_checkpoint(runs.checkpoint_dir("cut"))
    done_epochs = sum(e.kind == "epoch" for e in events)
    assert runs.checkpoint_epoch("cut") == done_epochs >= 1
    resumed_steps: list[int] = []
    runs.resume_run(
        "cut",
        digits,
        synthetic=synthetic,
        on_event=lambda e: resumed_steps.append(e.step) if e.kind == "step" else None,
    )
    assert runs.load_record("cut").status == "done"
    assert min(resumed_steps) > kill_step - 12  # it went on from the last epoch, not from the start
    assert not runs.checkpoint_dir("cut").exists()  # the checkpoint is gone once the run has finished
    assert_same_run("whole", "cut")


def test_resume_refuses_a_finished_run_and_another_dataset(digits: LabDataset) -> None:
    cfg = runs.RunConfig(digits.config, train=dataclasses.replace(TRAIN, max_epochs=1), seed=0)
    runs.execute_run("fine", cfg, digits)
    with pytest.raises(ValueError, match="run='fine' is done: only an interrupted run can be resumed"):
        runs.resume_run("fine", digits)
    record = runs.load_record("fine")
    runs.save_record(dataclasses.replace(record, status="interrupted", dataset_key="other#key"))
    with pytest.raises(ValueError, match="load the dataset it trained on"):
        runs.resume_run("fine", digits)


def test_a_fresh_run_discards_a_checkpoint_left_in_its_folder(digits: LabDataset) -> None:
    cfg = runs.RunConfig(digits.config, train=TRAIN, seed=1)
    with pytest.raises(Killed):
        runs.execute_run("again", cfg, digits, on_event=kill_at(18))  # type: ignore[arg-type]
    assert runs.checkpoint_epoch("again") == 1
    runs.execute_run("again", cfg, digits)  # Re-run: from scratch
    runs.execute_run("other", cfg, digits)
    assert_same_run("again", "other")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_processes_on_this_host_and_another() -> None:
    heartbeat.start()
    here = heartbeat.host()
    assert not heartbeat.is_stale(here, os.getpid())
    assert heartbeat.is_stale(here, dead_pid())
    assert heartbeat.is_stale("elsewhere", 1234)  # no heartbeat from another machine: nobody vouches for it
    folder = heartbeat._folder
    assert folder is not None
    beat = {"host": "elsewhere", "pid": 1234, "role": "cli", "started": 0.0, "time": time.time()}
    (folder / "elsewhere-1234.json").write_text(json.dumps(beat))
    assert not heartbeat.is_stale("elsewhere", 1234)
    (folder / "elsewhere-1234.json").write_text(json.dumps({**beat, "time": time.time() - 61}))
    assert heartbeat.is_stale("elsewhere", 1234)
    assert not heartbeat.is_stale("elsewhere", 1234, max_age=120)


def test_the_sweep_marks_runs_of_stopped_processes_with_a_reason() -> None:
    heartbeat.start()
    cfg = runs.RunConfig(DatasetConfig(), train=TRAIN)
    app_pid, cli_pid = dead_pid(), dead_pid()
    folder = heartbeat._folder
    assert folder is not None
    app_beat = {"host": heartbeat.host(), "pid": app_pid, "role": "app", "started": 0.0, "time": time.time()}
    (folder / f"{heartbeat.host()}-{app_pid}.json").write_text(json.dumps(app_beat))
    runs.save_record(runs.RunRecord("app", cfg, "running", pid=app_pid, host=heartbeat.host()))
    runs.save_record(runs.RunRecord("cli", cfg, "queued", pid=cli_pid))
    runs.save_record(runs.RunRecord("live", cfg, "running", pid=os.getpid(), host=heartbeat.host()))
    runs.save_record(runs.RunRecord("done", cfg, "done", pid=cli_pid))
    assert sorted(runs.sweep()) == ["app", "cli"]
    assert runs.load_record("app").error == "the app stopped during this run"
    assert runs.load_record("cli").error == "the process running it stopped"
    assert [runs.load_record(r).status for r in ("live", "done")] == ["running", "done"]
    assert not (folder / f"{heartbeat.host()}-{app_pid}.json").exists()  # the dead process's heartbeat is tidied
    assert runs.sweep() == []


SCRIPT = """
import sys
from engine import runs
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import build_dataset
from engine.training import TrainConfig
data = build_dataset(DatasetConfig(imbalance=ImbalanceConfig(kind="subsample", fraction=0.3)))
train = TrainConfig(max_epochs=int(sys.argv[2]), batch_size=32, lr=5e-3, patience=0, device="cpu", precision="fp32")
runs.execute_run(sys.argv[1], runs.RunConfig(data.config, train=train, seed=5), data)
"""


# The one real kill (SIGKILL) in the default run: a new process builds the dataset, about 10-20 s on 2 cores.
def test_a_run_killed_mid_training_is_swept_and_resumes_to_the_same_weights(
    digits: LabDataset, workspace: Path
) -> None:
    env = {**os.environ, "SYNTHLAB_HOME": str(workspace), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "killed", "40"], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while runs.checkpoint_epoch("killed") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert runs.load_record("killed").status == "running"
    assert runs.sweep() == ["killed"]
    assert runs.load_record("killed").error == "the process running it stopped"
    cfg = runs.load_record("killed").config
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=40))
    runs.resume_run("killed", digits)
    runs.execute_run("whole", short, digits)
    assert_same_run("killed", "whole")


def test_after_a_restart_the_pages_show_interrupted_runs_with_resume_and_re_run() -> None:
    one_epoch = TrainConfig(max_epochs=1, device="cpu", precision="fp32")
    cfg = experiments.ExperimentConfig(mixes=(MixConfig("oversample"),), train=one_epoch, seeds=(0,))
    planned = experiments.plan_experiment(cfg)
    for _, _, run_id in planned.run_ids:
        record = runs.load_record(run_id)
        runs.save_record(dataclasses.replace(record, status="interrupted", error=runs.APP_STOPPED))
    get_runner.clear()  # as after a server restart: no jobs in memory
    at = app_page("train")
    assert not at.exception
    assert not any("No training jobs" in c.value for c in at.caption)
    assert any(f"Experiment {planned.id}" in m.value for m in at.markdown)
    assert "2 of 2 runs were interrupted" in at.warning[0].value
    assert any(runs.APP_STOPPED in m.value for m in at.markdown)
    compare = app_page("compare")
    assert "2 of 2 runs were interrupted: resume them on the Train page" in compare.warning[0].value
    assert "were interrupted" in compare.info[-1].value
    assert list(compare.dataframe[0].value["finished runs"]) == ["0/1 (1 interrupted)", "0/1 (1 interrupted)"]
    first, second = (run_id for _, _, run_id in planned.run_ids)
    at.button(key=f"resume-run-{first}").click().run()
    at.button(key=f"rerun-run-{second}").click().run()
    assert not at.exception and not at.error
    wait_for_jobs(str(at.session_state["owner"]))
    assert [runs.load_record(r).status for r in (first, second)] == ["done", "done"]
    titles = [s.title for s in get_runner().list() if s.tag in (first, second)]
    assert titles == ["real · seed 0 · resumed", "oversample fill · seed 0 · again from the start"]
    at.run()
    assert "All runs of this experiment have finished" in at.success[0].value


def test_the_generate_page_lists_an_interrupted_training_and_resumes_it() -> None:
    data = build_dataset(DatasetConfig())  # the page's dataset
    tiny = gan.GanConfig(steps=12, width=8, batch_size=16, sample_every=6)
    gen_id = generators.generator_id(tiny, data)
    status = {
        "id": gen_id,
        "kind": tiny.kind,
        "config": dataclasses.asdict(tiny),
        "dataset": data.key,
        "owner": "local",
        "status": "running",
        "pid": dead_pid(),
        "host": heartbeat.host(),
        "started": time.time(),
        "step": 0,
        "reason": "",
    }
    store.write_json(generators.generators_dir() / gen_id / generators.STATUS, status)
    get_runner.clear()  # a restart: creating the runner sweeps
    at = app_page("generate")
    assert not at.exception
    assert any("Interrupted trainings" in m.value for m in at.markdown)
    assert any(gen_id in m.value and generators.PROCESS_STOPPED in m.value for m in at.markdown)
    at.button(key=f"resume-cut-{gen_id}").click().run()
    assert not at.exception and not at.error
    wait_for_jobs(str(at.session_state["owner"]))
    assert generators.list_interrupted(data) == []
    assert [g["id"] for g in generators.list_generators(data)] == [gen_id]
