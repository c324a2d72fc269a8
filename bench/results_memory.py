"""Benchmark: the memory an experiment's kept results take, which is mostly its runs' ROC and PR curves.

``engine.summaries`` keeps each experiment's results for every session, bounded by
``MAX_CURVE_VALUES`` curve values (x and y) in all. This measures what one run's metrics hold once read back
from its ``metrics.json``, as the kept results hold them: a seeded run of --images test images of --classes
classes (random scores with the true class raised, so that nearly every score is distinct, as a trained
classifier's are), its metrics computed, written as JSON and read back (``Metrics.from_dict``) under
``tracemalloc``. Prints the run's curve values, the bytes it keeps and bytes per value, the same for an
experiment of --runs runs, and how many such experiments fit in the limit.

Usage: python bench/results_memory.py [--images 10000] [--classes 10] [--runs 12]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import summaries
from engine.metrics import Metrics, compute_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="test images of the run")
    parser.add_argument("--classes", type=int, default=10, help="classes of the run")
    parser.add_argument("--runs", type=int, default=12, help="runs of an experiment (the default: 4 mixes x 3 seeds)")
    args = parser.parse_args()
    if args.images < 2 or args.classes < 2 or args.runs < 1:
        parser.error("--images and --classes are not accepted below 2, --runs below 1")
    # 1. One run's predictions and metrics, written as its metrics.json is.
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.images)
    logits = rng.normal(size=(args.images, args.classes))
    logits[np.arange(args.images), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    text = json.dumps(compute_metrics(y, probs, [str(c) for c in range(args.classes)]).to_dict())
    # 2. Read back under tracemalloc: what stays allocated while the metrics are held.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    metrics = Metrics.from_dict(json.loads(text))
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    values = sum(len(c.x) + len(c.y) for c in (*metrics.roc, *metrics.pr))
    roc = sum(len(c.x) + len(c.y) for c in metrics.roc)
    per_experiment = values * args.runs
    print(
        f"one run ({args.images:,} test images, {args.classes} classes): {values:,} curve values ({roc:,} ROC, "
        f"{values - roc:,} PR) · {kept / 2**20:.1f} MiB kept · {kept / values:.1f} bytes per value"
    )
    mib = kept / values / 2**20  # per value
    print(f"an experiment of {args.runs} such runs: {per_experiment:,} values · {per_experiment * mib:.0f} MiB")
    limit = summaries.MAX_CURVE_VALUES
    print(f"the limit, {limit:,} values: about {limit * mib:.0f} MiB; {limit // per_experiment} such experiment(s) fit")


if __name__ == "__main__":
    main()
