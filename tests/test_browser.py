"""One real-browser test: start the server, open the app in Debian's Chromium, find the class chart.

Playwright drives /usr/bin/chromium (no browser download). Skipped where Chromium is missing,
except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import runs
from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port

pytestmark = pytest.mark.browser


@pytest.fixture
def server(workspace: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "SYNTHLAB_HOME": str(workspace)}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"server did not answer /_stcore/health: {(tmp_path / 'server.log').read_text()[-2000:]}"
                    )
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must install Debian's chromium; {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} not installed (make test installs it when run as root)")


def test_dataset_page_shows_the_digits_class_chart_in_a_real_browser(server: str, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server, wait_until="domcontentloaded")
        chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Training images per class")
        expect(chart).to_be_visible(timeout=60_000)
        expect(chart.locator(".xtick text")).to_have_count(10)  # classes 0..9 on the x axis
        expect(page.get_by_test_id("stSidebar")).to_contain_text("built-in digits · 10 classes")
        expect(page.get_by_role("heading", name="Dataset")).to_be_visible()
        page.screenshot(path=str(os.environ.get("SYNTHLAB_SCREENSHOT", tmp_path / "dataset.png")), full_page=True)
        browser.close()
    assert errors == []


def test_train_page_runs_an_experiment_with_live_curves_in_a_real_browser(server: str, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/train", wait_until="domcontentloaded")  # the server's first visit, straight to a page
        expect(page.get_by_role("heading", name="Train")).to_be_visible(timeout=60_000)
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav).to_contain_text("Preprocess preview")  # the app's navigation, not a folder listing
        expect(page.get_by_test_id("stSidebar")).to_contain_text("built-in digits")
        epochs = page.get_by_role("spinbutton", name="Max epochs")
        epochs.fill("4")
        epochs.press("Tab")
        seeds = page.get_by_role("spinbutton", name="Seeds")
        seeds.fill("1")
        seeds.press("Tab")
        page.get_by_role("button", name="Start").click()
        curves = (
            page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Training curves").first
        )  # one per live run; at least one
        expect(curves).to_be_visible(timeout=60_000)
        expect(curves.locator(".scatterlayer .trace").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("All runs of this experiment have finished")).to_be_visible(timeout=120_000)
        page.reload(wait_until="domcontentloaded")
        expect(page.get_by_text("All runs of this experiment have finished")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(os.environ.get("SYNTHLAB_SCREENSHOT_TRAIN", tmp_path / "train.png")), full_page=True)
        browser.close()
    finished = runs.list_records()  # the server's workspace: what the page said finished is on disk
    assert finished and {r.status for r in finished} == {"done"}


def test_generate_page_trains_a_gan_in_a_real_browser(server: str, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/generate", wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name="Generate")).to_be_visible(timeout=60_000)
        page.get_by_text("Advanced", exact=True).click()  # the settings beyond the preset
        for label, value in (("Steps", "30"), ("Width", "8"), ("Batch size", "16")):
            box = page.get_by_role("spinbutton", name=label, exact=True)
            box.fill(value)
            box.press("Tab")
        page.get_by_role("button", name="Train generator").click()
        # .first: while the page reruns after the generator is stored, the old chart lingers beside the new
        losses = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Generator training losses").first
        expect(losses).to_be_visible(timeout=90_000)
        expect(page.get_by_text("(the same noise each time)")).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Train a generator first")).to_have_count(0, timeout=90_000)  # the generator is stored
        assert page.get_by_text("(the same noise each time)").count() >= 1
        page.screenshot(path=str(os.environ.get("SYNTHLAB_SCREENSHOT_GENERATE", tmp_path / "generate.png")))
        browser.close()
