"""Benchmark: the server's time for one Compare page when an experiment's results are new, and once computed.

An experiment's results (the summary with its bootstrap intervals, the verdicts, its runs' metrics) are
computed once per state of its runs (``engine.summaries``), and its figures once per state too; on the server,
the job of a run computes its experiment's results as soon as the run ends. This makes --experiments finished
experiments in a temporary workspace (each: real, oversample and reweight on the built-in digits, 2 epochs,
1 seed, as ``bench/browser_cpu.py`` makes it; made without the job runner, so nothing is computed yet), opens
the Compare page in Streamlit's AppTest, and selects each experiment not yet shown, in turn:
- *cold*: every other one as it is, so the page computes its results and builds its figures (what a page did
  before runs computed their results, and still does for an experiment whose runs ended elsewhere);
- *results ready*: the others after computing their results as a run's end does, so the page builds only its
  figures (the first Compare page after a run ended on the server);
then runs the page again --rounds times (*warm*: both ready). Timed: each run of the page's script (a timer
around Streamlit's script runner, as in ``bench/load_sessions.py``), so AppTest's own waiting is left out.
One process, one thread at a time: with eight people whose runs end together, the server makes eight first
pages at once.

Usage: python bench/compare_cold.py [--experiments 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=5, help="finished experiments to make (at least 3)")
    parser.add_argument("--rounds", type=int, default=3, help="warm page runs per experiment")
    args = parser.parse_args()
    if args.experiments < 3:
        parser.error(f"--experiments {args.experiments} is not accepted: expected 3 or more")
    from browser_cpu import prepare

    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.experiments):
            prepare(Path(folder))  # sets SYNTHLAB_HOME to the folder
        timed = time_pages(args.rounds)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Compare page, server-side script time · {os.cpu_count()} CPUs · load average {load}")
    for kind, seconds in timed.items():
        low, high = min(seconds), max(seconds)
        print(f"{kind}: median {statistics.median(seconds):.3f} s ({low:.3f}-{high:.3f}, n={len(seconds)})")


def time_pages(rounds: int) -> dict[str, list[float]]:
    """Script seconds of the Compare page: cold (an experiment shown for the first time, nothing computed),
    results ready (shown for the first time, its results computed as a run's end does) and warm."""
    # A benchmark, not the engine: it drives the app's pages, so it imports Streamlit.
    from streamlit.runtime.scriptrunner import script_runner  # noqa: TID251
    from streamlit.testing.v1 import AppTest  # noqa: TID251

    from engine import experiments, summaries

    spent: list[float] = []
    original = script_runner.ScriptRunner._run_script

    def timed(self: Any, rerun_data: Any) -> None:
        start = time.perf_counter()
        try:
            original(self, rerun_data)
        finally:
            spent.append(time.perf_counter() - start)

    script_runner.ScriptRunner._run_script = timed  # type: ignore[method-assign]
    try:
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        app.run()
        app.switch_page("app_pages/compare.py").run()  # the page's code and the first experiment: not counted
        shown = app.selectbox(key="compare_experiment").value
        found: dict[str, list[float]] = {"cold": [], "results ready": [], "warm": []}
        others = [record.id for record in experiments.list_experiments() if record.id != shown]
        for i, exp_id in enumerate(others):
            kind = "cold" if i % 2 == 0 else "results ready"
            if kind == "results ready":
                summaries.results(exp_id)  # what the job of the experiment's last run does when it ends
            app.selectbox(key="compare_experiment").set_value(exp_id).run()
            found[kind].append(spent[-1])
            for _ in range(rounds):
                app.run()
                found["warm"].append(spent[-1])
            if app.exception:
                raise SystemExit(f"the Compare page failed: {app.exception[0].value}")
        return found
    finally:
        script_runner.ScriptRunner._run_script = original  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
