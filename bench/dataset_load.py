"""Benchmark: first (decode) and second (disk cache) load of a dataset source.

Usage: python bench/dataset_load.py [path.zip|folder] [--minority bird,cat,deer --keep 0.1]
Without a path it times the built-in digits. Uses a fresh, temporary workspace so the first load
really decodes. Prints seconds for each load, the speed-up, and the class counts after imbalance.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="", help=".zip or folder of class folders (default: digits)")
    parser.add_argument("--minority", default="", help="comma-separated class names for a step profile")
    parser.add_argument("--keep", type=float, default=0.1, help="share each minority class keeps")
    args = parser.parse_args()
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)  # a benchmark reads what its user can read
    os.environ["SYNTHLAB_HOME"] = tempfile.mkdtemp(prefix="synthlab-bench-")

    from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
    from engine.datasets import build_dataset

    kind = "digits" if not args.path else ("zip" if args.path.endswith(".zip") else "folder")
    imbalance = ImbalanceConfig()
    if args.minority:
        imbalance = ImbalanceConfig(kind="step", minority=tuple(args.minority.split(",")), keep_fraction=args.keep)
    cfg = DatasetConfig(source=SourceConfig(kind=kind, path=args.path), imbalance=imbalance)

    start = time.perf_counter()
    first = build_dataset(cfg)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = build_dataset(cfg)
    second_s = time.perf_counter() - start
    assert not first.from_cache and second.from_cache

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    sizes = f"{len(first.train):,} train / {len(first.val):,} val / {len(first.test):,} test"
    print(f"source: {kind} {args.path}  ->  {sizes}")
    print(f"images: {tuple(first.train.images.shape[1:])} uint8, {len(first.report.skipped)} files skipped")
    print(f"first load (decode):  {first_s:8.2f} s")
    print(f"second load (cache):  {second_s:8.2f} s")
    print(f"speed-up:             {first_s / second_s:8.1f}x")
    for row in first.summary():
        print(f"  {row['class']:>12}: {row['train (before)']:>6} -> {row['train']:>6} train, {row['test']:>5} test")


if __name__ == "__main__":
    main()
