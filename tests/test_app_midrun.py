"""AppTest at every moment of a running experiment, widget warnings in the log, and the offline log line.

An experiment is queued on the app's job runner exactly as the Train page queues it; each run is held
after its first epoch until the test lets it go, so the pages are opened with 1, half and all of the
runs finished while the next one is mid-training (its record says running, its curves are half drawn).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from streamlit.elements.lib import policies
from streamlit.testing.v1 import AppTest

from engine import experiments, runs, tasks
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import FINISHED
from engine.mixes import MixConfig
from engine.synth import sets, stable_diffusion
from engine.training import TrainConfig, TrainEvent
from tests.conftest import store_images_as_set, wait_for_jobs
from ui.jobs_panel import get_runner
from ui.state import DATASET_KEY

ROOT = Path(__file__).resolve().parent.parent
OWNER = "0123456789ab"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == "MainThread" and "missing ScriptRunContext" in record.getMessage():
            return  # this test calling the app's cached runner directly, outside a page run: not the app's
        self.records.append(record)


@pytest.fixture
def streamlit_log() -> Iterator[Collect]:
    """Warnings of Streamlit's loggers (which do not propagate to the root logger) during the test."""
    handler = Collect()
    policies._shown_default_value_warning = False  # Streamlit says it once per process: make it say it here
    loggers = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict) if n.startswith("streamlit")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def open_page(name: str, dataset: LabDataset) -> AppTest:
    """The app with ``dataset`` as the session's dataset and this test's owner token, on ``app_pages/<name>.py``."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[DATASET_KEY] = dataset
    at.query_params["lab"] = OWNER
    at.run()
    return at.switch_page(f"app_pages/{name}.py").run()


def untitled_axes(at: AppTest) -> list[str]:
    """Titles of the charts (images and attribution maps aside) that lack an x or a y axis title."""
    missing = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if any(trace["type"] == "image" for trace in spec["data"]):
            continue
        layout = spec["layout"]
        titles = [layout.get(axis, {}).get("title", {}).get("text") for axis in ("xaxis", "yaxis")]
        if not all(titles):
            missing.append(layout.get("title", {}).get("text", "untitled chart"))
    return missing


def wait_until(condition: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the runs did not reach the expected state"
        time.sleep(0.05)


def make_dataset_and_set() -> tuple[LabDataset, str]:
    """Digits with 0 and 1 cut to 20%, and a synthetic set of brightened copies of their training images."""
    dataset = build_dataset(
        DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.2))
    )
    keep = dataset.train.labels < 2
    images = (dataset.train.images[keep].int() * 5 // 4).clamp(0, 255).to(torch.uint8).numpy()
    return dataset, store_images_as_set(dataset, images, dataset.train.labels[keep].numpy(), name="copies")


def test_no_page_fails_with_one_half_or_all_runs_finished(
    monkeypatch: pytest.MonkeyPatch, streamlit_log: Collect
) -> None:
    dataset, set_id = make_dataset_and_set()
    permits, held = threading.Semaphore(0), []
    execute = runs.execute_run

    def held_after_first_epoch(run_id: str, *args: Any, on_event: Callable[[TrainEvent], None], **kwargs: Any) -> Any:
        def report(event: TrainEvent) -> None:
            on_event(event)
            if event.kind == "epoch" and event.epoch == 1:
                held.append(run_id)
                assert permits.acquire(timeout=300), "the test never let the run go on"

        return execute(run_id, *args, on_event=report, **kwargs)

    monkeypatch.setattr(runs, "execute_run", held_after_first_epoch)
    cfg = experiments.ExperimentConfig(
        dataset=dataset.config,
        mixes=(MixConfig("add", synthetic_set=set_id),),
        train=TrainConfig(max_epochs=2, patience=0, device="cpu", precision="fp32"),
        seeds=(0, 1),
    )
    record = tasks.submit_experiment(get_runner(), cfg, dataset, owner=OWNER, synthetic=sets.load_set)
    ids = {(label, seed): run_id for label, seed, run_id in record.run_ids}
    statuses = lambda: [runs.load_record(r).status for r in ids.values()]  # noqa: E731
    released = 0
    try:
        for finished in (1, 2, 4):  # one, half and all of the four runs
            for _ in range(finished - released):  # each finished run went past its first epoch on one permit
                permits.release()
            released = finished
            wait_until(lambda f=finished: statuses().count("done") == f and len(held) == min(f + 1, 4))
            if finished < 4:
                assert statuses()[finished] == "running"  # the next run is mid-training, one epoch on disk
                assert len(runs.load_history(list(ids.values())[finished])) == 1

            train = open_page("train", dataset)
            assert not train.exception and not train.error
            assert any(f"{finished}/4 runs finished" in m.value for m in train.markdown)
            assert not untitled_axes(train)

            compare = open_page("compare", dataset)
            assert not compare.exception and not compare.error
            table = next(d.value for d in compare.dataframe if "verdict: accuracy" in d.value.columns)
            assert list(table["finished runs"]) == [f"{min(finished, 2)}/2", f"{max(0, finished - 2)}/2"]
            assert not untitled_axes(compare)

            explain = open_page("explain", dataset)
            assert not explain.exception and not explain.error
            if finished == 1:
                assert "at least two runs" in explain.info[0].value
            else:  # real seed 0 against the synthetic mix of seed 0 once it has finished, else the other real run
                partner = ids[("add fill", 0)] if finished == 4 else ids[("real", 1)]
                assert explain.selectbox(key="ex_a").value == ids[("real", 0)]
                assert explain.selectbox(key="ex_b").value == partner
        assert any("Did the synthetic images beat" in b.value for b in [*compare.success, *compare.warning])
        assert not [r.getMessage() for r in streamlit_log.records]
    finally:
        for _ in range(4):
            permits.release()
        wait_for_jobs(OWNER, timeout=300)


def test_no_widget_warning_in_the_log_on_any_page(streamlit_log: Collect) -> None:
    """Every page, then back to the pages whose widgets keep their values across visits."""
    dataset, _ = make_dataset_and_set()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[DATASET_KEY] = dataset
    at.run()
    titles = {"generate": "Generate", "preprocess": "Preprocess preview", "train": "Train", "explain": "Explain"}
    for name in ("generate", "preprocess", "train", "explain", "preprocess", "generate", "train"):
        at.switch_page(f"app_pages/{name}.py").run()
        assert not at.exception and at.title[0].value == titles[name]
        if name == "preprocess":  # with a synthetic set: every widget and the four gap histograms drawn
            assert len(at.get("plotly_chart")) == 4
    warnings = [r.getMessage() for r in streamlit_log.records]
    assert not warnings, warnings


def test_a_model_missing_offline_is_one_log_line_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    dataset = build_dataset(DatasetConfig())
    cfg = stable_diffusion.SDConfig("nobody/not-in-this-cache")
    with caplog.at_level(logging.INFO):
        job = tasks.submit_sd_preview(get_runner(), cfg, dataset, owner="fedcba987654")
        snap = get_runner().wait(job, timeout=120)
    assert snap.status == "failed" and snap.status in FINISHED
    assert snap.error.startswith("nobody/not-in-this-cache is not available on this machine")
    lines = [r for r in caplog.records if "not-in-this-cache" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].exc_info is None and "Traceback" not in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
