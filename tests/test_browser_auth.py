"""Real-browser logins: users mode (two people, reload, log out) and oidc mode through an offline provider."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import accounts
from tests.browser_util import (
    free_port,
    login,
    logout,
    need_chromium,
    new_page,
    streamlit_server,
    users_mode_env,
    users_secrets,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def two_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    monkeypatch.delenv("SYNTHLAB_USERS_FILE", raising=False)
    accounts.add_user("ada", "ada-password", admin=True)
    accounts.add_user("bob", "bob-password")


def test_users_log_in_stay_logged_in_over_a_reload_and_log_out(
    two_users: None, workspace: Path, tmp_path: Path
) -> None:
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    server = streamlit_server(tmp_path / "server", users_mode_env(workspace), secrets=users_secrets())
    with server as url, sync_playwright() as pw:
        ada, bob = new_page(pw), new_page(pw)  # two browsers, two cookie jars
        for page in (ada, bob):
            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
            expect(page.get_by_role("heading", name="Dataset")).to_have_count(0)
        ada.get_by_label("Username").fill("ada")
        ada.get_by_label("Password", exact=True).fill("not-her-password")
        ada.get_by_role("button", name="Log in").click()
        expect(ada.get_by_text("wrong user name or password")).to_be_visible(timeout=30_000)
        login(ada, "ada", "ada-password")
        login(bob, "bob", "bob-password")
        expect(ada.get_by_test_id("stSidebar")).to_contain_text("Logged in as ada · admin")
        expect(bob.get_by_test_id("stSidebar")).not_to_contain_text("admin")
        expect(ada.get_by_role("heading", name="Dataset")).to_be_visible(timeout=60_000)
        cookie = next(c for c in ada.context.cookies() if c["name"] == accounts.COOKIE_NAME)
        assert cookie["sameSite"] == "Strict" and cookie["path"] == "/" and "." in cookie["value"]

        ada.reload(wait_until="domcontentloaded")  # a new Streamlit session: the cookie logs her in again
        expect(ada.get_by_test_id("stSidebar")).to_contain_text("Logged in as ada", timeout=60_000)
        expect(ada.get_by_role("heading", name="Dataset")).to_be_visible(timeout=60_000)

        logout(ada)
        expect(ada.get_by_role("heading", name="Dataset")).to_have_count(0)
        ada.reload(wait_until="domcontentloaded")
        expect(ada.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
        assert not any(c["name"] == accounts.COOKIE_NAME for c in ada.context.cookies())
        bob.reload(wait_until="domcontentloaded")  # her logout is not his
        expect(bob.get_by_test_id("stSidebar")).to_contain_text("Logged in as bob", timeout=60_000)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[str]:
    """An OpenID provider on a free port of this machine (oidc-provider-mock's own server), one known user.

    A separate process: its Authlib emits deprecation warnings that this suite turns into errors.
    """
    port = free_port()
    grace = json.dumps({"sub": "grace", "email": "grace@example.org", "name": "Grace Hopper"})
    cmd = [sys.executable, "-m", "oidc_provider_mock", "--port", str(port), "--user-claims", grace]
    url = f"http://localhost:{port}"
    with (tmp_path / "provider.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(f"{url}/.well-known/openid-configuration", proc, tmp_path / "provider.log")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_oidc_login_through_an_offline_provider(provider: str, workspace: Path, tmp_path: Path) -> None:
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    secrets_toml = f"""
[synthlab]
admins = ["grace@example.org"]

[auth]
redirect_uri = "http://localhost:{port}/oauth2callback"
cookie_secret = "{secrets.token_hex(32)}"
client_id = "synthlab"
client_secret = "{secrets.token_hex(16)}"
server_metadata_url = "{provider}/.well-known/openid-configuration"
"""
    env = {"SYNTHLAB_HOME": str(workspace), "SYNTHLAB_AUTH": "oidc"}
    with streamlit_server(tmp_path / "server", env, secrets=secrets_toml, port=port), sync_playwright() as pw:
        page = new_page(pw)
        page.goto(f"http://localhost:{port}", wait_until="domcontentloaded")  # the host of redirect_uri
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("button", name="grace").click()  # the provider's page: log in as its known user
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar).to_contain_text("Logged in as Grace Hopper (grace@example.org) · admin", timeout=60_000)
        expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=60_000)
        page.reload(wait_until="domcontentloaded")
        expect(sidebar).to_contain_text("grace@example.org", timeout=60_000)
        assert any(c["name"] == "_streamlit_user" for c in page.context.cookies())  # Streamlit's signed identity
        kept = workspace / "user_state" / "grace@example.org.json"  # the session's dataset, kept under the e-mail
        for _ in range(60):
            if kept.is_file():
                break
            time.sleep(0.5)
        assert kept.is_file(), sorted(p.name for p in workspace.rglob("*"))[:50]
        sidebar.get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="End session").click()  # the provider ends its session and sends us back
        page.wait_for_url(f"http://localhost:{port}/**", timeout=60_000)
        expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
        expect(page.get_by_role("heading", name="Dataset")).to_have_count(0)
        assert not any(c["name"] == "_streamlit_user" for c in page.context.cookies())
