"""AppTest: the Train page's Cluster expander lists a Ray runner's nodes and totals; with threads it is not there."""

from __future__ import annotations

from typing import Any

import pytest

from engine.jobs import JobRunner
from engine.ray_backend import ClusterInfo, NodeInfo
from tests.conftest import app_page
from ui import jobs_panel

HEAD = NodeInfo(node_id="a1b2c3d4e5f60718", ip="10.0.0.1", alive=True, cpus=0.0, gpus=0.0, memory_gb=31.96)
GPU_WORKER = NodeInfo(node_id="f0e1d2c3b4a59687", ip="10.0.0.2", alive=True, cpus=8.0, gpus=1.0, memory_gb=62.5)
GONE = NodeInfo(node_id="0123456789abcdef", ip="10.0.0.3", alive=False, cpus=4.0, gpus=0.0, memory_gb=15.0)


class RayRunner:
    """A runner that says it runs on Ray and reports ``info``; everything else is a real threads runner's."""

    backend = "ray"

    def __init__(self, info: ClusterInfo | Exception | None) -> None:
        self._info, self._inner = info, JobRunner()

    def cluster(self) -> ClusterInfo | None:
        if isinstance(self._info, Exception):
            raise self._info
        return self._info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def cluster_expanders(at: Any) -> list[Any]:
    return [e for e in at.expander if e.label == "Cluster"]


def test_with_ray_the_cluster_expander_lists_every_node_and_the_totals(monkeypatch: pytest.MonkeyPatch) -> None:
    info = ClusterInfo(address="10.0.0.1:6379", nodes=(HEAD, GPU_WORKER, GONE))
    monkeypatch.setattr(jobs_panel, "get_runner", lambda: RayRunner(info))
    at = app_page("train")
    assert not at.exception and not at.error
    (expander,) = cluster_expanders(at)
    table = expander.table[0].value
    assert list(table["node"]) == ["10.0.0.1 (a1b2c3d4)", "10.0.0.2 (f0e1d2c3)", "10.0.0.3 (01234567)"]
    assert list(table["alive"]) == ["yes", "yes", "no"]
    assert list(table["CPUs"]) == ["0", "8", "4"] and list(table["GPUs"]) == ["0", "1", "0"]
    assert list(table["memory (GB)"]) == ["32.0", "62.5", "15.0"]
    totals = expander.caption[0].value
    assert totals.startswith("10.0.0.1:6379 · 2 of 3 nodes alive · ")
    assert f"{info.total_cpus:g} CPUs · {info.total_gpus:g} GPUs" in totals


def test_with_ray_an_unanswering_or_unconnected_cluster_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_panel, "get_runner", lambda: RayRunner(ConnectionError("10.0.0.1:6379 refused")))
    at = app_page("train")
    assert not at.exception
    (expander,) = cluster_expanders(at)
    assert expander.warning[0].value == "The Ray cluster did not answer: 10.0.0.1:6379 refused"
    assert not expander.table
    monkeypatch.setattr(jobs_panel, "get_runner", lambda: RayRunner(None))
    at = app_page("train")
    (expander,) = cluster_expanders(at)
    assert "Not connected to a Ray cluster yet" in expander.caption[0].value and not expander.table


def test_with_threads_the_train_page_has_no_cluster_expander() -> None:
    at = app_page("train")
    assert not at.exception
    assert jobs_panel.get_runner().backend == "threads"
    assert cluster_expanders(at) == []
    assert not any("Ray" in w.value for w in at.warning)
