"""Benchmark: the first visitor after a server start, with ``streamlit run app.py`` and with ``python -m ui.serve``.

``streamlit run app.py`` imports the lab's modules (torch, scikit-learn, plotly, the engine) only when the
first visitor's page runs; ``python -m ui.serve`` (what ``make run`` and the deploy guide start) imports them
before the server answers. For each way, alternating, this starts a server on a free port with an empty
workspace, waits until its health check answers, then opens the app in a fresh Chromium (Playwright,
Debian's /usr/bin/chromium) and times the first load until the Dataset page is drawn and its script idle.
Printed per start: seconds until the server answered, the first visitor's load, and their sum (what a
visitor who arrives at the very start waits; one who comes once the server answers waits only the load).

Usage: python bench/first_visitor.py [--starts 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
WAYS = {
    "streamlit run app.py": ["-m", "streamlit", "run", "app.py"],
    "python -m ui.serve": ["-m", "ui.serve"],
}


def first_visit(way: str, folder: Path) -> tuple[float, float]:
    """(seconds until the server answered, seconds of the first visitor's first load)."""
    from browser_cpu import IDLE
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, free_port, wait_for

    port, log_path = free_port(), folder / "server.log"
    cmd = [sys.executable, *WAYS[way], "--server.port", str(port), "--server.address", "127.0.0.1"]
    env = {**os.environ, "SYNTHLAB_HOME": str(folder / "workspace")}
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/_stcore/health", proc, log_path, timeout=180)
            ready = time.perf_counter() - start
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                begin = time.perf_counter()
                page.goto(url, wait_until="domcontentloaded")
                expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=180_000)
                page.wait_for_selector(IDLE, timeout=180_000)
                load = time.perf_counter() - begin
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return ready, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=2, help="server starts of each way")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"first visitor after a server start · {os.cpu_count()} CPUs · load average {load}")
    for _ in range(args.starts):
        for way in WAYS:
            with tempfile.TemporaryDirectory() as folder:
                ready, first = first_visit(way, Path(folder))
            print(
                f"{way:<22} server answered after {ready:4.1f} s · first visitor's first load {first:5.2f} s · "
                f"from the start to the first page drawn {ready + first:5.2f} s"
            )


if __name__ == "__main__":
    main()
