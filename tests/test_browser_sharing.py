"""Two logged-in users in real browsers: B neither sees nor can change A's private work, and sees what A shares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine import accounts, experiments
from engine.config import DatasetConfig, SourceConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.owners import acting_as
from engine.training import TrainConfig
from tests.browser_util import login, need_chromium, new_page, streamlit_server, users_mode_env, users_secrets
from tests.test_synth_sets import create

pytestmark = [pytest.mark.slow, pytest.mark.browser]
PRIVATE = "alice-private-experiment"


@pytest.fixture
def alices_work(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Two users, and alice's finished experiment and synthetic set in the workspace (neither shared)."""
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    monkeypatch.delenv("SYNTHLAB_USERS_FILE", raising=False)
    accounts.add_user("alice", "alice-password")
    accounts.add_user("bob", "bob-password")
    cfg = experiments.ExperimentConfig(
        dataset=DatasetConfig(source=SourceConfig(resolution=8)),
        mixes=(MixConfig("oversample"),),
        train=TrainConfig(max_epochs=1, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0,),
        name=PRIVATE,
    )
    with acting_as("alice"):
        record = experiments.run_experiment(cfg)
        info, _, _ = create([0, 1, 2], identity=build_dataset(DatasetConfig()).key)  # for the data bob has open
    return record.id, info.id


def test_b_cannot_see_or_change_a_private_work_and_sees_what_a_shares(
    alices_work: tuple[str, str], workspace: Path, tmp_path: Path
) -> None:
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    exp_id, set_id = alices_work
    server = streamlit_server(tmp_path / "server", users_mode_env(workspace), secrets=users_secrets())
    with server as url, sync_playwright() as pw:
        alice, bob = new_page(pw), new_page(pw)
        for page, name in ((alice, "alice"), (bob, "bob")):
            page.goto(url, wait_until="domcontentloaded")
            login(page, name, f"{name}-password")

        # 1. bob: nothing of alice's on Compare, Train or in the synthetic sets of the Generate page
        bob.goto(f"{url}/compare", wait_until="domcontentloaded")
        expect(bob.get_by_text("No experiments yet")).to_be_visible(timeout=60_000)
        bob.goto(f"{url}/train", wait_until="domcontentloaded")
        expect(bob.get_by_role("heading", name="Train")).to_be_visible(timeout=60_000)
        bob.wait_for_timeout(3000)  # the job panel's first poll
        assert exp_id not in bob.content() and PRIVATE not in bob.content()
        bob.goto(f"{url}/generate", wait_until="domcontentloaded")
        expect(bob.get_by_role("heading", name="Synthetic sets")).to_be_visible(timeout=60_000)
        bob.wait_for_timeout(2000)
        assert set_id not in bob.content()

        # 2. alice sees her experiment and shares it
        alice.goto(f"{url}/compare", wait_until="domcontentloaded")
        expect(alice.get_by_role("combobox", name="Experiment")).to_have_value(re.compile(PRIVATE), timeout=60_000)
        share = alice.get_by_role("switch", name="Share with everyone on this server")
        expect(share).to_be_visible(timeout=60_000)
        alice.get_by_text("Share with everyone on this server").click()
        alice.wait_for_timeout(2000)
        assert experiments.load_experiment(exp_id).shared

        # 3. bob now sees it, read-only: no switch to unshare it, and alice's set stays private
        bob.goto(f"{url}/compare", wait_until="domcontentloaded")
        expect(bob.get_by_role("combobox", name="Experiment")).to_have_value(re.compile(PRIVATE), timeout=60_000)
        expect(bob.get_by_text("Shared by alice (read-only).")).to_be_visible(timeout=60_000)
        expect(bob.get_by_role("switch", name="Share with everyone on this server")).to_have_count(0)
        bob.goto(f"{url}/generate", wait_until="domcontentloaded")
        expect(bob.get_by_role("heading", name="Synthetic sets")).to_be_visible(timeout=60_000)
        bob.wait_for_timeout(2000)
        assert set_id not in bob.content()
