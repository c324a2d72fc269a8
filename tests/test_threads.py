"""The thread budget: cores shared out among running heavy jobs, per thread, with the setting that overrides it."""

from __future__ import annotations

import threading

import pytest
import torch

from engine import threads
from engine.jobs import JobContext, JobRunner


def test_the_setting_overrides_the_cores_and_a_bad_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.total_threads() == max(1, threads.cores() - 1)  # a core is left to the server and browser
    monkeypatch.setenv(threads.ENV, "6")
    assert threads.total_threads() == 6 and threads.per_job(2) == 3 and threads.per_job(4) == 1
    assert threads.per_job(9) == 1  # never below one thread
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(threads.ThreadSettingError, match=r"SYNTHLAB_THREADS='two' is not accepted: expected a whole"):
        threads.total_threads()


def test_each_job_thread_gets_its_share_and_takes_the_new_one_when_a_job_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.ENV, "4")
    both_in, first_out = threading.Barrier(2), threading.Event()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def job(name: str) -> None:
        with threads.heavy_job() as share:
            seen[name].append(share)
            both_in.wait(timeout=10)
            seen[name].append(threads.apply())  # both running: 4 // 2
            both_in.wait(timeout=10)
            if name == "a":
                return
            first_out.wait(timeout=10)
            seen[name].append(threads.apply())  # alone again: all 4, in this thread only

    a = threading.Thread(target=job, args=("a",))
    b = threading.Thread(target=job, args=("b",))
    b.start()
    a.start()
    a.join()
    first_out.set()
    b.join()
    assert seen["a"][1] == 2 and seen["b"][1:] == [2, 4]
    assert threads.running() == 0


def test_a_thread_keeps_its_own_count_while_another_sets_a_different_one() -> None:
    """What the design rests on: on this OpenMP build a thread that read its count before setting it keeps it."""
    ready, done = threading.Barrier(2), {}

    def worker(name: str, count: int) -> None:
        torch.get_num_threads()  # as threads.apply does first
        torch.set_num_threads(count)
        ready.wait(timeout=10)
        (torch.rand(256, 256).exp() + 1).sum()  # an ATen op that runs in parallel
        ready.wait(timeout=10)
        done[name] = torch.get_num_threads()

    pool = [threading.Thread(target=worker, args=(n, c)) for n, c in (("one", 1), ("three", 3))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert done == {"one": 1, "three": 3}


def test_heavy_jobs_of_the_runner_run_with_their_share_and_light_ones_are_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(threads.ENV, "3")
    runner = JobRunner()
    gate = threading.Event()

    def light(ctx: JobContext) -> int:
        gate.wait(10)
        return threads.running()

    def heavy(ctx: JobContext) -> tuple[int, int]:
        return threads.running(), torch.get_num_threads()

    waiting = runner.submit("light", light, owner="o", heavy=False)
    first = runner.submit("heavy", heavy, owner="o")
    assert runner.wait(first, 30).result == (1, 3)
    gate.set()
    assert runner.wait(waiting, 30).result == 0
    assert threads.running() == 0
