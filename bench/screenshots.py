"""Screenshots of every page: walk the default loop in a real browser with default settings.

Starts the app on a fresh temporary workspace, then in Debian's Chromium (Playwright, no browser
download): Dataset (digits, 0, 1 and 2 cut to 10%), Generate (train the default GAN, fill to balance),
Train (the default mixes, Start), Compare (the headline), Explain, Preprocess preview. Prints the time
of each step and the headline; writes the README's screenshots to assets/screens/ (or the folder given).

Usage: python bench/screenshots.py [OUT_DIR]
"""

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "assets" / "screens")
SHOTS.mkdir(parents=True, exist_ok=True)
PORT = 8599
ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
env = {**os.environ, "SYNTHLAB_HOME": tempfile.mkdtemp(prefix="synthlab-screens-")}
log = open(Path(env["SYNTHLAB_HOME"]) / "server.log", "w")  # noqa: SIM115 (open for the server's whole life)
proc = subprocess.Popen(
    [
        str(ROOT / ".venv/bin/python"),
        "-m",
        "ui.serve",
        "--server.port",
        str(PORT),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ],
    cwd=ROOT,
    env=env,
    stdout=log,
    stderr=subprocess.STDOUT,
)
url = f"http://127.0.0.1:{PORT}"
t0 = time.monotonic()


def stamp(msg):
    print(f"[{time.monotonic() - t0:6.0f} s] {msg}", flush=True)


try:
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url, wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=60_000)
        # 1. Dataset: step imbalance, defaults (0, 1, 2 at 10%)
        page.get_by_test_id("stSelectbox").filter(has_text="Profile").click()
        page.get_by_role("option", name="Step: some classes cut to a few percent").click()
        page.get_by_role("button", name="Apply to the training split").click()
        expect(page.get_by_test_id("stSidebar")).to_contain_text("step", timeout=60_000)
        time.sleep(2)
        page.screenshot(path=str(SHOTS / "1-dataset.png"), full_page=True)
        stamp("dataset applied")
        # 2. Generate: default GAN, default settings
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Generate", exact=True).click()
        expect(page.get_by_role("heading", name="Generate")).to_be_visible(timeout=60_000)
        # the page times a few steps of each preset first; the form is ready once their labels show
        expect(page.get_by_text(re.compile(r"Standard · [\d,]+ steps · about .+ here"))).to_be_visible(timeout=120_000)
        page.get_by_role("button", name="Train generator").click()
        expect(page.get_by_text(re.compile(r"step [\d,]+ of [\d,]+ · about .+ left"))).to_be_visible(timeout=300_000)
        expect(page.get_by_text("Train a generator first")).to_have_count(0, timeout=1_800_000)
        stamp("generator trained")
        page.get_by_role("button", name="Generate set").click()
        expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Stored set")).to_be_visible(
            timeout=900_000
        )
        time.sleep(3)
        stamp("set made")
        page.screenshot(path=str(SHOTS / "2-generate.png"), full_page=True)
        # 3. Train: defaults
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Train", exact=True).click()
        expect(page.get_by_role("heading", name="Train")).to_be_visible(timeout=60_000)
        time.sleep(2)
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text("All runs of this experiment have finished")).to_be_visible(timeout=1_800_000)
        stamp("runs finished")
        page.screenshot(path=str(SHOTS / "4-train.png"), full_page=True)
        # 4. Compare
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Compare", exact=True).click()
        expect(page.get_by_role("heading", name="Compare")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Did the synthetic images beat every cheap control?")).to_be_visible(timeout=120_000)
        time.sleep(5)
        page.screenshot(path=str(SHOTS / "5-compare.png"), full_page=True)
        stamp("compare shown: " + page.get_by_text("Did the synthetic images beat every cheap control?").inner_text())
        # 5. Explain
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Explain", exact=True).click()
        expect(page.get_by_role("heading", name="Explain")).to_be_visible(timeout=60_000)
        time.sleep(8)
        page.screenshot(path=str(SHOTS / "6-explain.png"), full_page=True)
        stamp("explain shown")
        # 6. Preprocess preview
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Preprocess preview", exact=True).click()
        time.sleep(8)
        page.screenshot(path=str(SHOTS / "3-preprocess.png"), full_page=True)
        exceptions = page.get_by_test_id("stException").count()
        stamp(f"done; page errors {errors}; exception boxes on last page {exceptions}")
        browser.close()
finally:
    proc.terminate()
    proc.wait(timeout=20)
