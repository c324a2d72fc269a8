"""The Dataset page's clean-up panel: what takes space in the workspace (uploads, decoded datasets, synthetic
sets, generators), and deleting it item by item. Listing and deleting are :mod:`engine.cleanup`'s; this only
draws them and reports each refusal in one line."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from engine import cleanup, owners, store

KIND_LABELS = {"upload": "upload", "cache": "decoded dataset", "set": "synthetic set", "generator": "generator"}
LOW_SPACE = 2**30  # below this many free bytes the panel warns


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else ""


def _delete_picked() -> None:
    """The Delete button's callback: runs before the page, so the picked list can be emptied here."""
    problems = []
    deleted = 0
    for choice in st.session_state.get("cleanup_pick", []):
        kind, _, item_id = str(choice).partition(":")
        try:
            cleanup.delete(kind, item_id)
            deleted += 1
        except (OSError, ValueError) as err:  # another user's item, a generator training now, a disk error
            problems.append(str(err))
    st.session_state["cleanup_pick"] = []
    st.session_state["cleanup_result"] = (deleted, problems)


def cleanup_panel(label: str) -> None:
    """An expander named ``label`` that, once opened, lists the workspace's items and deletes the chosen ones.

    Its content runs only while it is open: listing walks the workspace, which every run of the Dataset page
    would otherwise pay for.
    """
    with st.expander(label, key="cleanup_open", on_change="rerun") as box:
        if box.open:
            _panel()


def _panel() -> None:
    """Free space, a table of the user's items (every user's for an admin), and a delete action per item."""
    free = cleanup.free_bytes()
    if free is not None:
        line = f"{free / 2**30:,.2f} GiB free on the disk holding the workspace."
        (st.warning if free < LOW_SPACE else st.caption)(line)
    deleted, problems = st.session_state.pop("cleanup_result", (0, []))
    if deleted:
        st.success(f"{deleted} item(s) deleted.")
    for problem in problems:
        st.error(problem)
    items = cleanup.list_items()
    if not items:
        st.caption("No uploads, decoded datasets, synthetic sets or generators of yours are stored.")
    else:
        table = pd.DataFrame(
            {
                "kind": [KIND_LABELS[i.kind] for i in items],
                "name": [i.name for i in items],
                "owner": [i.owner for i in items],
                "MiB": [round(i.size / 2**20, 2) for i in items],
                "last used": [_when(i.last_used) for i in items],
            }
        )
        st.dataframe(table, hide_index=True, key="cleanup_table")
        labels = {f"{i.kind}:{i.id}": f"{KIND_LABELS[i.kind]}: {i.name} ({_size(i.size)}, {i.owner})" for i in items}
        st.multiselect(
            "Items to delete",
            options=list(labels),
            format_func=lambda key: labels.get(key, key),
            key="cleanup_pick",
            help="A decoded dataset is decoded again at its next load; uploads, sets and generators are gone for good.",
        )
        st.button("Delete the chosen items", key="cleanup_delete", on_click=_delete_picked, type="primary")
    admin = owners.current().admin
    st.caption(
        f"The decode cache takes {store.cache_size_bytes() / 2**20:,.1f} MiB, shared by everyone who loads the "
        "same data; entries are never evicted."
    )
    if st.button("Clear the decode cache" if admin else "Clear my entries of the decode cache", key="clear_cache"):
        try:
            cleared = store.clear_cache()
        except OSError as err:
            st.error(str(err))
        else:
            st.toast(f"{cleared:,} entries cleared: the next load of those datasets decodes them again.")
