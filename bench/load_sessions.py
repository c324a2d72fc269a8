"""Benchmark: N people on one SynthLab server at once: page loads, the job queue, and who sees what.

Starts its own server (a free port, a temporary workspace, ``SYNTHLAB_AUTH`` from --auth) and opens N
browser contexts in one Chromium (Playwright, Debian's /usr/bin/chromium). Each context is one person:
it logs in (--auth users: one account each, made with ``python -m engine users add``), goes to Train,
starts a small experiment under its own name (Max epochs and Seeds lowered through the form), then keeps
visiting Dataset, Compare and Train until its runs have finished, pausing before each page about --think
seconds (each pause drawn evenly from think x (1 - jitter) to think x (1 + jitter), so that the people do not
click in step for minutes, as no real class does; --jitter 0 keeps them in step). Measured:

- page load, timed in the page as its person waits for it: from the click on a page's link in the sidebar
  (the click event's own time) to the start of the frame after the first one in which the page's title is in
  place, Streamlit reports the script idle and every chart, data frame and picture on the page is in place
  (the browser draws charts after the script ends; counting them to the page that sent them keeps that work
  out of the next page's time). A script in each page checks this at every frame (WATCH). p50 and p95 over
  every visit, for each page, and apart for a person's first visit of each page (the page's code is new to that
  browser) and the later ones; the same loads until the start of the complete frame, and until the script was idle,
  are printed beside them;
- the same loads as this script saw them, as it timed them until 2026-12-01: from before its click call
  until its waits returned. Playwright's click first checks the link over several round trips, and its waits
  for the title and the idle script poll (again after 20, 50, 100, 100 and then every 500 ms, each check a
  round trip to the browser), so under load this adds time no person waits for; both delays are printed
  apart (the click call until the click reached the page; the start of the complete frame until the waits
  returned);
- first load: from the address typed until the Dataset page is drawn, login included, as this script saw it;
- server-side rerun: the time of each script run inside the server (the benchmark's server wraps
  Streamlit's script runner with a timer), full reruns and fragment reruns (the job panel) apart;
- jobs: how many runs finished, failed or were cut short (read from the workspace), how many a person
  saw waiting in the queue ("queued, place N" on Train), and the time from the first Start until every
  run had ended;
- leaks (--auth users): another person's experiment name in a session's Train page or in the
  Compare page's experiment list. Without accounts everyone shares one lab, so names are only counted;
- CPU while the people clicked: the seconds used by the server (its pages and its jobs), the browsers,
  Playwright's driver and this script, the machine's idle time, and the time a virtual machine's host gave
  to others (read from /proc).

The machine is measured as it is: the load average before is printed, and the seconds one core takes for
a fixed piece of Python work (on one evening, the eight first loads took 32 s in one run and 42-43 s in
runs of the same code later that night, the host taking at most 0.31 CPU-s of a run); other work on it slows
everything.

Usage: python bench/load_sessions.py [--sessions 8] [--auth none|users] [--epochs 2] [--seeds 1]
       [--think 1.0] [--jitter 0.5] [--timeout 900] [--json out.json]
       python bench/load_sessions.py --by-page out.json   (a saved run's page loads, p50 and p95 by page)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"][data-test-connection-state="CONNECTED"]'
# True once every chart, table and picture on the page has been drawn: Streamlit reports the script idle
# before the browser has drawn what it sent (plotly charts and data frames load their code and draw later).
DRAWN = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return false;
  const every = (sel, inner) => [...main.querySelectorAll(sel)].every((e) => e.querySelector(inner));
  return every('[data-testid="stPlotlyChart"]', '.main-svg')
    && every('[data-testid="stDataFrame"]', 'canvas')
    && every('[data-testid="stVegaLiteChart"]', 'canvas, svg')
    && [...main.querySelectorAll('img')].every((img) => img.complete)
    && !main.querySelector('[data-testid="stSkeleton"]');
}"""
# The in-page timer of a page load (the module's docstring says why): from the click event's own time to the start
# of the frame after the first one where the page's title is in place, the script is idle and DRAWN holds (that
# frame's own start is kept as ``complete``). Each visit names its page and a token (``__synthlabExpect``), so a
# load is never read for the wrong click. Added to every page of a context before Streamlit's code; the first load
# is not watched (its figure is this script's own: a login may load the page anew).
WATCH = """(() => {
  const IDLE = IDLE_SELECTOR;
  const drawn = DRAWN_CHECK;
  const state = (name) => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main || !document.querySelector(IDLE)) return 0;
    if (![...main.querySelectorAll('h1')].some((h) => h.textContent.trim() === name)) return 0;
    return drawn() ? 2 : 1;
  };
  const watch = (name, token, start) => {
    const load = { name, token, start, idle: 0, complete: 0, drawn: 0, origin: performance.timeOrigin };
    window.__synthlabLoad = load;
    const tick = () => {
      if (window.__synthlabLoad !== load) return;  // another click began another load
      const now = performance.now();
      if (load.complete) { load.drawn = now; return; }  // the frame after the complete one has begun
      const seen = state(name);
      if (seen >= 1 && !load.idle) load.idle = now;
      if (seen === 2) load.complete = now;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  };
  document.addEventListener('click', (event) => {
    const link = event.target instanceof Element && event.target.closest('[data-testid="stSidebarNav"] a');
    const expect = window.__synthlabExpect;
    if (link && expect) watch(expect.name, expect.token, event.timeStamp);
  }, true);
})();""".replace("IDLE_SELECTOR", json.dumps(IDLE)).replace("DRAWN_CHECK", DRAWN)
FINISHED_TEXT = "All runs of this experiment have finished"
QUEUED = re.compile(r"queued, place \d+")
VISITS = ("Dataset", "Compare", "Train")
SERVE = "--serve-timed"  # internal: run the app's server with a timer around each script run
BEGAN = time.perf_counter()  # set again when the sessions start
BEGAN_UNIX = time.time()  # the same moment as Unix time (the server's rerun log uses it)


@dataclass
class Load:
    """One page load. The first load ("first load": the address typed, login included) has no in-page figures,
    since its login may load the page anew; it is timed by this script only."""

    page: str
    began_s: float  # when this script began the load (before its click call), seconds since the sessions began
    seen_s: float  # as this script saw it: from before its click call until its waits returned
    seen_idle_s: float  # the same, until its wait for the idle script returned
    in_page_s: float = math.nan  # in the page (WATCH): the click event -> the frame after the complete one began
    in_page_complete_s: float = math.nan  # the same, until the start of the frame with the page complete
    in_page_idle_s: float = math.nan  # the same, until the first frame with the title in place and the script idle
    click_delay_s: float = math.nan  # from before this script's click call until the click event in the page
    notice_delay_s: float = math.nan  # from the complete frame's start (which its waits see) until they returned


@dataclass
class Session:
    """What one person did and saw."""

    user: str
    experiment_name: str
    loads: list[Load] = field(default_factory=list)
    started_at: float = 0.0  # time.monotonic() of the Start click
    finished_seen_at: float = 0.0  # when Train first said every run had finished
    most_queued_seen: int = 0  # the most "queued, place N" lines on Train at one visit
    foreign_names: set[str] = field(default_factory=set)  # other people's experiment names seen
    error_boxes: int = 0  # red boxes or exceptions seen on any visit
    page_errors: list[str] = field(default_factory=list)  # JavaScript errors in the browser
    problem: str = ""  # why this session stopped early, if it did


# 1. The server, with a timer around each script run.


def serve_timed(timing_file: str, streamlit_args: list[str]) -> None:
    """Run the app's server as ``make run`` does (``python -m ui.serve``: the lab's modules imported first, then
    ``streamlit run app.py``) in this process, appending ``kind<TAB>seconds<TAB>start (Unix time)`` per script run
    to a file."""
    # The benchmark's own server process, not the engine: the one place outside the app that imports Streamlit.
    from streamlit.runtime.scriptrunner import script_runner  # noqa: TID251
    from streamlit.web import cli  # noqa: TID251

    from ui.serve import prepare

    original = script_runner.ScriptRunner._run_script
    lock = threading.Lock()

    def timed(self: Any, rerun_data: Any) -> None:
        kind = "fragment" if rerun_data.fragment_id_queue else "full"
        began, start = time.time(), time.perf_counter()
        try:
            original(self, rerun_data)
        finally:
            with lock, open(timing_file, "a") as out:
                out.write(f"{kind}\t{time.perf_counter() - start:.4f}\t{began:.3f}\n")

    script_runner.ScriptRunner._run_script = timed  # type: ignore[method-assign]
    prepare()
    sys.argv = ["streamlit", "run", "app.py", *streamlit_args]
    sys.exit(cli.main(prog_name="streamlit"))


PROBE_TEXT = "10 million additions"


def core_probe() -> float:
    """Seconds one core takes for :data:`PROBE_TEXT` in Python, best of three: how fast the machine is now."""
    times = []
    for _ in range(3):
        start, total = time.perf_counter(), 0
        for i in range(10_000_000):
            total += i
        times.append(time.perf_counter() - start)
    return min(times)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def users_command_exists(env: dict[str, str]) -> bool:
    probe = [sys.executable, "-m", "engine", "users", "--help"]
    return subprocess.run(probe, cwd=ROOT, env=env, capture_output=True).returncode == 0


def add_users(env: dict[str, str], names: list[str]) -> dict[str, str]:
    """One account per session, through the CLI (all at once: the users file is locked per change)."""
    passwords = {name: secrets.token_urlsafe(12) for name in names}
    adding = {}
    for name in names:
        cmd = [sys.executable, "-m", "engine", "users", "add", name, "--password-stdin"]
        adding[name] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    for name, proc in adding.items():
        output, _ = proc.communicate(passwords[name] + "\n")
        if proc.returncode != 0:
            raise SystemExit(f"`python -m engine users add {name} --password-stdin` failed: {output.strip()}")
    return passwords


def start_server(env: dict[str, str], port: int, timing_file: Path, secrets_file: Path, log: Path) -> subprocess.Popen:
    args = ["--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true"]
    args += ["--secrets.files", str(secrets_file)]
    cmd = [sys.executable, str(Path(__file__).resolve()), SERVE, str(timing_file), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


# 2. One person in the browser.


async def idle(page: Any, timeout_ms: float) -> None:
    await page.locator(IDLE).wait_for(state="attached", timeout=timeout_ms)


async def loaded(
    page: Any, session: Session, name: str, start: tuple[float, float], timeout_ms: float, token: str = ""
) -> None:
    """Wait until the script is idle and everything on the page is drawn; note the times, as this script saw
    them and (given the visit's ``token``) as the page did. ``start`` is (``time.perf_counter()``,
    ``time.time()``) before the click call: the second is set beside the page's own clock."""
    await idle(page, timeout_ms)
    until_idle = time.perf_counter() - start[0]
    await page.wait_for_function(DRAWN, timeout=timeout_ms)
    await idle(page, timeout_ms)  # still idle: a live panel may have rerun while the charts were drawn
    returned, returned_unix = time.perf_counter(), time.time()
    load = Load(name, start[0] - BEGAN, returned - start[0], until_idle)
    if token:
        handle = await page.wait_for_function(
            "(token) => { const l = window.__synthlabLoad; return l && l.token === token && l.drawn && l; }",
            arg=token,
            timeout=timeout_ms,
        )
        got = await handle.json_value()  # milliseconds since the page's time origin (a Unix time in ms)
        load.in_page_s = (got["drawn"] - got["start"]) / 1000
        load.in_page_complete_s = (got["complete"] - got["start"]) / 1000
        load.in_page_idle_s = (got["idle"] - got["start"]) / 1000
        load.click_delay_s = (got["origin"] + got["start"]) / 1000 - start[1]
        load.notice_delay_s = returned_unix - (got["origin"] + got["complete"]) / 1000
    session.loads.append(load)


async def visit(page: Any, session: Session, name: str, timeout_ms: float) -> None:
    """Click ``name`` in the sidebar; time it until the page's title and everything on it is drawn."""
    from playwright.async_api import expect

    token = secrets.token_hex(4)  # this visit's load in the page (WATCH), never an earlier one
    await page.evaluate("(expect) => { window.__synthlabExpect = expect; }", {"name": name, "token": token})
    start = time.perf_counter(), time.time()
    await page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible(timeout=timeout_ms)
    await loaded(page, session, name, start, timeout_ms, token)
    session.error_boxes += await page.get_by_test_id("stException").count()
    session.error_boxes += await page.get_by_test_id("stAlertContentError").count()


async def look_at_train(page: Any, session: Session, others: set[str]) -> None:
    session.most_queued_seen = max(session.most_queued_seen, await page.get_by_text(QUEUED).count())
    if not session.finished_seen_at and await page.get_by_text(FINISHED_TEXT).count():
        session.finished_seen_at = time.monotonic()
    text = await page.get_by_test_id("stMain").inner_text()
    session.foreign_names |= {name for name in others if name in text}


async def look_at_compare(page: Any, session: Session, others: set[str]) -> None:
    """Open the Compare page's experiment list and note other people's experiment names in it."""
    box = page.get_by_test_id("stSelectbox").filter(has_text="Experiment")
    if not await box.count():  # no experiment visible yet
        return
    await box.first.click()
    options = " ".join(await page.get_by_role("option").all_inner_texts())
    await page.keyboard.press("Escape")
    session.foreign_names |= {name for name in others if name in options}


async def person(
    browser: Any, url: str, session: Session, password: str, args: argparse.Namespace, others: set[str]
) -> None:
    from playwright.async_api import expect

    timeout_ms = args.step_timeout * 1000
    rng = random.Random(session.user)

    def pause() -> float:  # people do not click in step: each pause is drawn around --think
        return args.think * rng.uniform(1 - args.jitter, 1 + args.jitter)

    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    await context.add_init_script(WATCH)
    page = await context.new_page()
    page.on("pageerror", lambda exc: session.page_errors.append(str(exc)))
    try:
        # 2a. Arrive (and log in).
        start = time.perf_counter(), time.time()
        await page.goto(url, wait_until="domcontentloaded")
        if password:
            await page.get_by_label("Username", exact=True).fill(session.user)
            await page.get_by_label("Password", exact=True).fill(password)
            await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Dataset", exact=True)).to_be_visible(timeout=timeout_ms)
        await loaded(page, session, "first load", start, timeout_ms)
        # 2b. Start a small experiment under this person's own name.
        await asyncio.sleep(pause())
        await visit(page, session, "Train", timeout_ms)
        for label, value in (("Max epochs", args.epochs), ("Seeds", args.seeds)):
            box = page.get_by_role("spinbutton", name=label, exact=True)
            await box.fill(str(value))
            await box.press("Tab")
        await page.get_by_role("textbox", name="Name (optional)").fill(session.experiment_name)
        await page.get_by_role("button", name="Start").click()
        session.started_at = time.monotonic()
        await expect(page.get_by_text(re.compile(r"runs finished"))).to_be_visible(timeout=timeout_ms)
        for _ in range(4):  # the panel redraws while runs go: a few looks before moving on
            await idle(page, timeout_ms)
            await look_at_train(page, session, others)
            await asyncio.sleep(0.5)
        # 2c. Move between pages until this person's runs have finished.
        deadline = time.monotonic() + args.timeout
        while not session.finished_seen_at and time.monotonic() < deadline:
            for name in VISITS:
                await asyncio.sleep(pause())
                await visit(page, session, name, timeout_ms)
                if name == "Train":
                    await look_at_train(page, session, others)
                elif name == "Compare":
                    await look_at_compare(page, session, others)
        if not session.finished_seen_at:
            session.problem = f"runs not finished after {args.timeout:.0f} s"
        await visit(page, session, "Compare", timeout_ms)  # every experiment exists by now
        await look_at_compare(page, session, others)
    except Exception as err:  # one person's failure is a finding, not the end of the benchmark
        session.problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        await context.close()


# 3. The workspace's view of the jobs, polled while the people click.


def job_counts() -> dict[str, int]:
    """Runs per status in the benchmark's workspace (every user's)."""
    from engine import runs

    counts: dict[str, int] = {}
    for record in runs.list_records():
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


async def watch_jobs(expected_experiments: int, stop: asyncio.Event) -> float:
    """Monotonic time at which every run of every expected experiment had ended (0.0 if never)."""
    from engine import experiments, runs

    while not stop.is_set():
        records = await asyncio.to_thread(lambda: (experiments.list_experiments(), runs.list_records()))
        exps, all_runs = records
        if len(exps) >= expected_experiments and all_runs and all(r.status not in runs.ACTIVE for r in all_runs):
            return time.monotonic()
        await asyncio.sleep(0.5)
    return 0.0


# 4. Figures.


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]  # nearest rank


def spread(values: list[float]) -> dict[str, float]:
    values = [v for v in values if not math.isnan(v)]  # a load the page did not time (the first load)
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95)}


def by_page(loads: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 and p95 of the page loads timed in the page, for each page visited (``loads``: Load records as dicts)."""
    return {name: spread([v["in_page_s"] for v in loads if v["page"] == name]) for name in VISITS}


def print_by_page(saved: Path) -> None:
    """The page loads of a run saved with --json, by page: also for files written before this was printed."""
    result = json.loads(saved.read_text())
    loads = [load for p in result["per_session"] for load in p["loads"] if load["in_page_s"] is not None]
    spreads = by_page(loads) | {"every page": spread([v["in_page_s"] for v in loads])}
    print(f"{saved}: page loads timed in the page, p50 / p95 (n)")
    for name, d in spreads.items():
        print(f"  {name}: {d['p50']:.2f} / {d['p95']:.2f} s ({d['n']})")


def no_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by None, for strict JSON (a first load has no in-page times)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value


def rerun_times(timing_file: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"full": [], "fragment": []}
    if timing_file.is_file():
        for line in timing_file.read_text().splitlines():
            kind, seconds, _ = line.split("\t")
            found.setdefault(kind, []).append(float(seconds))
    return found


def summarise(
    people: list[Session], auth: str, note: str, reruns: dict[str, list[float]], counts: dict[str, int], extra: dict
) -> dict[str, Any]:
    visits = [load for p in people for load in p.loads if load.page != "first load"]
    first = [load.seen_s for p in people for load in p.loads if load.page == "first load"]
    opened: list[float] = []  # a person's first visit of a page (its code new to their browser), and the later ones
    again: list[float] = []
    for p in people:
        seen: set[str] = set()
        for load in p.loads:
            if load.page != "first load":
                (again if load.page in seen else opened).append(load.in_page_s)
                seen.add(load.page)
    ended = [p.finished_seen_at - p.started_at for p in people if p.finished_seen_at and p.started_at]
    return {
        "sessions": len(people),
        "auth": auth,
        "note": note,
        "page_load_in_page_s": spread([v.in_page_s for v in visits]),
        "page_load_in_page_complete_s": spread([v.in_page_complete_s for v in visits]),
        "page_load_in_page_until_idle_s": spread([v.in_page_idle_s for v in visits]),
        "page_load_in_page_first_visit_s": spread(opened),
        "page_load_in_page_later_visits_s": spread(again),
        "page_load_in_page_p50_by_page_s": {
            name: percentile([v.in_page_s for v in visits if v.page == name], 50) for name in VISITS
        },
        "page_load_in_page_by_page_s": by_page([asdict(v) for v in visits]),
        "page_load_s": spread([v.seen_s for v in visits]),  # as this script saw them
        "page_load_until_idle_s": spread([v.seen_idle_s for v in visits]),
        "click_delay_s": spread([v.click_delay_s for v in visits]),
        "notice_delay_s": spread([v.notice_delay_s for v in visits]),
        # the two clocks disagree if a delay is below zero (the click before the call, the load after the return)
        "clock_disagreements": sum(v.click_delay_s < 0 or v.notice_delay_s < 0 for v in visits),
        "first_load_s": spread(first),
        "rerun_s": {kind: spread(v) for kind, v in reruns.items()},
        "runs_by_status": counts,
        "sessions_that_saw_a_queue": sum(p.most_queued_seen > 0 for p in people),
        "runs_seen_queued": sum(p.most_queued_seen for p in people),
        "start_to_seen_finished_s": {"p50": percentile(ended, 50), "max": max(ended, default=float("nan"))},
        "foreign_names_seen": {p.user: sorted(p.foreign_names) for p in people if p.foreign_names},
        "error_boxes": sum(p.error_boxes for p in people),
        "page_errors": sum(len(p.page_errors) for p in people),
        "problems": {p.user: p.problem for p in people if p.problem},
        **extra,
        "per_session": [{**asdict(p), "foreign_names": sorted(p.foreign_names)} for p in people],
    }


def print_summary(result: dict[str, Any]) -> None:
    def fig(d: dict[str, float]) -> str:
        return f"p50 {d['p50']:.2f} s · p95 {d['p95']:.2f} s (n={d['n']})"

    finished = sum(v for k, v in result["runs_by_status"].items() if k == "done")
    failed = sum(v for k, v in result["runs_by_status"].items() if k not in ("done", "queued", "running"))
    leaks = result["foreign_names_seen"]
    if result["auth"] == "users":
        leak_line = f"{sum(len(v) for v in leaks.values())} (" + (", ".join(leaks) or "none") + ")"
    else:
        seen = sum(len(v) for v in leaks.values())
        leak_line = f"not checked without accounts (one shared lab: {seen} other names visible, as expected)"
    reruns = result["rerun_s"]
    lines = [
        f"SynthLab load: {result['sessions']} sessions · auth {result['auth']} · {result['cpus']} CPUs · "
        f"load average before {result['load_before']} · one core: {result['core_probe_s']:.2f} s for {PROBE_TEXT}"
        + (f" · Chromium at nice {result['browser_nice']}" if result.get("browser_nice") else ""),
        *([f"note: {result['note']}"] if result["note"] else []),
        "page load, timed in the page (click on the page's link -> the frame after the one with its title, the "
        f"script idle and every chart, table and picture in place): {fig(result['page_load_in_page_s'])}",
        f"  until the start of the frame with the page complete: {fig(result['page_load_in_page_complete_s'])}",
        "  until the script was idle only (charts maybe not drawn yet): "
        f"{fig(result['page_load_in_page_until_idle_s'])}",
        "  by page: " + " · ".join(f"{k} {fig(v)}" for k, v in result["page_load_in_page_by_page_s"].items()),
        f"  a person's first visit of a page: {fig(result['page_load_in_page_first_visit_s'])} · "
        f"later visits: {fig(result['page_load_in_page_later_visits_s'])}",
        "  as this script saw the same loads (from before its click call, which first checks the link, until its "
        f"polling waits returned): {fig(result['page_load_s'])}; until idle {fig(result['page_load_until_idle_s'])}",
        f"    of which the click call until the click reached the page: {fig(result['click_delay_s'])}; the start "
        f"of the complete frame until this script's waits returned: {fig(result['notice_delay_s'])}"
        + (
            f" · {result['clock_disagreements']} loads where the clocks disagree"
            if result["clock_disagreements"]
            else ""
        ),
        f"first load (address -> Dataset idle and drawn, login included): {fig(result['first_load_s'])}",
        "server-side rerun: full "
        + (fig(reruns["full"]) if reruns["full"] else "not measured")
        + (f" · fragment {fig(reruns['fragment'])}" if reruns.get("fragment") else ""),
        f"runs: {finished} finished, {failed} failed or cut short, of {sum(result['runs_by_status'].values())} "
        f"({result['runs_by_status']})",
        f"queue: {result['runs_seen_queued']} runs seen waiting ('queued, place N') by "
        f"{result['sessions_that_saw_a_queue']} of {result['sessions']} sessions",
        f"first Start -> every run ended: {result['all_runs_ended_s']:.1f} s · per session, Start -> "
        f"'finished' seen: p50 {result['start_to_seen_finished_s']['p50']:.1f} s, "
        f"max {result['start_to_seen_finished_s']['max']:.1f} s",
        f"cross-user leaks: {leak_line}",
        f"error boxes seen: {result['error_boxes']} · browser errors: {result['page_errors']}",
        *[f"problem ({user}): {why}" for user, why in result["problems"].items()],
        f"CPU while the people clicked ({result['cpu_wall_s']:.0f} s x {result['cpus']} cores = "
        f"{result['cpu_wall_s'] * result['cpus']:.0f} CPU-s): "
        + " · ".join(f"{k} {v:.0f}" for k, v in result["cpu_s"].items()),
        f"wall time: {result['wall_s']:.0f} s (accounts and server start: {result['setup_s']:.0f} s)",
    ]
    print("\n".join(lines), flush=True)


# 5. The whole measurement.


def browser_command(nice: int) -> str:
    """Chromium, or with ``nice`` > 0 a wrapper that starts it at that lower CPU priority: on a real server the
    browsers run on the users' own computers, so this keeps the load generator from taking the server's cores."""
    if nice <= 0:
        return CHROMIUM
    wrapper = Path(tempfile.mkdtemp(prefix="synthlab-load-browser-")) / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {nice} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def cpu_now(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server (its pages and its jobs), the browsers, Playwright's driver and this
    script, the machine's idle time and the time a virtual machine's host gave to others (Linux only: /proc)."""
    from browser_cpu import cpu_seconds

    mine = os.times()
    machine = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]  # user nice system idle iowait irq ...
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "server": cpu_seconds(pid=server_pid),
        "browsers": cpu_seconds(b"chromium"),
        "playwright": cpu_seconds(b"run-driver"),
        "benchmark": mine.user + mine.system,
        "idle": (int(machine[3]) + int(machine[4])) / tick,
        "stolen by the host": int(machine[7]) / tick if len(machine) > 7 else 0.0,
    }


async def drive(
    url: str, people: list[Session], passwords: dict[str, str], args: argparse.Namespace, cpu: dict[str, Any]
) -> float:
    """Run every person at once; ``cpu`` gets ``before`` and ``after`` (:func:`cpu_now`) around them."""
    from playwright.async_api import async_playwright

    global BEGAN, BEGAN_UNIX
    BEGAN, BEGAN_UNIX = time.perf_counter(), time.time()
    cpu["before"] = cpu_now(cpu["server_pid"])
    names = {p.experiment_name for p in people}
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_jobs(len(people), stop))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=browser_command(args.browser_nice), args=CHROMIUM_ARGS)
        await asyncio.gather(
            *(person(browser, url, p, passwords.get(p.user, ""), args, names - {p.experiment_name}) for p in people)
        )
        cpu["after"], cpu["wall_s"] = cpu_now(cpu["server_pid"]), time.perf_counter() - BEGAN
        await browser.close()
    try:
        ended = await asyncio.wait_for(asyncio.shield(watcher), timeout=30)
    except TimeoutError:
        stop.set()
        ended = await watcher
    starts = [p.started_at for p in people if p.started_at]
    return ended - min(starts) if ended and starts else float("nan")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == SERVE:
        serve_timed(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="people (browser contexts) at once")
    parser.add_argument("--auth", choices=("none", "users"), default="users", help="SYNTHLAB_AUTH of the server")
    parser.add_argument("--epochs", type=int, default=2, help="Max epochs in each person's experiment")
    parser.add_argument("--seeds", type=int, default=1, help="Seeds in each person's experiment")
    parser.add_argument("--think", type=float, default=1.0, help="seconds a person waits between two pages")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.5,
        help="each pause is drawn evenly from think x (1 - jitter) to think x (1 + jitter); 0: every person in step",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds a person waits for their runs")
    parser.add_argument("--step-timeout", type=float, default=180, help="seconds one page may take to load")
    parser.add_argument(
        "--browser-nice",
        type=int,
        default=0,
        help="run Chromium at this lower CPU priority (e.g. 15): the browsers of a real server are on other computers",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--by-page", type=Path, metavar="JSON", help="only print the page loads by page of a run saved with --json"
    )
    args = parser.parse_args()
    if args.by_page:
        print_by_page(args.by_page)
        return
    if not 0 <= args.jitter <= 1:
        parser.error(f"--jitter {args.jitter} is not accepted: expected a fraction from 0 to 1")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium (make chromium)")

    # 1. A temporary workspace, accounts when asked for and available, the server.
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    core_probe_s = core_probe()
    wall = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="synthlab-load-"))
    home = tmp / "workspace"
    os.environ["SYNTHLAB_HOME"] = str(home)  # this process reads the same workspace to count runs
    auth, note = args.auth, ""
    env = {**os.environ, "SYNTHLAB_HOME": str(home), "SYNTHLAB_AUTH": auth}
    users = [f"bench{i + 1}" for i in range(args.sessions)]
    passwords: dict[str, str] = {}
    if auth == "users" and not users_command_exists(env):
        auth, note = "none", "`python -m engine users` does not exist here: ran without accounts (--auth none)"
        env["SYNTHLAB_AUTH"] = auth
        print(f"note: {note}", flush=True)
    elif auth == "users":
        passwords = add_users(env, users)
    secrets_file = tmp / "secrets.toml"
    secrets_file.write_text(f'[synthlab]\ncookie_secret = "{secrets.token_hex(32)}"\n')
    timing_file, log = tmp / "reruns.tsv", tmp / "server.log"
    port = free_port()
    server = start_server(env, port, timing_file, secrets_file, log)
    setup_s = time.monotonic() - wall
    print(f"accounts and server ready after {setup_s:.0f} s; {args.sessions} sessions start now", flush=True)
    people = [Session(user, f"load-{user}-{secrets.token_hex(3)}") for user in users]
    cpu: dict[str, Any] = {"server_pid": server.pid}
    try:
        # 2. Everyone at once.
        all_ended = asyncio.run(drive(f"http://127.0.0.1:{port}", people, passwords, args, cpu))
    finally:
        server.terminate()
        server.wait(timeout=30)

    # 3. The figures.
    extra = {
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "core_probe_s": core_probe_s,
        "all_runs_ended_s": all_ended,
        "began_unix": BEGAN_UNIX,
        "cpu_s": {k: cpu["after"][k] - cpu["before"][k] for k in cpu.get("after", {})},
        "cpu_wall_s": cpu.get("wall_s", float("nan")),
        "wall_s": time.monotonic() - wall,
        "setup_s": setup_s,
        "epochs": args.epochs,
        "browser_nice": args.browser_nice,
        "seeds": args.seeds,
        "workspace": str(home),
        "server_log": str(log),
    }
    result = summarise(people, auth, note, rerun_times(timing_file), job_counts(), extra)
    print_summary(result)
    if args.json:
        args.json.write_text(json.dumps(no_nan(result), indent=1, default=str, allow_nan=False))
        print(f"figures written to {args.json}")
    print(f"workspace and server log kept in {tmp}")


if __name__ == "__main__":
    main()
