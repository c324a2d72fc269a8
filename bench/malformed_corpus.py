"""Benchmark: seconds to load each case of the malformed-input corpus (tests/malformed_corpus.py).

Every case is built fresh in a temporary folder (its own workspace and folder root, as in the test) and
loaded with engine.sources.load; the build is not timed. Prints, per case, the best load time of
--repeats, the MiB that zipfile decompressed and the outcome (refused, or images kept and files
skipped), then the slowest case, the total, and every case over --target seconds (the target is 10 s a
case on 2 cores; the machine is not quiet unless the load average says so).

Usage: python bench/malformed_corpus.py [--only bomb] [--repeats 1] [--target 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only the cases whose id contains this text")
    parser.add_argument("--repeats", type=int, default=1, help="loads per case; the best time is reported")
    parser.add_argument("--target", type=float, default=10.0, help="seconds a case may take")
    args = parser.parse_args()

    from tests import malformed_corpus as corpus

    cases = [c for c in corpus.cases() if args.only in c.id]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{len(cases)} cases, best of {args.repeats} load(s) each\n")
    print(f"{'case':<36} {'seconds':>8} {'MiB read':>9}  outcome")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="synthlab-corpus-") as scratch:
        for n, case in enumerate(cases):
            best, outcome = float("inf"), None
            for r in range(args.repeats):
                where = Path(scratch) / f"{n}-{r}"
                (where / "in").mkdir(parents=True)
                os.environ["SYNTHLAB_HOME"] = str(where / "ws")
                os.environ["SYNTHLAB_FOLDER_ROOTS"] = str(where / "in")
                source = case.build(where / "in")
                outcome = corpus.run(case, source)
                best = min(best, outcome.seconds)
            assert outcome is not None
            times[case.id] = best
            if outcome.error is not None:
                said = f"refused: {str(outcome.error)[:70]}"
            else:
                assert outcome.decoded is not None
                said = f"kept {len(outcome.decoded.labels)}, skipped {len(outcome.decoded.report.skipped)}"
            print(f"{case.id:<36} {best:>8.3f} {outcome.read_bytes / 2**20:>9.2f}  {said}")

    slowest = max(times, key=lambda k: times[k])
    over = [k for k, t in times.items() if t > args.target]
    print(f"\nslowest: {slowest} {times[slowest]:.3f} s (target {args.target:g} s a case)")
    print(f"total load time: {sum(times.values()):.2f} s over {len(times)} cases")
    print(f"over target: {', '.join(over) if over else 'none'}")


if __name__ == "__main__":
    main()
