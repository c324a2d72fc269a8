"""``python -m ui.serve``: the send pause set and the lab's modules imported before the server starts, then
``streamlit run app.py``."""

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

    paused: list[float] = []
    monkeypatch.setattr(serve, "preload", fake_preload)
    monkeypatch.setattr(serve, "batch_messages", lambda seconds: paused.append(seconds) or True)
    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(sys, "argv", ["serve"])
    monkeypatch.setenv(serve.SEND_ENV, "150")
    with pytest.raises(SystemExit) as stop:
        serve.main(["--server.port", "8600", "--server.headless", "true"])
    assert stop.value.code == 0
    assert seen == [["streamlit", "run", "app.py", "--server.port", "8600", "--server.headless", "true"]]
    assert paused == [0.15]


def test_the_send_pause_is_100_ms_unless_set_and_a_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(serve.SEND_ENV, raising=False)
    assert serve.send_every_s() == 0.1
    monkeypatch.setenv(serve.SEND_ENV, " 250 ")
    assert serve.send_every_s() == 0.25
    for bad in ("0", "4", "1001", "1.5", "fast", "-20", "1_000", "²"):
        monkeypatch.setenv(serve.SEND_ENV, bad)
        with pytest.raises(SystemExit) as stop:
            serve.send_every_s()
        assert str(stop.value) == (
            f"the server setting SYNTHLAB_SEND_EVERY_MS={bad!r} is not accepted: expected a whole number of "
            "milliseconds from 5 to 1000"
        )


def test_batch_messages_sets_the_pause_that_streamlits_send_loop_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from streamlit.runtime import runtime

    # The loop looks the pause up in its module on every round: a Streamlit that stopped doing so would
    # keep sending one message at a time, whatever this sets.
    assert "await asyncio.sleep(MESSAGE_FLUSH_INTERVAL_SECS)" in inspect.getsource(runtime.Runtime._loop_coroutine)
    from streamlit.commands import execution_control

    monkeypatch.setattr(runtime, "MESSAGE_FLUSH_INTERVAL_SECS", 0.005)
    monkeypatch.setattr(execution_control, "MESSAGE_FLUSH_INTERVAL_SECS", 0.005)
    assert serve.batch_messages(0.1) is True
    assert runtime.MESSAGE_FLUSH_INTERVAL_SECS == 0.1
    # st.switch_page waits two pauses for its query parameters to leave: its own copy follows.
    assert execution_control.MESSAGE_FLUSH_INTERVAL_SECS == 0.1


def test_batch_messages_warns_where_streamlit_has_no_pause(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamlit.runtime import runtime

    monkeypatch.delattr(runtime, "MESSAGE_FLUSH_INTERVAL_SECS")
    assert serve.batch_messages(0.1) is False
    assert "no send pause to set" in caplog.text


def test_a_bad_send_pause_stops_the_start_before_anything_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr(serve, "preload", lambda: imported.append("ui") or imported)
    monkeypatch.setenv(serve.SEND_ENV, "0")
    with pytest.raises(SystemExit, match="SYNTHLAB_SEND_EVERY_MS='0' is not accepted"):
        serve.main([])
    assert imported == []


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("SYNTHLAB_AUTH", "user", "SYNTHLAB_AUTH='user' is not accepted: expected one of none, users, oidc"),
        ("SYNTHLAB_THREADS", "abc", "SYNTHLAB_THREADS='abc' is not accepted: expected a whole number of threads"),
        ("SYNTHLAB_RUNNER", "proc", "SYNTHLAB_RUNNER='proc' is not accepted: expected one of threads, ray"),
        ("SYNTHLAB_SESSION_DAYS", "0", "SYNTHLAB_SESSION_DAYS='0' is not accepted"),
        ("SYNTHLAB_MAX_DECODES", "two", "SYNTHLAB_MAX_DECODES='two' is not accepted"),
        ("SYNTHLAB_MAX_RATIO", "0.5", "SYNTHLAB_MAX_RATIO='0.5' is not accepted"),
        ("SYNTHLAB_DECODE_BUDGET_MB", "lots", "SYNTHLAB_DECODE_BUDGET_MB='lots' is not accepted"),
    ],
)
def test_a_bad_server_setting_stops_the_start_with_its_name_value_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    from streamlit.web import cli

    started: list[str] = []
    monkeypatch.setattr(serve, "preload", lambda: [])
    monkeypatch.setattr(cli, "main", lambda prog_name: started.append(prog_name) or 0)
    monkeypatch.setattr(sys, "argv", ["serve"])
    assert serve.settings_errors() == []
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match="SynthLab: not started: .*" + said.replace("(", r"\(")):
        serve.main([])
    assert started == []


def test_the_start_marks_runs_a_stopped_process_left_running_before_any_page_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine import runs
    from engine.config import DatasetConfig

    runs.save_record(runs.RunRecord("orphan", runs.RunConfig(DatasetConfig()), "running", pid=2**22 + 4321))
    monkeypatch.setattr(serve, "preload", lambda: [])
    monkeypatch.setattr(serve, "batch_messages", lambda seconds: True)
    serve.prepare()
    record = runs.load_record("orphan")
    assert record.status == "interrupted" and record.error


def test_the_cluster_address_is_checked_when_the_ray_runner_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("SYNTHLAB_RAY_ADDRESS", "nowhere")
    assert serve.settings_errors() == []  # the thread runner does not read it
    monkeypatch.setenv("SYNTHLAB_RUNNER", "ray")
    assert serve.settings_errors() == [
        "SYNTHLAB_RAY_ADDRESS='nowhere' is not accepted: expected auto, local, ray://host:10001 or host:6379 "
        "(the head node's address)"
    ]
