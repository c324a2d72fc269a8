"""Screenshots of a shared server: the login form, a shared experiment, an interrupted run, the Server page.

Starts the app in users mode on a fresh temporary workspace with two accounts (ada, an admin, and bob),
gives ada a finished experiment whose one run was cut short (as if the server had stopped during it),
then in Debian's Chromium (Playwright): the login page; ada's Train page with Resume / Re-run; ada
sharing the experiment on Compare; bob's Compare page showing it read-only; ada's Server page. Writes
the images to assets/screens/ (or the folder given).

Usage: python bench/screenshots_shared.py [OUT_DIR]
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
SHOTS = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "assets" / "screens")


def prepare(workspace: Path) -> str:
    """Accounts and ada's experiment, one run marked interrupted; returns the experiment's name."""
    os.environ["SYNTHLAB_HOME"] = str(workspace)
    from engine import accounts, experiments, runs
    from engine.config import DatasetConfig, ImbalanceConfig
    from engine.mixes import MixConfig
    from engine.owners import acting_as
    from engine.training import TrainConfig

    accounts.add_user("ada", "ada-password", admin=True)
    accounts.add_user("bob", "bob-password")
    name = "ada: digits 0-2 cut to 10%"
    cfg = experiments.ExperimentConfig(
        dataset=DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1", "2"), keep_fraction=0.1)),
        mixes=(MixConfig("oversample"),),
        train=TrainConfig(max_epochs=3, device="cpu", precision="fp32"),
        seeds=(0, 1),
        name=name,
    )
    with acting_as("ada"):
        record = experiments.run_experiment(cfg)
    cut = runs.load_record(record.run_ids[-1][2])
    runs.save_record(dataclasses.replace(cut, status="interrupted", error=runs.APP_STOPPED))
    return name


def idle(page: Any) -> None:
    """Wait until Streamlit has drawn the page and its script is idle, then a moment for the charts."""
    page.locator(IDLE).wait_for(timeout=60_000)
    page.wait_for_timeout(1500)


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_util import login, new_page, streamlit_server, users_mode_env, users_secrets

    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        name = prepare(workspace)
        server = streamlit_server(Path(tmp) / "server", users_mode_env(workspace), secrets=users_secrets())
        with server as url, sync_playwright() as pw:
            ada, bob = new_page(pw), new_page(pw)
            ada.goto(url, wait_until="domcontentloaded")
            expect(ada.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
            ada.screenshot(path=str(SHOTS / "login.png"))
            login(ada, "ada", "ada-password")
            ada.wait_for_timeout(1500)
            ada.goto(f"{url}/train", wait_until="domcontentloaded")
            expect(ada.get_by_role("button", name="Resume").first).to_be_visible(timeout=60_000)
            idle(ada)
            ada.get_by_role("button", name="Resume").first.scroll_into_view_if_needed()
            ada.screenshot(path=str(SHOTS / "train-interrupted.png"))
            ada.goto(f"{url}/compare", wait_until="domcontentloaded")
            expect(ada.get_by_role("combobox", name="Experiment")).to_have_value(re.compile(name), timeout=60_000)
            ada.get_by_text("Share with everyone on this server").click()
            time.sleep(2)
            idle(ada)
            ada.screenshot(path=str(SHOTS / "compare-share.png"))
            bob.goto(url, wait_until="domcontentloaded")
            login(bob, "bob", "bob-password")
            bob.wait_for_timeout(1500)  # the login cookie is set by the page just drawn
            bob.goto(f"{url}/compare", wait_until="domcontentloaded")
            expect(bob.get_by_text("Shared by ada (read-only).")).to_be_visible(timeout=60_000)
            idle(bob)
            bob.screenshot(path=str(SHOTS / "compare-shared-with-bob.png"))
            ada.goto(f"{url}/server", wait_until="domcontentloaded")
            expect(ada.get_by_role("heading", name="Usage per user")).to_be_visible(timeout=60_000)
            idle(ada)
            ada.screenshot(path=str(SHOTS / "server.png"), full_page=True)
    print(f"screenshots in {SHOTS}")


if __name__ == "__main__":
    main()
