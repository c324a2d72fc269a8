"""Benchmark: what each kind of Streamlit element costs a browser the first time it draws one, and after.

A page's first visit costs a browser more than later ones, because Streamlit loads the code of each kind of
element (a plotly chart, a data frame, a Vega-Lite chart) only when a page first shows one, and the browser
then compiles it. This measures that cost apart from SynthLab's pages: a minimal Streamlit app (written to a
temporary folder) with one page per kind of element, served on a free port, and one Chromium (Playwright,
Debian's /usr/bin/chromium). Each round opens a fresh browser context (no cache, as a new visitor), loads the
app's bare first page, then visits every page twice, going back to the bare page after each visit so that
the second one draws the page anew. It prints the median CPU seconds all of Chromium's processes used (read
from /proc, so Linux only) for the first load, and for each page its first visit and its second; a visit is
measured from the click until the script is idle and one second more, since charts are drawn after the
script ends. ``bench/send_batches.py`` serves its own app and visits its pages with the same two helpers.

Usage: python bench/browser_first_use.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
APP = """
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

FRAME = pd.DataFrame({"class": list("abcdefghij"), "images": range(10)})


def bare():
    st.title("Bare")


def markdown():
    st.title("Markdown")
    for i in range(20):
        st.markdown(f"**line {i}** with some text")


def plotly():
    st.title("Plotly")
    st.plotly_chart(go.Figure(go.Bar(x=FRAME["class"], y=FRAME["images"])), key="bars")


def dataframe():
    st.title("Dataframe")
    st.dataframe(FRAME, hide_index=True)


def table():
    st.title("Table")
    st.table(FRAME, hide_index=True)


def vega():
    st.title("Vega")
    st.bar_chart(FRAME, x="class", y="images")


def image():
    st.title("Image")
    st.image(np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8))


def inputs():
    st.title("Inputs")
    for i in range(10):
        st.number_input(f"number {i}", value=i, help="a help text")


PAGES = (bare, markdown, plotly, dataframe, table, vega, image, inputs)
st.navigation([st.Page(f, title=f.__name__.capitalize(), url_path=f.__name__) for f in PAGES]).run()
"""
PAGES = ("Markdown", "Plotly", "Dataframe", "Table", "Vega", "Image", "Inputs")


def visit(page: Any, name: str) -> tuple[float, float]:
    """Click ``name`` in the sidebar: the browser's CPU seconds until the page is idle and one second more, and
    the seconds from the click until the page is idle."""
    from browser_cpu import IDLE, chromium_cpu
    from playwright.sync_api import expect

    time.sleep(1.0)
    before, start = chromium_cpu(), time.perf_counter()
    page.get_by_test_id("stSidebar").get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    wall = time.perf_counter() - start
    time.sleep(1.0)  # charts are drawn after the script ends
    return chromium_cpu() - before, wall


@contextmanager
def serve_app(folder: Path, app: str, launch: list[str] | None = None) -> Iterator[str]:
    """``app`` written to ``folder/app.py`` and served on a free port of 127.0.0.1 by ``launch`` (default
    ``python -m streamlit``) followed by ``run app.py`` and its options; yields its URL. ``ROOT`` is on the
    server's import path; its log is ``folder/server.log``."""
    from tests.browser_util import free_port, wait_for

    (folder / "app.py").write_text(app)
    port, log_path = free_port(), folder / "server.log"
    cmd = [*(launch or [sys.executable, "-m", "streamlit"]), "run", "app.py", "--server.port", str(port)]
    cmd += ["--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"]
    cmd += ["--browser.gatherUsageStats", "false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/_stcore/health", proc, log_path)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh browser contexts, each visiting every page")
    args = parser.parse_args()
    from browser_cpu import IDLE, chromium_cpu
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_ARGS

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"browser CPU per first use · {os.cpu_count()} CPUs · load average {load}")
    first_loads: list[float] = []
    spent: dict[str, list[tuple[float, float]]] = {name: [] for name in PAGES}
    with tempfile.TemporaryDirectory() as folder, serve_app(Path(folder), APP) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(args.rounds):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            before = chromium_cpu()
            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Bare")).to_be_visible(timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            time.sleep(1.0)
            first_loads.append(chromium_cpu() - before)
            for name in PAGES:
                first, _ = visit(page, name)
                visit(page, "Bare")  # away, so that the next visit draws the page anew
                spent[name].append((first, visit(page, name)[0]))
                visit(page, "Bare")
            context.close()
        browser.close()
    print(f"first load of a bare page (Streamlit's own code): {statistics.median(first_loads):.2f} CPU-s")
    for name, pairs in spent.items():
        first, again = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        extra = first - again
        print(f"{name:<10} first visit {first:.2f} CPU-s · second visit {again:.2f} · first use costs {extra:+.2f}")


if __name__ == "__main__":
    main()
