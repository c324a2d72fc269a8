"""The app on an unsafe workspace and on a full disk, and the Dataset page's clean-up panel (AppTest)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine import disk, store
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from tests.conftest import ROOT, store_images_as_set
from ui.jobs_panel import get_runner

CLEAN_UP = "Clean up: uploads, decoded datasets, synthetic sets, generators"


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)


def test_the_clean_up_panel_lists_and_deletes_an_upload() -> None:
    upload = store.save_upload("pets.zip", b"PK" * 100)
    at = app().run()
    assert not at.exception
    assert CLEAN_UP in [e.label for e in at.expander]
    assert "cleanup_pick" not in [m.key for m in at.multiselect]  # closed: nothing listed, no workspace walk
    at.session_state["cleanup_open"] = True
    at.run()
    table = at.dataframe[-1].value
    assert "pets.zip" in list(table["name"]) and "decoded dataset" in list(table["kind"])
    choice = f"upload:{upload.parent.name}/{upload.name}"
    assert "upload: pets.zip (0.0 MiB, local)" in at.multiselect(key="cleanup_pick").options
    at.multiselect(key="cleanup_pick").set_value([choice]).run()
    at.button(key="cleanup_delete").click().run()
    assert not at.exception
    assert "1 item(s) deleted." in [s.value for s in at.success]
    assert not upload.exists()
    assert "pets.zip" not in list(at.dataframe[-1].value["name"])


def test_a_workspace_others_can_write_into_stops_the_app_and_logs_the_fix(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.mkdir(mode=0o777)
    workspace.chmod(0o777)
    at = app().run()
    assert not at.exception
    assert [e.value for e in at.error] == [disk.NOT_PRIVATE_NOTICE]
    assert str(workspace) not in at.error[0].value  # visitors are not shown the server's folders
    assert any(f"run `chmod -R go-w {workspace}`" in r.getMessage() for r in caplog.records)  # the admin's log is
    assert not at.title  # no page ran


def test_the_app_starts_on_a_full_disk_and_shows_earlier_work(monkeypatch: pytest.MonkeyPatch) -> None:
    digits = build_dataset(DatasetConfig())
    store_images_as_set(digits, np.zeros((2, 1, 8, 8), np.uint8), [0, 1], name="earlier-set")

    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_index(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.os, "fsync", enospc)
    monkeypatch.setattr(diskcache.Cache, "__init__", full_index)
    get_runner.clear()  # as after a server restart: starting the runner writes this process's heartbeat
    at = app()
    at.session_state["cleanup_open"] = True  # the clean-up panel open, to see the earlier set listed
    at.run()
    assert not at.exception
    notice = at.warning[0].value
    assert notice.startswith("the disk holding the workspace is full (") and "\n" not in notice
    assert notice.endswith(
        "MiB free): what is stored still shows, but nothing new can be saved; free space on that disk, or delete "
        "uploads, decoded datasets, synthetic sets or generators you no longer need on the Dataset page (Clean up)"
    )
    assert at.title[0].value == "Dataset"
    assert list(at.dataframe[0].value["class"]) == [str(i) for i in range(10)]  # digits, read from the cache
    assert "earlier-set" in list(at.dataframe[-1].value["name"])
    for page in ("app_pages/train.py", "app_pages/generate.py"):  # pages with a job panel open as well
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.warning[0].value.startswith("the disk holding the workspace is full (")
