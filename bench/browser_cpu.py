"""Benchmark: the browser's own CPU time for each page, one session on a quiet server.

With many sessions on one machine (bench/load_sessions.py), the browsers' work competes with the server's.
This measures that work alone: a temporary workspace with one finished experiment (digits, three mixes,
one seed), the app started on it, one Chromium tab (Playwright, Debian's /usr/bin/chromium) that loads the
app and then visits Train, Compare, Dataset and Generate in turn. For each visit it prints the wall time
from the click to the page idle, and the CPU seconds all of Chromium's processes used meanwhile (read
from /proc, so Linux only; for the first load, until the script is idle and in the 3 s after, while its
charts are drawn), then each page's first visit and the median of its later visits. Last, it starts an
experiment from the Train page (its default mixes and seeds, 15 epochs) and prints the browser's
CPU per second while that open tab follows the runs live (its panel and curves redrawn as they go). The
server's own CPU is not counted.

--by-process: each visit's CPU also apart for each kind of Chromium process (the page's renderer, the
browser process, the GPU process that draws without a GPU, the network service and other utilities).

Usage: python bench/browser_cpu.py [--rounds 4] [--live-windows 6] [--by-process]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAGES = ("Train", "Compare", "Dataset", "Generate")
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def cpu_seconds(needle: bytes = b"chromium", pid: int | None = None) -> float:
    """CPU seconds used so far by process ``pid``, or by every process whose command line contains ``needle``,
    with their children that have ended (a closed tab's renderer counts in the process that waited for it)."""
    ticks = 0
    pids = [str(pid)] if pid is not None else filter(str.isdigit, os.listdir("/proc"))
    for each in pids:
        try:
            if pid is None and needle not in Path(f"/proc/{each}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(map(int, fields[11:15]))  # utime, stime, and cutime, cstime of ended children
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def chromium_cpu() -> float:
    """CPU seconds used so far by every process whose command line names chromium."""
    return cpu_seconds(b"chromium")


def chromium_cpu_by_kind() -> dict[str, float]:
    """:func:`chromium_cpu` apart for each kind of Chromium process (``--type=`` on its command line: renderer,
    gpu-process, utility; none: the browser process itself)."""
    spent: dict[str, float] = {}
    for each in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{each}/cmdline").read_bytes()
        except OSError:
            continue
        if b"chromium" not in command:
            continue
        found = re.search(rb"--type=([a-z-]+)", command)  # children rewrite their title: no NUL-split arguments
        kind = found.group(1).decode() if found else "browser"
        spent[kind] = spent.get(kind, 0.0) + cpu_seconds(pid=int(each))
    return spent


def prepare(workspace: Path) -> None:
    """One finished experiment in ``workspace``: real, oversample and reweight on digits, 2 epochs, 1 seed."""
    os.environ["SYNTHLAB_HOME"] = str(workspace)
    from engine import experiments
    from engine.config import DatasetConfig, ImbalanceConfig
    from engine.mixes import MixConfig
    from engine.training import TrainConfig

    cfg = experiments.ExperimentConfig(
        dataset=DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1", "2"), keep_fraction=0.1)),
        mixes=(MixConfig("oversample"), MixConfig("reweight")),
        train=TrainConfig(max_epochs=2, device="cpu", precision="fp32"),
        seeds=(0,),
    )
    experiments.run_experiment(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="visits of each page")
    parser.add_argument("--live-windows", type=int, default=6, help="3-second windows measured while runs go")
    parser.add_argument("--by-process", action="store_true", help="each visit's CPU apart per kind of process")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_util import new_page, streamlit_server

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        prepare(tmp / "ws")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"browser CPU per page · {os.cpu_count()} CPUs · load average {load}")
        spent: dict[str, list[float]] = {name: [] for name in PAGES}
        with streamlit_server(tmp / "server", {"SYNTHLAB_HOME": str(tmp / "ws")}) as url, sync_playwright() as pw:
            page = new_page(pw)
            before = chromium_cpu()
            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=120_000)
            page.wait_for_selector(IDLE, timeout=120_000)
            idle_at = chromium_cpu()
            time.sleep(3)  # the page's charts are drawn after its script ends
            after = chromium_cpu() - idle_at
            print(f"first load: {idle_at - before:.2f} CPU-s until the script is idle, {after:.2f} in the 3 s after")
            for _ in range(args.rounds):
                for name in PAGES:
                    time.sleep(2)  # let the previous page settle
                    kinds = chromium_cpu_by_kind() if args.by_process else {}
                    before, start = chromium_cpu(), time.perf_counter()
                    page.get_by_test_id("stSidebar").get_by_role("link", name=name).click()
                    expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)
                    page.wait_for_selector(IDLE, timeout=60_000)
                    wall = time.perf_counter() - start
                    time.sleep(1.0)  # charts draw after the script is idle
                    spent[name].append(chromium_cpu() - before)
                    line = f"{name:<9} {wall:5.2f} s to idle · {spent[name][-1]:.2f} CPU-s in the browser"
                    if args.by_process:
                        after = chromium_cpu_by_kind()
                        line += " (" + ", ".join(f"{k} {v - kinds.get(k, 0.0):.2f}" for k, v in after.items()) + ")"
                    print(line)
            # The first round opens each page for the first time in this browser (Dataset was the first load):
            # its code runs for the first time there, which costs more than any later visit.
            print("first visit, CPU-s: " + " · ".join(f"{n} {v[0]:.2f}" for n, v in spent.items() if n != "Dataset"))
            later = {n: v[1:] for n, v in spent.items() if len(v) > 1}
            medians = " · ".join(f"{n} {statistics.median(v):.2f}" for n, v in later.items())
            print(f"median CPU-s per later visit: {medians}")
            if args.live_windows:
                follow_live(page, args.live_windows)


def follow_live(page: Any, windows: int) -> None:
    """Start an experiment on the Train page; the browser's CPU per second while its runs are followed live."""
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebar").get_by_role("link", name="Train").click()
    expect(page.get_by_role("heading", name="Train")).to_be_visible(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    box = page.get_by_role("spinbutton", name="Max epochs", exact=True)
    box.fill("15")
    box.press("Tab")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("runs finished")).to_be_visible(timeout=60_000)
    time.sleep(2)
    rates = []
    for _ in range(windows):
        before = chromium_cpu()
        time.sleep(3)
        if page.get_by_text("All runs of this experiment have finished").count():
            break  # the window ran past the end of the runs
        rates.append((chromium_cpu() - before) / 3)
    shown = " ".join(f"{r:.2f}" for r in rates)
    middle = statistics.median(rates) if rates else float("nan")
    print(f"Train tab following runs live: median {middle:.2f} CPU-s per second ({len(rates)} windows of 3 s: {shown})")


if __name__ == "__main__":
    main()
