"""engine.accounts and `python -m engine users`: hashes, wrong logins, the lock, sessions, the file, the CLI."""

from __future__ import annotations

import io
import json
import stat
import threading
from pathlib import Path

import bcrypt
import pytest

from engine import accounts, cli
from engine.accounts import AccountError, User

SECRET = "k" * 64


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)  # the lowest cost bcrypt allows: the tests stay fast
    for env in (accounts.AUTH_ENV, accounts.USERS_FILE_ENV, accounts.SESSION_DAYS_ENV):
        monkeypatch.delenv(env, raising=False)


def stored() -> dict:
    return json.loads(accounts.users_file().read_text())


def test_auth_mode_defaults_to_none_and_refuses_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert accounts.auth_mode() == "none"
    monkeypatch.setenv("SYNTHLAB_AUTH", "users")
    assert accounts.auth_mode() == "users"
    monkeypatch.setenv("SYNTHLAB_AUTH", "ldap")
    with pytest.raises(ValueError, match=r"SYNTHLAB_AUTH='ldap' is not accepted: expected one of none, users, oidc"):
        accounts.auth_mode()


def test_password_is_stored_only_as_a_bcrypt_hash_and_checks_round_trip(workspace: Path) -> None:
    assert accounts.add_user("ada", "correct horse", admin=True) == User("ada", "admin")
    assert accounts.users_file() == workspace / "users.json"
    record = stored()["users"]["ada"]
    assert "correct horse" not in accounts.users_file().read_text()
    assert record["hash"].startswith("$2b$04$") and bcrypt.checkpw(b"correct horse", record["hash"].encode())
    assert accounts.check_password("ada", "correct horse") == User("ada", "admin")
    accounts.add_user("bob", "another pass")
    assert accounts.list_users() == [User("ada", "admin"), User("bob", "user")]


def test_wrong_password_and_unknown_name_read_the_same() -> None:
    accounts.add_user("ada", "correct horse")
    with pytest.raises(AccountError) as wrong_password:
        accounts.check_password("ada", "wrong horse")
    with pytest.raises(AccountError) as unknown_name:
        accounts.check_password("nobody", "correct horse")
    assert str(wrong_password.value) == str(unknown_name.value) == "wrong user name or password"


def test_five_failures_lock_the_name_for_15_minutes_and_survive_a_restart() -> None:
    accounts.add_user("ada", "correct horse")
    t0 = 1_000_000.0
    for i in range(4):
        with pytest.raises(AccountError, match="wrong user name or password"):
            accounts.check_password("ada", "guess", now=t0 + i)
    with pytest.raises(AccountError, match=r"too many failed logins for 'ada'; try again in 15 min"):
        accounts.check_password("ada", "guess", now=t0 + 4)
    assert stored()["failures"]["ada"]["locked_until"] == t0 + 4 + 15 * 60  # on disk: a restart keeps the lock
    with pytest.raises(AccountError, match=r"try again in 14 min"):  # even the right password
        accounts.check_password("ada", "correct horse", now=t0 + 4 + 61)
    assert accounts.check_password("ada", "correct horse", now=t0 + 4 + 15 * 60 + 1).name == "ada"
    assert "ada" not in stored()["failures"]


def test_failures_spread_over_more_than_the_window_do_not_lock() -> None:
    accounts.add_user("ada", "correct horse")
    for i in range(6):
        with pytest.raises(AccountError, match="wrong user name or password"):
            accounts.check_password("ada", "guess", now=1_000_000.0 + i * 5 * 60)  # one every 5 min
    assert accounts.check_password("ada", "correct horse", now=1_000_000.0 + 31 * 60).name == "ada"


def test_sessions_expire_end_and_go_with_their_user(monkeypatch: pytest.MonkeyPatch) -> None:
    ada = accounts.add_user("ada", "correct horse", admin=True)
    bob = accounts.add_user("bob", "another pass")
    t0 = 2_000_000.0
    token = accounts.start_session(ada, now=t0)
    assert token not in accounts.users_file().read_text()  # only its hash is stored
    assert accounts.session_user(token, now=t0 + 1) == ada
    assert accounts.session_user(token, now=t0 + 7 * 86400 + 1) is None  # 7 days by default
    assert accounts.session_user("made-up", now=t0) is None
    accounts.end_session(token)
    assert accounts.session_user(token, now=t0 + 1) is None
    monkeypatch.setenv("SYNTHLAB_SESSION_DAYS", "0.5")
    bobs = accounts.start_session(bob, now=t0)
    assert accounts.session_user(bobs, now=t0 + 11 * 3600) == bob
    assert accounts.session_user(bobs, now=t0 + 13 * 3600) is None
    bobs = accounts.start_session(bob)
    accounts.remove_user("bob")
    assert accounts.session_user(bobs) is None and stored()["sessions"] == {}
    with pytest.raises(AccountError, match=r"user 'bob' is not accepted: no such user \(users: ada\)"):
        accounts.get_user("bob")


def test_a_new_password_ends_the_sessions_and_replaces_the_old_one() -> None:
    ada = accounts.add_user("ada", "correct horse")
    token = accounts.start_session(ada)
    accounts.set_password("ada", "battery staple")
    assert accounts.session_user(token) is None
    assert accounts.check_password("ada", "battery staple") == ada
    with pytest.raises(AccountError):
        accounts.check_password("ada", "correct horse")


def test_users_file_is_private_and_can_live_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts.add_user("ada", "correct horse")
    assert stat.S_IMODE(accounts.users_file().stat().st_mode) == 0o600
    monkeypatch.setenv("SYNTHLAB_USERS_FILE", str(tmp_path / "elsewhere" / "people.json"))
    accounts.add_user("bob", "another pass")
    assert [u.name for u in accounts.list_users()] == ["bob"]
    assert stat.S_IMODE((tmp_path / "elsewhere" / "people.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["", "a b", "x" * 33, "ada/../x", "é"])
def test_bad_user_names_are_refused_with_what_is_accepted(name: str) -> None:
    with pytest.raises(ValueError, match=r"is not accepted: expected 1 to 32 characters, each a letter, digit"):
        accounts.add_user(name, "correct horse")


def test_short_passwords_and_taken_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"password of 5 bytes is not accepted: expected 8 to 72 bytes"):
        accounts.add_user("ada", "short")
    accounts.add_user("ada", "correct horse")
    with pytest.raises(ValueError, match=r"user 'ada' is not accepted: that name is taken"):
        accounts.add_user("ada", "correct horse")


def test_cookie_value_is_signed_and_a_changed_one_is_refused() -> None:
    value = accounts.sign_token("tok-123", SECRET)
    assert value.startswith("tok-123.") and accounts.unsign_token(value, SECRET) == "tok-123"
    assert accounts.unsign_token(value.replace("tok-123", "tok-124"), SECRET) is None
    assert accounts.unsign_token(value, "z" * 64) is None
    with pytest.raises(ValueError, match=r"needs \[synthlab\] cookie_secret .*secrets.token_hex\(32\)"):
        accounts.check_cookie_secret(None)


def test_oidc_users_are_named_by_email_and_admins_come_from_the_allow_list() -> None:
    admins = accounts.check_admins(["Ada@Example.org"])
    assert accounts.oidc_user({"email": "ada@example.org", "sub": "1", "name": "Ada"}, admins) == User(
        "ada@example.org", "admin", "Ada"
    )
    assert accounts.oidc_user({"sub": "42"}, admins) == User("42", "user")
    with pytest.raises(ValueError, match=r"\[synthlab\] admins = 'ada@example.org' is not accepted: expected a list"):
        accounts.check_admins("ada@example.org")


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(argv)


def test_cli_adds_lists_changes_and_removes_users(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["users", "add", "ada", "--admin", "--password-stdin"], monkeypatch, "correct horse\n") == 0
    assert run_cli(["users", "add", "bob", "--password-stdin"], monkeypatch, "another pass\n") == 0
    assert accounts.check_password("ada", "correct horse").role == "admin"
    capsys.readouterr()
    assert run_cli(["users", "list"], monkeypatch) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["name", "role"] and rows[2:] == [["ada", "admin"], ["bob", "user"]] and "$2b$" not in out
    assert run_cli(["users", "passwd", "bob", "--password-stdin"], monkeypatch, "third pass\n") == 0
    assert accounts.check_password("bob", "third pass").name == "bob"
    assert run_cli(["users", "remove", "bob"], monkeypatch) == 0
    assert [u.name for u in accounts.list_users()] == ["ada"]


def test_cli_refusals_are_one_line_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["users", "add", "a b", "--password-stdin"], monkeypatch, "correct horse\n") == 2
    assert run_cli(["users", "remove", "nobody"], monkeypatch) == 2
    assert run_cli(["users", "passwd", "nobody", "--password-stdin"], monkeypatch, "correct horse\n") == 2
    assert run_cli(["users", "add", "ada", "--password-stdin"], monkeypatch, "short\n") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in err if not line.startswith("note")] == ["error"] * 4
    assert "user name 'a b' is not accepted" in err[0] and "user 'nobody' is not accepted: no such user" in err[1]
    assert accounts.list_users() == []


def test_changes_from_many_threads_at_once_are_all_kept() -> None:
    threads = [threading.Thread(target=accounts.add_user, args=(f"user{i}", "correct horse")) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(u.name for u in accounts.list_users()) == [f"user{i}" for i in range(8)]  # no lost update
