"""AppTest of the login gate: the form instead of the pages, wrong and right passwords, log out, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import accounts

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 64


@pytest.fixture(autouse=True)
def users_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    monkeypatch.setenv("SYNTHLAB_AUTH", "users")
    monkeypatch.delenv("SYNTHLAB_USERS_FILE", raising=False)
    accounts.add_user("ada", "correct horse", admin=True)


def app(**secrets: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.secrets["synthlab"] = {"cookie_secret": SECRET}
    at.secrets.update(secrets)
    return at


def log_in(at: AppTest, name: str, password: str) -> AppTest:
    fields = {field.label: field for field in at.text_input}
    fields["Username"].input(name)
    fields["Password"].input(password)
    return next(b for b in at.button if b.label == "Log in").click().run()


def test_users_mode_shows_the_login_form_and_not_the_pages() -> None:
    at = app().run()
    assert not at.exception
    assert [f.label for f in at.text_input] == ["Username", "Password"]
    assert [b.label for b in at.button] == ["Log in"]
    assert [t.value for t in at.title] == ["SynthLab"]  # not the Dataset page
    assert "user" not in at.session_state


def test_a_wrong_password_shows_the_error_and_keeps_the_form() -> None:
    at = log_in(app().run(), "ada", "wrong horse")
    assert [e.value for e in at.error] == ["wrong user name or password"]
    assert [t.value for t in at.title] == ["SynthLab"]


def test_the_right_password_opens_the_app_and_log_out_closes_it() -> None:
    at = log_in(app().run(), "ada", "correct horse")
    assert not at.exception and not at.error
    assert at.title[0].value == "Dataset"
    assert at.session_state["user"] == accounts.User("ada", "admin")
    assert any(m.value == "Logged in as **ada** · admin" for m in at.sidebar.markdown)
    token = at.session_state["auth_token"]
    assert accounts.session_user(token) == accounts.User("ada", "admin")
    scripts = [el.proto.body for el in at.get("html")]  # the page sets the signed cookie itself
    value = next(b for b in scripts if "synthlab_session=" in b).split("synthlab_session=")[1].split(";")[0]
    assert accounts.unsign_token(value, SECRET) == token and "SameSite=Strict" in scripts[0]
    at = next(b for b in at.sidebar.button if b.label == "Log out").click().run()
    assert [f.label for f in at.text_input] == ["Username", "Password"]
    assert accounts.session_user(token) is None  # ended on the server, not only in this browser
    assert any("synthlab_session=; Max-Age=0" in el.proto.body for el in at.get("html"))  # and the cookie goes


def test_a_session_ends_when_its_account_is_removed() -> None:
    at = log_in(app().run(), "ada", "correct horse")
    assert at.title[0].value == "Dataset"
    accounts.remove_user("ada")
    at = at.run()
    assert [f.label for f in at.text_input] == ["Username", "Password"]


def test_users_mode_without_a_cookie_secret_says_how_to_make_one() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert "secrets.token_hex(32)" in at.error[0].value and not at.text_input


def test_oidc_mode_needs_an_auth_section_then_offers_the_provider_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHLAB_AUTH", "oidc")
    at = app().run()
    assert "oidc mode needs an [auth] section" in at.error[0].value
    auth = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": SECRET,
        "client_id": "lab",
        "client_secret": "x",
        "server_metadata_url": "http://localhost:9/.well-known/openid-configuration",
    }
    at = app(auth=auth).run()
    assert not at.exception and not at.error
    assert [b.label for b in at.button] == ["Log in"]


def test_none_mode_opens_the_app_as_the_local_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHLAB_AUTH", "none")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert at.title[0].value == "Dataset" and at.session_state["user"] == accounts.LOCAL
    assert not any("Logged in" in m.value for m in at.sidebar.markdown)


@pytest.mark.parametrize(
    ("own", "forwarded", "logged"),
    [
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # a visitor from elsewhere: their own connection's address
        (None, "198.51.100.1, 192.0.2.9", "192.0.2.9"),  # through a proxy on this machine: the address it saw
        (None, None, ""),  # a browser on this machine, no proxy
    ],
)
def test_failed_logins_name_the_address_a_proxy_on_this_machine_saw(
    monkeypatch: pytest.MonkeyPatch, own: str | None, forwarded: str | None, logged: str
) -> None:
    import types

    from ui import auth

    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    fake = types.SimpleNamespace(context=types.SimpleNamespace(ip_address=own, headers=headers))
    monkeypatch.setattr(auth, "st", fake)
    assert auth.client_address() == logged
