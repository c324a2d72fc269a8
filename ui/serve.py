"""Start the app's server with the lab's modules already imported: ``python -m ui.serve [streamlit options]``.

``streamlit run app.py`` imports nothing until the first visitor's page runs, so after every start that
first visitor waits for torch, scikit-learn, plotly and the lab's own modules to be imported (about 5 s on a
2-core machine), and everyone who arrives meanwhile waits with them. This imports them first and then runs
``streamlit run app.py`` in the same process, where the page's imports find them loaded: the server answers
its health check only once they are. ``make run`` and the deploy guide's service start the app this way; the
options are those of ``streamlit run``.

It also sends each browser its page's messages in batches (:func:`batch_messages`): Streamlit sends every
element as soon as the page's script makes it, and the browser draws the whole page again for each one that
arrives on its own, so a page whose script runs slowly (a busy server) costs the browser several times
more than the same page sent at once.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import time

import ui

SEND_ENV = "SYNTHLAB_SEND_EVERY_MS"
SEND_EVERY_MS = 100  # default: at most 0.1 s more before a page's last elements leave the server
SEND_RANGE_MS = (5, 1000)  # 5 ms is Streamlit's own pace
PAUSE_NAME = "MESSAGE_FLUSH_INTERVAL_SECS"  # Streamlit's pause after each send, read by its send loop every round


def send_every_s() -> float:
    """Seconds between two sends of the messages waiting for the browsers: ``SYNTHLAB_SEND_EVERY_MS``, else
    :data:`SEND_EVERY_MS`. A value that is not a whole number in :data:`SEND_RANGE_MS` stops the start with
    a message naming the setting, its value and what is accepted."""
    raw = os.environ.get(SEND_ENV, "").strip()
    if not raw:
        return SEND_EVERY_MS / 1000
    low, high = SEND_RANGE_MS
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise SystemExit(
            f"the server setting {SEND_ENV}={raw!r} is not accepted: expected a whole number of milliseconds "
            f"from {low} to {high}"
        )
    return int(raw) / 1000


def batch_messages(seconds: float) -> bool:
    """Let the server's send loop wait ``seconds`` after each send, so that what a page's script makes meanwhile
    leaves in one batch; False (and a warning in the log) where this Streamlit has no such pause to set.

    Streamlit's loop sends whatever is waiting at once when it has been idle, then pauses 5 ms before the next
    send. The browser draws the page again for each batch it receives, so a script whose elements come out
    over a second (a page run on a busy server) had it draw the page tens of times.
    ``python bench/send_batches.py --pauses-ms 5,50,100,250`` (a page of 60 paragraphs and 20 number inputs
    whose script takes 1.2 s, quiet 2-core machine): median browser CPU per visit 1.24 CPU-s with 5 ms, 0.96
    with 50 ms, 0.75 with 100 ms, 0.63 with 250 ms; the same page made at once cost 0.36-0.39 with each, and
    was idle 0.27, 0.28, 0.30 and 0.48 s after the click. 100 ms keeps quick pages quick.

    ``st.switch_page`` keeps its own copy of the pause (it waits two pauses so that its query parameters are
    sent before the rerun clears what is waiting): it is set too."""
    from streamlit.commands import execution_control
    from streamlit.runtime import runtime

    if not hasattr(runtime, PAUSE_NAME):
        logging.getLogger("synthlab").warning("this Streamlit has no send pause to set: messages go one by one")
        return False
    for module in (runtime, execution_control):
        if hasattr(module, PAUSE_NAME):
            setattr(module, PAUSE_NAME, seconds)
    return True


def preload() -> list[str]:
    """Import every module of ``ui`` (and so the engine modules, torch and plotly they use); their names."""
    names = [f"ui.{m.name}" for m in pkgutil.iter_modules(ui.__path__) if m.name != "serve"]
    # Streamlit checks each cached function's settings when it is defined, and says in a warning that no
    # server runs yet; the cache itself is chosen at the first call, inside the server, as usual.
    from streamlit.runtime.caching import cache_data_api  # its logger is set up on import: before we lower it

    quiet = logging.getLogger(cache_data_api.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        quiet.setLevel(level)
    return names


def settings_errors() -> list[str]:
    """What is wrong with the lab's server settings (docs/settings.md), one sentence each; empty when all are
    accepted. Each is otherwise read only when a page or a job first needs it, after the server has answered
    its health check: a typing slip in a service file would show as an error on a page, or not at all."""
    from engine import accounts, archives, jobs, sources, threads

    def ray_address() -> None:  # checked only for the ray runner, whose module needs the ray package
        try:
            if jobs.runner_kind() != "ray":
                return
        except (ValueError, RuntimeError):
            return  # the runner's own check says why
        from engine import ray_backend

        ray_backend.check_address(os.environ.get(ray_backend.ADDRESS_ENV, "").strip())

    checks = (
        accounts.auth_mode,
        accounts.session_seconds,
        threads.total_threads,
        sources.max_decodes,
        jobs.runner_kind,
        ray_address,
        lambda: archives.Limits().budget_for(0),
        lambda: archives.Limits().ratio(),
    )
    errors = []
    for check in checks:
        try:
            check()
        except Exception as err:  # each setting's own error, whatever its type: its message names the fix
            errors.append(str(err))
    return errors


def prepare() -> list[str]:
    """What the server needs before Streamlit starts: the settings checked (:func:`send_every_s`,
    :func:`settings_errors`), the send pause set (:func:`batch_messages`) and every ``ui`` module imported
    (:func:`preload`); the modules' names. A setting that is not accepted stops the start with its message."""
    every = send_every_s()  # a bad setting stops the start before the slow imports
    names = preload()
    if errors := settings_errors():
        raise SystemExit("SynthLab: not started: " + "; ".join(errors))
    mark_left_work()
    batch_messages(every)
    return names


def mark_left_work() -> list[str]:
    """Runs and generator trainings that a stopped server or CLI left queued or running, marked interrupted at the
    start, not only when the first page opens (until then ``python -m engine runs`` would list them as running);
    the ids of the runs marked. A workspace that cannot be read is left to the first page, which explains it."""
    from engine import runs

    try:
        return runs.mark_interrupted() + runs.sweep()
    except Exception as err:  # e.g. a workspace others may write into: the page says why in one line
        logging.getLogger("synthlab").warning("runs left by a stopped process not checked at the start: %s", err)
        return []


def main(argv: list[str] | None = None) -> None:
    from streamlit.web import cli

    start = time.perf_counter()
    names = prepare()
    print(f"SynthLab: {len(names)} modules imported in {time.perf_counter() - start:.1f} s", flush=True)
    sys.argv = ["streamlit", "run", "app.py", *(sys.argv[1:] if argv is None else argv)]
    sys.exit(cli.main(prog_name="streamlit"))


if __name__ == "__main__":
    main()
