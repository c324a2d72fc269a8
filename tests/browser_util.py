"""Helpers for real-browser tests: a Streamlit server on a free port with its own env and secrets, logins.

Playwright drives Debian's /usr/bin/chromium (no browser download). ``need_chromium()`` skips a test
where it is missing, except in CI (CI=true), where that is a failure. Typical use::

    with streamlit_server(tmp_path, users_mode_env(workspace), secrets=users_secrets()) as url:
        with sync_playwright() as pw:
            page = new_page(pw)
            page.goto(url)
            login(page, "ada", "correct horse")
"""

from __future__ import annotations

import os
import secrets as random_secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.accounts import COOKIE_NAME

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must install Debian's chromium; {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} not installed (make test installs it when run as root)")


def wait_for(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer: {log_path.read_text()[-2000:]}")
        time.sleep(0.3)


def users_secrets(cookie_secret: str | None = None) -> str:
    """A secrets.toml for users mode: a fresh random cookie secret."""
    return f'[synthlab]\ncookie_secret = "{cookie_secret or random_secrets.token_hex(32)}"\n'


def users_mode_env(workspace: Path) -> dict[str, str]:
    """Server environment for users mode over ``workspace`` (users file in it)."""
    return {"SYNTHLAB_HOME": str(workspace), "SYNTHLAB_AUTH": "users"}


@contextmanager
def streamlit_server(
    folder: Path, env: Mapping[str, str], *, secrets: str | None = None, port: int | None = None
) -> Iterator[str]:
    """The app's server as ``make run`` starts it (``python -m ui.serve``: ``streamlit run app.py`` with the lab's
    modules imported first) on 127.0.0.1 with ``env`` on top of ours; yields its URL.

    ``secrets`` (TOML text) is written to ``folder/secrets.toml`` and is the server's only secrets file;
    the server's log is ``folder/server.log``.
    """
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    secrets_file = folder / "secrets.toml"
    secrets_file.write_text(secrets or "")
    secrets_file.chmod(0o600)
    log_path = folder / "server.log"
    cmd = [sys.executable, "-m", "ui.serve", "--server.port", str(port)]
    cmd += ["--server.address", "127.0.0.1", "--secrets.files", str(secrets_file)]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(f"{url}/_stcore/health", proc, log_path)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def new_page(pw: Any, *, width: int = 1400, height: int = 1000) -> Any:
    """A page in a fresh Chromium (its own cookies), for Playwright's sync API object ``pw``."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser.new_context(viewport={"width": width, "height": height}).new_page()


def login(page: Any, name: str, password: str, *, timeout: float = 60_000) -> None:
    """Fill the users-mode login form and wait until the sidebar names ``name``."""
    from playwright.sync_api import expect

    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("stSidebar")).to_contain_text(f"Logged in as {name}", timeout=timeout)
    # the login cookie is set by a script in the page just drawn: a new address before it lands shows the form
    deadline = time.monotonic() + timeout / 1000
    while not any(c["name"] == COOKIE_NAME for c in page.context.cookies()):
        assert time.monotonic() < deadline, "the login cookie was never set"
        page.wait_for_timeout(100)


def logout(page: Any, *, timeout: float = 60_000) -> None:
    """Click the sidebar's Log out and wait for the login form."""
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebar").get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Username")).to_be_visible(timeout=timeout)
