"""Benchmark: memory of many sessions holding the same dataset, each built on its own or shared.

A temporary workspace gets a folder of random 32 × 32 colour PNGs in 10 class folders; it is decoded once
(into the decode cache). Then, in a fresh process for each way, ``--sessions`` datasets of that folder are
held at once, as that many sessions would: each built by ``build_dataset`` (its own copy, read back from
the cache), or each taken from ``shared_dataset`` (what the app's sessions use). Printed: the resident
memory each way added, read from /proc (Linux only), and the images' own bytes.

Usage: python bench/shared_dataset_memory.py [--images 12000] [--sessions 10]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if TYPE_CHECKING:
    from engine.config import DatasetConfig
WAYS = {"own": "own copy each (build_dataset)", "shared": "shared (shared_dataset)"}


def resident_mb() -> float:
    """This process's resident memory in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def write_folder(root: Path, images: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def hold(way: str, folder: str, sessions: int) -> None:
    """In this process: hold ``sessions`` datasets of ``folder``, built ``way``; print the memory they added."""
    from engine.config import DatasetConfig
    from engine.datasets import build_dataset, shared_dataset

    cfg = config(folder)
    build_dataset(DatasetConfig())  # imports and first-use allocations, before the baseline
    gc.collect()
    before = resident_mb()
    held = [(shared_dataset if way == "shared" else build_dataset)(cfg) for _ in range(sessions)]
    added = resident_mb() - before
    print(f"{sessions} sessions, {WAYS[way]}: +{added:.0f} MB resident, {len({id(d) for d in held})} object(s)")


def config(folder: str) -> DatasetConfig:
    """The dataset of the PNG folder ``folder`` at 32 px."""
    from engine.config import DatasetConfig, SourceConfig, SplitConfig

    # near-copies kept where they are: random images have none, and the check would only add time here
    return DatasetConfig(SourceConfig(kind="folder", path=folder, resolution=32), SplitConfig(near_copies="keep"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--hold", choices=sorted(WAYS), help=argparse.SUPPRESS)  # internal: one way, in a child
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        hold(args.hold, args.folder, args.sessions)
        return
    with tempfile.TemporaryDirectory() as folder:
        os.environ["SYNTHLAB_HOME"] = str(Path(folder) / "workspace")
        from engine.datasets import build_dataset

        data = Path(folder) / "workspace" / "data"
        write_folder(data, args.images)
        start = time.perf_counter()
        first = build_dataset(config(str(data)))
        took = time.perf_counter() - start
        nbytes = sum(s.images.numel() * s.images.element_size() for s in (first.train, first.val, first.test))
        print(f"{args.images:,} images decoded in {took:.1f} s; their pixels: {nbytes / 1e6:.1f} MB")
        for way in WAYS:  # each in a fresh process, so that memory freed by the other never counts
            cmd = [sys.executable, __file__, "--hold", way, "--folder", str(data), "--sessions", str(args.sessions)]
            subprocess.run(cmd, check=True, env=os.environ)


if __name__ == "__main__":
    main()
