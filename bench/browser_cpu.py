"""Benchmark: the browser's own CPU time for each page, one session on a quiet server.

With many sessions on one machine (bench/load_sessions.py), the browsers' work competes with the server's.
This measures that work alone: a temporary workspace with one finished experiment (digits, three mixes,
one seed), the app started on it, one Chromium tab (Playwright, Debian's /usr/bin/chromium) that loads the
app and then visits Train, Compare, Dataset and Generate in turn. For each visit it prints the wall time
from the click to the page idle, and the CPU seconds all of Chromium's processes used meanwhile (read
from /proc, so Linux only), then the median per page. The server's own CPU is not counted.

Usage: python bench/browser_cpu.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAGES = ("Train", "Compare", "Dataset", "Generate")
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def chromium_cpu() -> float:
    """CPU seconds used so far by every process whose command line names chromium."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"chromium" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument("--rounds", type=int, default=3, help="visits of each page")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, streamlit_server

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        prepare(tmp / "ws")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"browser CPU per page · {os.cpu_count()} CPUs · load average {load}")
        spent: dict[str, list[float]] = {name: [] for name in PAGES}
        with streamlit_server(tmp / "server", {"SYNTHLAB_HOME": str(tmp / "ws")}) as url, sync_playwright() as pw:
            page = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS).new_page(
                viewport={"width": 1400, "height": 1000}
            )
            before = chromium_cpu()
            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=120_000)
            page.wait_for_selector(IDLE, timeout=120_000)
            print(f"first load: {chromium_cpu() - before:.2f} CPU-s")
            for _ in range(args.rounds):
                for name in PAGES:
                    time.sleep(2)  # let the previous page settle
                    before, start = chromium_cpu(), time.perf_counter()
                    page.get_by_test_id("stSidebar").get_by_role("link", name=name).click()
                    expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)
                    page.wait_for_selector(IDLE, timeout=60_000)
                    wall = time.perf_counter() - start
                    time.sleep(1.0)  # charts draw after the script is idle
                    spent[name].append(chromium_cpu() - before)
                    print(f"{name:<9} {wall:5.2f} s to idle · {spent[name][-1]:.2f} CPU-s in the browser")
        print("median CPU-s per visit: " + " · ".join(f"{n} {statistics.median(v):.2f}" for n, v in spent.items()))


if __name__ == "__main__":
    main()
