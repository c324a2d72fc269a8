"""``python -m ui.serve``: the lab's modules imported before the server starts, then ``streamlit run app.py``."""

from __future__ import annotations

import sys

import pytest

from ui import serve


def test_preload_imports_every_ui_module_and_with_them_the_engine_and_torch() -> None:
    names = serve.preload()
    assert {"ui.figures", "ui.jobs_panel", "ui.compare_views", "ui.auth"} <= set(names)
    assert "ui.serve" not in names
    assert all(name in sys.modules for name in names)
    assert {"torch", "plotly", "engine.experiments"} <= set(sys.modules)


def test_main_runs_streamlit_run_app_py_with_the_options_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.web import cli

    loaded: list[str] = []
    seen: list[list[str]] = []

    def fake_preload() -> list[str]:
        loaded.append("ui.figures")
        return loaded

    def fake_main(prog_name: str) -> int:
        assert loaded, "the server started before the modules were imported"
        seen.append(list(sys.argv))
        return 0

    monkeypatch.setattr(serve, "preload", fake_preload)
    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(sys, "argv", ["serve"])
    with pytest.raises(SystemExit) as stop:
        serve.main(["--server.port", "8600", "--server.headless", "true"])
    assert stop.value.code == 0
    assert seen == [["streamlit", "run", "app.py", "--server.port", "8600", "--server.headless", "true"]]
