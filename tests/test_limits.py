"""Per-user limits: stored, checked, read back cheaply, set from the CLI, enforced on experiments."""

from __future__ import annotations

import json
import os
import threading

import pytest

from engine import cli, experiments, limits, runs, tasks
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.experiments import ExperimentConfig
from engine.jobs import JobRunner, LimitReached
from engine.mixes import MixConfig
from engine.synth import sets
from engine.training import TrainConfig


def test_defaults_apply_until_an_admin_sets_a_value_for_everyone_or_one_user() -> None:
    assert limits.limits_for("alice") == limits.Limits(max_jobs=24, upload_mb=2000, disk_gb=20.0)
    assert not limits.path().exists()
    assert limits.set_limit("max_jobs", "48", user="alice").max_jobs == 48  # text from the CLI is read as a number
    assert limits.set_limit("disk_gb", 0.5) == limits.Limits(disk_gb=0.5)
    assert limits.limits_for("alice") == limits.Limits(max_jobs=48, disk_gb=0.5)
    assert limits.limits_for("bob") == limits.Limits(disk_gb=0.5)
    assert limits.show() == {
        "default": {"max_jobs": 24, "upload_mb": 2000, "disk_gb": 0.5},
        "users": {"alice": {"max_jobs": 48}},
        "file": str(limits.path()),
    }
    assert limits.set_limit("max_jobs", "default", user="alice").max_jobs == 24  # back to the server default
    assert json.loads(limits.path().read_text()) == {"default": {"disk_gb": 0.5}, "users": {}}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("speed", 3, r"^field='speed' is not a limit: expected one of max_jobs, upload_mb, disk_gb$"),
        ("max_jobs", 0, r"^max_jobs=0 is not accepted: expected a whole number, 1 or more$"),
        ("max_jobs", "2.5", r"^max_jobs='2.5' is not accepted: expected a whole number, 1 or more$"),
        ("upload_mb", True, r"^upload_mb=True is not accepted: expected a whole number, 1 or more$"),
        ("disk_gb", "lots", r"^disk_gb='lots' is not accepted: expected a number of GB above 0, e.g. 20 or 0.5$"),
        ("disk_gb", float("nan"), r"^disk_gb=nan is not accepted"),
        ("disk_gb", -1, r"^disk_gb=-1 is not accepted"),
    ],
)
def test_bad_fields_and_values_are_refused_and_nothing_is_written(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        limits.set_limit(field, value)
    assert not limits.path().exists()


def test_a_user_name_is_required_and_a_broken_file_is_named() -> None:
    with pytest.raises(limits.LimitError, match=r"^user=' ' is not accepted: expected a user name$"):
        limits.set_limit("max_jobs", 3, user=" ")
    limits.path().write_text('{"default": {"max_jobs": "many"}}')
    with pytest.raises(limits.LimitError, match=r"limits.json is not accepted: max_jobs='many' is not accepted"):
        limits.limits_for("alice")
    limits.path().write_text("{not json")
    with pytest.raises(limits.LimitError, match=r"limits.json cannot be read .*python -m engine limits set"):
        limits.limits_for("alice")


def test_the_file_is_read_again_only_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    limits.set_limit("max_jobs", 5)
    reads = []
    real = limits.json.loads
    monkeypatch.setattr(limits.json, "loads", lambda text: reads.append(1) or real(text))
    assert [limits.limits_for("a").max_jobs for _ in range(50)] == [5] * 50
    assert len(reads) <= 1  # parsed at most once more, not once per call
    data = json.loads(limits.path().read_text()) | {"default": {"max_jobs": 7}}
    limits.path().write_text(json.dumps(data))  # an edit by hand: new size and modification time
    os.utime(limits.path(), ns=(1, 1))
    assert limits.limits_for("a").max_jobs == 7


def test_the_cli_shows_and_sets_limits_and_refuses_bad_input_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["limits", "set", "max_jobs", "40", "--user", "alice"]) == 0
    assert capsys.readouterr().out == "max_jobs is now 40 for alice\n"
    assert cli.main(["limits", "show"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["user", "max_jobs", "upload_mb", "disk_gb"]
    assert out[2].split() == ["(default)", "24", "2000", "20.0"] and out[3].split() == ["alice", "40"]
    assert cli.main(["limits", "set", "disk_gb", "none"]) == 2
    err = capsys.readouterr().err
    assert err == "error: disk_gb='none' is not accepted: expected a number of GB above 0, e.g. 20 or 0.5\n"


def test_an_experiment_larger_than_a_users_room_is_refused_before_anything_is_saved() -> None:
    limits.set_limit("max_jobs", 3, user="me")
    digits = build_dataset(DatasetConfig())
    cfg = ExperimentConfig(
        dataset=digits.config,
        mixes=(MixConfig("real"), MixConfig("oversample")),
        train=TrainConfig(max_epochs=1, device="cpu", precision="fp32"),
        seeds=(0, 1),
    )
    runner, gate = JobRunner(), threading.Event()
    runner.submit("one of mine", lambda ctx: gate.wait(10), owner="me")
    with pytest.raises(LimitReached) as refused:
        tasks.submit_experiment(runner, cfg, digits, owner="me", synthetic=sets.load_set)
    assert str(refused.value) == (
        "this experiment needs 4 jobs and you have room for 2 more (at most 3 jobs queued or running per user "
        "on this server): wait for some to finish, cancel some, or choose fewer mixes or seeds "
        "(an admin can raise the limit)"
    )
    assert experiments.list_experiments() == [] and runs.list_records() == []
    assert [s.title for s in runner.list(owner="me")] == ["one of mine"]
    gate.set()


def test_a_runner_for_one_persons_command_holds_no_one_to_the_servers_limit() -> None:
    limits.set_limit("max_jobs", 1, user="me")
    capped, uncapped, gate = JobRunner(), JobRunner(per_user_cap=False), threading.Event()
    capped.submit("first", lambda ctx: gate.wait(10), owner="me")
    with pytest.raises(LimitReached):
        capped.submit("second", lambda ctx: None, owner="me")
    ids = [uncapped.submit(f"job {i}", lambda ctx: gate.wait(10), owner="me") for i in range(3)]
    uncapped.check_room("me", 50, what="this experiment")  # no refusal
    assert uncapped.room("me") > 50 and len(ids) == 3
    gate.set()
    assert all(uncapped.wait(i, 30).status == "done" for i in ids)
