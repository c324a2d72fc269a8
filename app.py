"""SynthLab entry point: page config, navigation over app_pages/, and the shared sidebar.

The page files live in ``app_pages/``, not ``pages/``: Streamlit 1.67 treats a folder named ``pages``
as a legacy multipage app until some session has called ``st.navigation``, so a first visit straight
to a page URL (a bookmark, a reload after a server restart) would run that page without this file.

Run with ``make run`` (``python -m ui.serve``, which imports the lab's modules before the first visitor, or
``streamlit run app.py``). Pages are thin; the work is in ``engine/``.
"""

import logging

import streamlit as st

from engine import accounts, disk, heartbeat, owners, store
from ui.auth import gate
from ui.jobs_panel import get_runner, owner_token
from ui.state import current_dataset, describe

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
st.set_page_config(page_title="SynthLab", page_icon=":material/science:", layout="wide")
try:
    store.home()  # checked once per process: a workspace other users could write into is refused in one line
except disk.WorkspaceNotPrivate as err:  # the fix names server folders: for the server's log, not for visitors
    logging.getLogger("synthlab").error("%s", err)
    st.error(disk.NOT_PRIVATE_NOTICE)
    st.stop()
get_runner()  # the first session after a start marks runs left running by a stopped process as interrupted
if (error := heartbeat.write_error()) is not None and disk.is_full(error):  # what is stored still shows
    st.warning(disk.full_notice(store.home()))
gate()  # who this session is (docs/accounts.md); draws the login page and stops until someone logs in
owner_token()  # the engine acts as that user for this page run: what it lists and changes is checked against them

PAGES = [
    st.Page("app_pages/dataset.py", title="Dataset", icon=":material/dataset:", default=True),
    st.Page("app_pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
    st.Page("app_pages/preprocess.py", title="Preprocess preview", icon=":material/crop:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/explain.py", title="Explain", icon=":material/visibility:"),
]
if accounts.auth_mode() != "none" and owners.current().admin:  # a shared server: its admins see every user's work
    PAGES.append(st.Page("app_pages/server.py", title="Server", icon=":material/admin_panel_settings:"))
navigation = st.navigation(PAGES)
navigation.run()

# Drawn after the page, so it shows what the page just loaded without a rerun.
with st.sidebar:
    st.markdown("**SynthLab** · does synthetic data help my classifier?")
    dataset = current_dataset()
    if dataset is not None:
        st.caption(describe(dataset))
