"""Benchmark: what a page costs the browser when its script runs slowly, for each pause of the server's send loop.

Streamlit sends a page's elements to the browser as its script makes them, and the browser draws the page
again for each batch it receives. On a busy server a page's script takes a second or more, its elements
trickle out one by one, and the browser draws the page tens of times. ``python -m ui.serve`` makes the send
loop pause after each send (``SYNTHLAB_SEND_EVERY_MS``, :func:`ui.serve.batch_messages`), so what the script
made meanwhile leaves in one batch.

This serves a minimal Streamlit app (written to a temporary folder) with two pages of the same 60 paragraphs
and 20 number inputs: *Quick* makes them at once; *Slow* waits 20 ms after each paragraph (1.2 s in all), as
a page run on a busy server does. For each pause given it starts the app's server with that pause, opens one
Chromium tab (Playwright, Debian's /usr/bin/chromium), and visits Quick and Slow in turn (going back to a
bare page after each visit, so that every visit draws the page anew; the server and the visits are those of
``bench/browser_first_use.py``). It prints, per pause, the median CPU
seconds all of Chromium's processes used per visit (read from /proc, so Linux only; from the click until the
script is idle and 1 s more) and the median time from the click until the script is idle, which is what the
pause may add to a quick page.

Usage: python bench/send_batches.py [--pauses-ms 5,100,250] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
APP = """
import time

import streamlit as st


def page(pause):
    def run():
        st.title("Slow" if pause else "Quick")
        for i in range(60):
            st.markdown(f"**Paragraph {i}**, a line of text with a [link](https://example.org) and more words")
            if i % 3 == 0:
                st.number_input(f"Number {i}", value=i)
            time.sleep(pause)

    return run


st.navigation(
    [
        st.Page(lambda: st.title("Bare"), title="Bare", url_path="bare", default=True),
        st.Page(page(0.0), title="Quick", url_path="quick"),
        st.Page(page(0.02), title="Slow", url_path="slow"),
    ]
).run()
"""
# The server: ui.serve's pause set, then Streamlit with the rest of the command line (``run app.py ...``).
LAUNCH = """
import sys
from streamlit.web import cli
from ui.serve import batch_messages
assert batch_messages(float(sys.argv[1]))
sys.argv = ["streamlit", *sys.argv[2:]]
sys.exit(cli.main(prog_name="streamlit"))
"""
PAGES = ("Quick", "Slow")


def measure(folder: Path, pause_s: float, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Each page's visits (browser CPU-s, seconds to idle) with the server's send loop pausing ``pause_s``."""
    from browser_cpu import IDLE
    from browser_first_use import serve_app, visit
    from playwright.sync_api import sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_ARGS

    spent: dict[str, list[tuple[float, float]]] = {name: [] for name in PAGES}
    with serve_app(folder, APP, [sys.executable, "-c", LAUNCH, str(pause_s)]) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector(IDLE, timeout=60_000)
        for name in PAGES:  # each page's first visit loads its code: not counted
            visit(page, name)
            visit(page, "Bare")
        for _ in range(rounds):
            for name in PAGES:
                spent[name].append(visit(page, name))
                visit(page, "Bare")  # away, so that the next visit draws the page anew
        browser.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pauses-ms", default="5,100,250", help="pauses of the send loop to compare, in ms")
    parser.add_argument("--rounds", type=int, default=5, help="visits of each page per pause")
    args = parser.parse_args()
    try:
        pauses = [int(p) for p in args.pauses_ms.split(",")]
    except ValueError:
        parser.error(f"--pauses-ms {args.pauses_ms!r} is not accepted: expected whole milliseconds, e.g. 5,100")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"browser CPU per visit by the send loop's pause · {os.cpu_count()} CPUs · load average {load}")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for pause in pauses:
            spent = measure(folder, pause / 1000, args.rounds)
            shown = []
            for page, visits in spent.items():
                cpu = statistics.median(v[0] for v in visits)
                wall = statistics.median(v[1] for v in visits)
                low, high = min(v[0] for v in visits), max(v[0] for v in visits)
                shown.append(f"{page} {cpu:.2f} CPU-s ({low:.2f}-{high:.2f}), {wall:.2f} s to idle")
            print(f"pause {pause:>4} ms: " + " · ".join(shown))


if __name__ == "__main__":
    main()
