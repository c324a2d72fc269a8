"""The Train page in a real browser on a local Ray cluster: the Cluster expander lists the nodes, and an
experiment started there runs its runs as Ray tasks on the worker node until every one has finished.

The server runs with ``SYNTHLAB_RUNNER=ray`` against the local cluster of :mod:`tests.test_ray_cluster`
(:mod:`tests.ray_util`: a head without CPUs and one worker node of 1 CPU). A minute or two on 2 cores, so marked slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("ray")

from engine import runs
from tests.browser_util import need_chromium, new_page, streamlit_server
from tests.ray_util import LocalCluster
from tests.test_ray_cluster import ray_cluster  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_train_page_lists_the_cluster_and_runs_an_experiment_on_it(
    ray_cluster: LocalCluster,  # noqa: F811
    workspace: Path,
    tmp_path: Path,
) -> None:
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    env = {"SYNTHLAB_HOME": str(workspace), "SYNTHLAB_RUNNER": "ray", "SYNTHLAB_RAY_ADDRESS": ray_cluster.address}
    with streamlit_server(tmp_path / "server", env) as url, sync_playwright() as pw:
        page = new_page(pw)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/train", wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name="Train")).to_be_visible(timeout=120_000)
        # 1. The Cluster expander: the head and the worker node, and the totals.
        cluster = page.get_by_test_id("stExpander").filter(has_text="Cluster")
        cluster.get_by_text("Cluster", exact=True).click()
        rows = cluster.locator("tbody tr")
        expect(rows).to_have_count(2, timeout=60_000)
        cells = [rows.nth(i).locator("th, td").all_inner_texts() for i in range(2)]
        head_and_worker = [("yes", "0", "0"), ("yes", "1", "0")]  # alive, CPUs, GPUs
        assert sorted((alive, cpus, gpus) for _, alive, cpus, gpus, _ in cells) == head_and_worker
        assert all(re.fullmatch(r"[\d.]+ \([0-9a-f]{8}\)", node) for node, *_ in cells), cells
        port = ray_cluster.address.rpartition(":")[2]
        totals = re.compile(rf"[\d.]+:{port} · 2 of 2 nodes alive · 1 CPUs · 0 GPUs")
        expect(cluster.get_by_text(totals)).to_be_visible()
        # 2. A small experiment: real, oversample and reweight, one seed, two epochs.
        for label, value in (("Max epochs", "2"), ("Seeds", "1")):
            box = page.get_by_role("spinbutton", name=label)
            box.fill(value)
            box.press("Tab")
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text(re.compile(r"node [\d.]+ \([0-9a-f]{8}\)")).first).to_be_visible(timeout=120_000)
        expect(page.get_by_text("All runs of this experiment have finished")).to_be_visible(timeout=600_000)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "train-ray.png"), full_page=True)
        page.context.browser.close()
    records = runs.list_records()  # the server's workspace: what the page said finished is on disk
    assert len(records) == 3 and {r.status for r in records} == {"done"}
    assert errors == []
