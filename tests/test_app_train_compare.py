"""AppTest: the Train page queues real jobs and finds them again; Compare shows verdicts and exports."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from engine import experiments, runs, tasks
from engine.config import DatasetConfig, ImbalanceConfig
from engine.jobs import FINISHED
from engine.mixes import MixConfig
from engine.training import TrainConfig
from tests.conftest import app_page, wait_for_jobs
from ui import compare_views as views
from ui.jobs_panel import CURVES_EVERY_S, get_runner, redraw_due


def start_tiny_experiment(at: AppTest) -> None:
    at.number_input(key="train_epochs").set_value(2)
    at.number_input(key="train_seeds").set_value(1)
    at.checkbox(key="mix_reweight").uncheck()
    at.button(key="FormSubmitter:train_form-Start").click().run()


def test_train_page_runs_an_experiment_and_finds_it_again_after_a_reload() -> None:
    at = app_page("train")
    assert not at.exception
    owner = str(at.session_state["owner"])
    assert owner == "local"  # without accounts every browser on the machine is the one local user
    start_tiny_experiment(at)
    assert not at.exception and not at.error
    wait_for_jobs(owner)
    latest = get_runner().list(owner=owner)[-1].group
    snaps = [s for s in get_runner().list(owner=owner) if s.group == latest]
    assert [s.title for s in snaps] == ["real · seed 0", "oversample fill · seed 0"]
    assert {s.status for s in snaps} == {"done"}
    assert {runs.load_record(s.tag).status for s in snaps} == {"done"}
    reloaded = app_page("train")  # a new session: a reload or a second tab
    group = tasks.JobGroup.parse(snaps[0].group)
    assert group is not None and group.kind is tasks.JobKind.EXPERIMENT
    assert any(f"Experiment {group.id}" in m.value for m in reloaded.markdown)
    assert "All runs of this experiment have finished" in reloaded.success[0].value
    charts = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in reloaded.get("plotly_chart")]
    assert any(t.startswith("Training curves") for t in charts)


def test_live_curves_are_drawn_again_when_news_came_at_most_every_few_seconds_and_at_once_at_the_end() -> None:
    drawn, news = (("run-1",), (2,)), (("run-1",), (3,))
    assert not redraw_due(drawn, 100.0, drawn, 200.0, settled=False)  # nothing new: never drawn again
    assert not redraw_due(drawn, 100.0, news, 100.0 + CURVES_EVERY_S / 2, settled=False)  # new, but too soon
    assert redraw_due(drawn, 100.0, news, 100.0 + CURVES_EVERY_S, settled=False)
    assert redraw_due(drawn, 100.0, news, 100.1, settled=True)  # the final curves are never held back
    assert not redraw_due(news, 100.0, news, 100.1, settled=True)
    other = (("run-7", "run-8"), (0, 0))  # another experiment's runs: never the last one's curves under its name
    assert redraw_due(drawn, 100.0, other, 100.1, settled=False)


def test_a_queued_run_can_be_cancelled_from_the_page() -> None:
    at = app_page("train")
    owner = str(at.session_state["owner"])
    at.number_input(key="train_epochs").set_value(30)
    at.number_input(key="train_seeds").set_value(2)
    at.button(key="FormSubmitter:train_form-Start").click().run()
    queued = [s for s in get_runner().list(owner=owner) if s.status == "queued"]
    assert queued, "later runs wait in the queue"
    at.button(key=f"cancel-{queued[-1].id}").click().run()
    assert get_runner().snapshot(queued[-1].id).status == "cancelled"
    assert runs.load_record(queued[-1].tag).status == "cancelled"
    for snap in get_runner().list(owner=owner):
        if snap.status not in FINISHED:
            get_runner().cancel(snap.id)
    wait_for_jobs(owner)


def test_compare_page_shows_intervals_verdicts_figures_and_exports() -> None:
    cfg = experiments.ExperimentConfig(
        dataset=DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1)),
        mixes=(MixConfig("oversample"),),
        train=TrainConfig(max_epochs=2, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0, 1),
    )
    record = experiments.run_experiment(cfg)
    at = app_page("compare")
    assert not at.exception
    table = next(d.value for d in at.dataframe if "verdict: accuracy" in d.value.columns)
    assert list(table["mix"]) == ["real", "oversample fill"]
    comparison = experiments.summarize(record.id).mixes[1].comparisons["accuracy"]
    assert table["verdict: accuracy"][1] == comparison.verdict
    assert table["Δ accuracy (points, 95% interval)"][1].startswith(f"{100 * comparison.diff:+.1f} [")
    assert any("two-level paired bootstrap over seeds and test images" in c.value for c in at.caption)
    assert "minority classes (★): 0, 1" in at.caption[0].value
    assert "still improving when they reached the epoch limit" in at.warning[0].value  # 2 epochs: cut short
    shown = {}  # the charts of each tab: only the open tab is drawn
    for tab, expected in zip(
        views.TABS,
        (("Per-class recall", "Recall gain"), ("real: confusion",), ("ROC curve", "PR curve"), ("Dose",)),
        strict=True,
    ):
        at.session_state["compare_tab"] = tab
        at.run()
        assert not at.exception
        shown[tab] = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
        assert len(shown[tab]) == len(expected) + (tab == "Confusion matrices"), shown  # the mix's matrix too
        assert all(any(t.startswith(e) for t in shown[tab]) for e in expected), (tab, shown[tab])
    assert [b.label for b in at.get("download_button")][2] == "Download the classifier"  # after CSV and JSON
    assert at.selectbox(key="compare_experiment").value == record.id


def test_compare_page_without_experiments_says_where_to_start() -> None:
    at = app_page("compare")
    assert not at.exception and "No experiments yet" in at.info[0].value


def test_compare_page_with_runs_still_queued_does_not_fail() -> None:
    cfg = experiments.ExperimentConfig(mixes=(MixConfig("oversample"),), seeds=(0,))
    experiments.plan_experiment(cfg)
    at = app_page("compare")
    assert not at.exception
    assert "No run of this experiment has finished yet" in at.info[0].value
    assert list(at.dataframe[0].value["Δ accuracy (points, 95% interval)"]) == ["baseline", "—"]
    assert list(at.dataframe[0].value["verdict: accuracy"]) == ["baseline", "waiting for runs"]


def test_starting_the_app_marks_runs_of_a_stopped_process_interrupted() -> None:
    cfg = runs.RunConfig(DatasetConfig())
    runs.save_record(runs.RunRecord("orphan", cfg, "running", pid=2**22 + 4321))
    get_runner.clear()  # as after a server restart
    app_page("compare")
    assert runs.load_record("orphan").status == "interrupted"
