"""The login gate: who is using this browser session, by the server's auth mode (docs/accounts.md).

``gate()`` runs once per script run in app.py, before the navigation. Mode ``none``: everyone is the
local user and nothing is drawn. Mode ``users``: a login form instead of the app until a name and
password match an account; the session token then goes into a signed cookie, set from the page
(Streamlit sets no cookies server side) and read back from ``st.context.cookies`` on the next page
load, so a reload keeps the login. Mode ``oidc``: Streamlit's own ``st.login`` against the provider
in ``[auth]`` of ``.streamlit/secrets.toml``. Pages read the result with :func:`user`.
Where this stops: accounts, passwords, sessions and cookie signing live in ``engine.accounts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import streamlit as st

from engine import accounts
from engine.accounts import LOCAL, AccountError, User

USER_KEY = "user"  # st.session_state: the User of this session, set by gate()
_TOKEN = "auth_token"  # this session's server-side session token (users mode)
_COOKIE = "auth_cookie"  # the signed cookie value this session sets in the browser
_CLEAR = "auth_clear_cookie"  # set by Log out: the next form also removes the cookie


def gate() -> User:
    """The user of this session; draws the login page and stops the script until there is one."""
    try:
        mode = accounts.auth_mode()
        if mode == "none":
            found = LOCAL
        elif mode == "users":
            found = _users_gate(accounts.check_cookie_secret(_setting("cookie_secret")))
        else:
            found = _oidc_gate(accounts.check_admins(_setting("admins")))
    except AccountError as err:  # a server setting to fix: the app does not open without it
        st.error(str(err))
        st.stop()
    st.session_state[USER_KEY] = found
    return found


def user() -> User:
    """The user :func:`gate` let in (the local user when the server has no accounts)."""
    found = st.session_state.get(USER_KEY)
    if isinstance(found, User):
        return found
    if accounts.auth_mode() == "none":
        return LOCAL
    raise RuntimeError("no one is logged in in this session: app.py calls ui.auth.gate() before any page")


def _setting(key: str) -> Any:
    """``[synthlab] key`` of ``.streamlit/secrets.toml``, or None."""
    try:
        section = st.secrets.get("synthlab")
    except FileNotFoundError:  # no secrets file at all
        return None
    return section.get(key) if isinstance(section, Mapping) else None


def _sidebar(found: User, log_out: Callable[[], None]) -> None:
    with st.sidebar:
        who = f"{found.display} ({found.name})" if found.display and found.display != found.name else found.name
        st.markdown(f"Logged in as **{who}**" + (" · admin" if found.is_admin else ""))
        st.button("Log out", key="auth_log_out", icon=":material/logout:", on_click=log_out)


# users mode -----------------------------------------------------------------------------------------------


def _users_gate(secret: str) -> User:
    # 1. This session's token, else the one in the browser's cookie (a reload, a new tab).
    token = st.session_state.get(_TOKEN)
    cookie = st.context.cookies.get(accounts.COOKIE_NAME)
    if token is None and cookie:
        token = accounts.unsign_token(cookie, secret)
    # 2. Checked against the server's sessions on every run: a logout or a removed account ends it at once.
    found = accounts.session_user(token) if token else None
    if found is None:
        st.session_state.pop(_TOKEN, None)
        st.session_state.pop(_COOKIE, None)
        st.session_state.pop(USER_KEY, None)
        logged_out = bool(st.session_state.pop(_CLEAR, False))
        _login_page(secret, clear_cookie=logged_out or bool(cookie))  # a stale or forged cookie goes too
    st.session_state[_TOKEN] = token
    _sidebar(found, _log_out)
    if _COOKIE in st.session_state:  # drawn on every run of this session: a late first render still sets it
        with st.sidebar:
            _cookie_script(st.session_state[_COOKIE])
    return found


def client_address() -> str:
    """The visitor's address for the log, or "" when unknown. A connection from this machine (a proxy in front,
    or a local browser) has none of its own: then the last address in ``X-Forwarded-For``, the one the proxy saw
    (earlier ones come from the browser and can be anything)."""
    if st.context.ip_address:
        return st.context.ip_address
    hops = [h.strip() for h in (st.context.headers.get("X-Forwarded-For") or "").split(",") if h.strip()]
    return hops[-1] if hops else ""


def _login_page(secret: str, *, clear_cookie: bool) -> NoReturn:
    """The login form, drawn instead of the app; stops the script (a successful login reruns it)."""
    st.title("SynthLab")
    if clear_cookie:
        _cookie_script(None)
    with st.form("login"):
        name = st.text_input("Username", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            found = accounts.check_password(name.strip(), password, client=client_address())
        except AccountError as err:
            st.error(str(err))
        else:
            token = accounts.start_session(found)
            st.session_state[_TOKEN] = token
            st.session_state[_COOKIE] = accounts.sign_token(token, secret)
            st.rerun()
    if not accounts.list_users():
        st.info("There are no accounts yet: on the server, run `python -m engine users add NAME --admin`.")
    st.stop()


def _log_out() -> None:
    token = st.session_state.pop(_TOKEN, None)
    if token:
        accounts.end_session(token)
    st.session_state.pop(_COOKIE, None)
    st.session_state.pop(USER_KEY, None)
    st.session_state[_CLEAR] = True


def _cookie_script(value: str | None) -> None:
    """Set (or, for None, remove) the session cookie from the page: Strict same-site, Secure over https."""
    if value is None:
        cookie = f"{accounts.COOKIE_NAME}=; Max-Age=0; Path=/; SameSite=Strict"
    else:
        max_age = int(accounts.session_seconds())
        cookie = f"{accounts.COOKIE_NAME}={value}; Max-Age={max_age}; Path=/; SameSite=Strict"
    script = f"document.cookie = {json.dumps(cookie)} + (location.protocol === 'https:' ? '; Secure' : '');"
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True)


# oidc mode ------------------------------------------------------------------------------------------------


def _oidc_gate(admins: frozenset[str]) -> User:
    try:
        auth = st.secrets.get("auth")
    except FileNotFoundError:
        auth = None
    if not isinstance(auth, Mapping):
        raise AccountError(
            "oidc mode needs an [auth] section in .streamlit/secrets.toml (redirect_uri, cookie_secret, "
            "client_id, client_secret, server_metadata_url); see docs/accounts.md"
        )
    claims = st.user.to_dict()
    if not claims.get("is_logged_in"):  # .get: st.user has no is_logged_in where Streamlit sees no [auth]
        st.title("SynthLab")
        providers = [key for key, value in auth.items() if isinstance(value, Mapping)]  # [auth.NAME] tables
        if not providers and st.button("Log in", type="primary"):
            st.login()
        for provider in providers:
            if st.button(f"Log in with {provider}", key=f"auth_login_{provider}"):
                st.login(provider)
        st.stop()
    found = accounts.oidc_user(claims, admins)
    _sidebar(found, st.logout)
    return found
