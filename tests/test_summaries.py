"""Experiment results kept per state of their runs: computed once, shared, recomputed when a run changes,
and computed on the server as soon as a run of the experiment ends."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest

from engine import experiments, metrics, runs, store, summaries, tasks, verdicts
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.jobs import JobRunner
from engine.synth import sets
from tests.test_experiments import fabricate
from tests.test_tasks import one_epoch_experiment


def counting(monkeypatch: pytest.MonkeyPatch, *, pause: float = 0.0, fail_first: bool = False) -> list[str]:
    """Count the summaries computed (and optionally slow them down, or fail the first one)."""
    calls: list[str] = []
    real = experiments.summarize

    def summarize(exp_id: str, **kwargs: Any) -> experiments.ExperimentSummary:
        calls.append(exp_id)
        time.sleep(pause)
        if fail_first and len(calls) == 1:
            raise OSError("the disk hiccupped")
        return real(exp_id, **kwargs)

    monkeypatch.setattr(experiments, "summarize", summarize)
    return calls


def test_results_are_computed_once_per_state_for_every_caller_and_again_when_a_run_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exp_id = fabricate(0.05, 0.003)
    calls = counting(monkeypatch, pause=0.3)
    found: list[summaries.Results] = []
    callers = [threading.Thread(target=lambda: found.append(summaries.results(exp_id))) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert len(found) == 4 and all(r is found[0] for r in found) and calls == [exp_id]
    first = found[0]
    assert first.signature == summaries.signature(exp_id) and summaries.is_ready(exp_id, first.signature)
    expected = experiments.summarize(exp_id)
    assert first.summary.mixes[1].comparisons["accuracy"] == expected.mixes[1].comparisons["accuracy"]
    assert first.headline == verdicts.headline(expected) and first.warnings == tuple(verdicts.health_warnings(expected))
    assert first.metrics == {}  # fabricated runs wrote no metrics file
    # A run that changes (here: one marked failed) is a new state: computed again, the old one let go.
    record = experiments.load_experiment(exp_id)
    run_id = record.run_ids[-1][2]
    runs.save_record(dataclasses.replace(runs.load_record(run_id), status="failed"))
    calls.clear()
    again = summaries.results(exp_id)
    assert calls == [exp_id] and again is not first and not summaries.is_ready(exp_id, first.signature)
    assert again.summary.mixes[1].runs_done == 2 and first.summary.mixes[1].runs_done == 3
    assert summaries.results(exp_id) is again and calls == [exp_id]


def test_a_failed_computation_is_not_kept_and_the_next_caller_tries_again(monkeypatch: pytest.MonkeyPatch) -> None:
    exp_id = fabricate(0.0, 0.003)
    calls = counting(monkeypatch, fail_first=True)
    with pytest.raises(OSError, match="the disk hiccupped"):
        summaries.results(exp_id)
    assert not summaries.is_ready(exp_id, summaries.signature(exp_id))
    assert summaries.results(exp_id).summary.experiment.id == exp_id and len(calls) == 2


def test_an_experiments_results_are_ready_soon_after_its_runs_end_on_the_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digits = build_dataset(DatasetConfig())
    cfg = one_epoch_experiment(digits)
    calls = counting(monkeypatch)
    runner = JobRunner()
    record = tasks.submit_experiment(runner, cfg, digits, owner="me", synthetic=sets.load_set)
    for job in tasks.list_jobs(runner, tasks.JobKind.EXPERIMENT, owner="me"):
        assert runner.wait(job.id, timeout=120).status == "done"
    deadline = time.monotonic() + 30
    while not summaries.is_ready(record.id, summaries.signature(record.id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert summaries.is_ready(record.id, summaries.signature(record.id)), "nothing computed the results"
    computed = len(calls)
    results = summaries.results(record.id)  # what the Compare page asks: ready, not computed again
    assert len(calls) == computed and set(results.metrics) == {("real", 0), ("oversample fill", 0)}
    assert results.metrics[("real", 0)] == runs.load_metrics(record.run_ids[0][2])


def with_metrics(exp_id: str) -> str:
    """Write each fabricated run's metrics file from its predictions, as a finished run has."""
    for _, _, run_id in experiments.load_experiment(exp_id).run_ids:
        y_true, probs = runs.load_predictions(run_id)
        found = metrics.compute_metrics(y_true, probs, tuple(map(str, range(10))))
        store.write_json(runs.runs_dir() / run_id / "metrics.json", found.to_dict())
    return exp_id


def test_the_least_recently_asked_for_results_go_first_past_the_curve_values_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = with_metrics(fabricate(0.0, 0.003, n=400)), with_metrics(fabricate(0.02, 0.003, n=400))
    kept = summaries.results(first)
    values = sum(len(c.x) + len(c.y) for m in kept.metrics.values() for c in (*m.roc, *m.pr))
    assert len(kept.metrics) == 6 and values > 100
    monkeypatch.setattr(summaries, "MAX_CURVE_VALUES", values + 10)  # room for one experiment, not two
    summaries.results(second)
    assert summaries.is_ready(second, summaries.signature(second))
    assert not summaries.is_ready(first, summaries.signature(first))
    monkeypatch.setattr(summaries, "MAX_CURVE_VALUES", 10)  # one experiment is kept, however large
    assert summaries.results(first).metrics and summaries.is_ready(first, summaries.signature(first))
    assert not summaries.is_ready(second, summaries.signature(second))


def test_a_caller_with_an_older_state_gets_the_newer_results_kept_and_does_not_replace_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exp_id = fabricate(0.05, 0.003)
    older = summaries.results(exp_id).signature
    run_id = experiments.load_experiment(exp_id).run_ids[-1][2]
    runs.save_record(dataclasses.replace(runs.load_record(run_id), status="failed"))
    newer = summaries.results(exp_id)
    calls = counting(monkeypatch)
    assert summaries.results(exp_id, older) is newer and calls == []  # a page that read the runs a moment ago
    assert summaries.is_ready(exp_id, newer.signature)


def test_a_run_that_ends_while_the_results_are_computed_makes_them_start_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exp_id = fabricate(0.05, 0.003)
    run_id = experiments.load_experiment(exp_id).run_ids[-1][2]
    before = summaries.signature(exp_id)
    calls: list[str] = []
    real = experiments.summarize

    def summarize(exp: str, **kwargs: Any) -> experiments.ExperimentSummary:
        calls.append(exp)
        summary = real(exp, **kwargs)
        if len(calls) == 1:  # the run ends after the summary has read it, before the results are kept
            runs.save_record(dataclasses.replace(runs.load_record(run_id), status="failed"))
        return summary

    monkeypatch.setattr(experiments, "summarize", summarize)
    found = summaries.results(exp_id, before)
    assert len(calls) == 2 and found.signature == summaries.signature(exp_id) != before
    assert found.summary.mixes[1].runs_done == 2  # the summary of the state the results name
    assert summaries.is_ready(exp_id, found.signature) and not summaries.is_ready(exp_id, before)
