"""The whole default loop clicked through in a real browser with default settings: a verdict, no error box.

Dataset (digits, the step profile's defaults: 0, 1 and 2 cut to 10%) -> Generate (the default GAN preset,
then fill to balance) -> Train (the default mixes and seeds) -> Compare (the headline). Minutes on 2 CPU
cores, so marked slow; its time is measured by ``bench/default_loop.py --browser``, not asserted here.
"""

from __future__ import annotations

import re

import pytest

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _need_chromium, server  # noqa: F401  (server: a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
HEADLINE = "Did the synthetic images beat every cheap control?"


def test_the_default_loop_reaches_a_verdict_in_a_real_browser(server: str) -> None:  # noqa: F811
    _need_chromium()
    from playwright.sync_api import Page, expect, sync_playwright

    def no_error_box(page: Page, allowed: str = "") -> None:
        expect(page.get_by_test_id("stException")).to_have_count(0)
        errors = page.get_by_test_id("stAlertContentError")
        for i in range(errors.count()):  # a "no" headline is red: the only red box allowed, on Compare
            assert allowed and allowed in errors.nth(i).inner_text(), errors.nth(i).inner_text()

    def go(page: Page, name: str) -> None:
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server, wait_until="domcontentloaded")
        # 1. Dataset: the step profile with its defaults.
        expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=60_000)
        page.get_by_test_id("stSelectbox").filter(has_text="Profile").click()
        page.get_by_role("option", name="Step: some classes cut to a few percent").click()
        page.get_by_role("button", name="Apply to the training split").click()
        expect(page.get_by_test_id("stSidebar")).to_contain_text("step", timeout=60_000)
        no_error_box(page)
        # 2. Generate: the default preset, its time left while it trains, then a set that fills to balance.
        go(page, "Generate")
        expect(page.get_by_text(re.compile(r"Standard · [\d,]+ steps · about .+ here"))).to_be_visible(timeout=120_000)
        page.get_by_role("button", name="Train generator").click()
        expect(page.get_by_text(re.compile(r"step [\d,]+ of [\d,]+ · about .+ left"))).to_be_visible(timeout=300_000)
        expect(page.get_by_text("Train a generator first")).to_have_count(0, timeout=1_800_000)
        page.get_by_role("button", name="Generate set").click()
        stored = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Stored set")
        expect(stored).to_be_visible(timeout=900_000)
        no_error_box(page)
        # 3. Train: the default mixes and seeds.
        go(page, "Train")
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text("All runs of this experiment have finished")).to_be_visible(timeout=1_800_000)
        no_error_box(page)
        # 4. Compare: a headline with a verdict.
        go(page, "Compare")
        headline = page.locator('[data-testid^="stAlertContent"]').filter(has_text=HEADLINE).first
        expect(headline).to_be_visible(timeout=120_000)
        assert re.search(r"\b(Yes|No|Can't tell)\b", headline.inner_text(), re.IGNORECASE), headline.inner_text()
        no_error_box(page, allowed=HEADLINE)
        browser.close()
    assert errors == []
