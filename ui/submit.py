"""Starting work from a page: one place that turns a refused start (a limit reached) into one clear line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from engine.jobs import JobError
from engine.usage import DiskLimitReached

REFUSED = (JobError, DiskLimitReached)  # too many jobs queued, a job that is not yours, no disk space left to you


def started(call: Callable[[], Any], message: str) -> bool:
    """Run ``call`` (a submit); on success show ``message`` as a toast, else the reason nothing started."""
    try:
        call()
    except REFUSED as err:
        st.error(f"Nothing started: {err}")
        return False
    st.toast(message)
    return True
