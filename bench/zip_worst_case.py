"""Benchmark: the costliest archives under 10 MB that the limits still let through, timed as they load.

The decoding limits (docs/datasets.md, "Bad input") bound what one archive may cost: members past 100:1 are
skipped, small members (up to 1 MiB) may pass that ratio but only 64 MiB of them per source, and a budget
caps the total. The two archives built here sit just under those limits, to show the cost that remains:

- ``near-ratio``: ~9 MB of 590 x 590 BMPs with sparse noise, each deflated just under 100:1 (every member
  is read and decoded: about 800 MiB decompressed);
- ``small-flat``: ~8,700 flat 590 x 590 BMPs of 1 MiB each (about 1,000:1); 64 are read, the rest skipped.

Prints per archive its size, the MiB decompressed, images kept and the seconds ``sources.load`` took (target:
10 s on 2 cores). The machine is measured as it is: the load average is printed.

Usage: python bench/zip_worst_case.py [--mb 9]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bmp(noise: float, seed: int = 0) -> bytes:
    """A 590 x 590 RGB BMP (1 MiB), black with a share ``noise`` of random bytes."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((590, 590, 3), np.uint8)
    mask = rng.random(pixels.shape) < noise
    pixels[mask] = rng.integers(0, 255, int(mask.sum()))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "BMP")
    return buffer.getvalue()


def write_zip(path: Path, member: bytes, count: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(count):
            archive.writestr(f"{'ab'[i % 2]}/{i:05d}.bmp", member)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=9.0, help="about the size of each archive in MB")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["SYNTHLAB_HOME"] = folder
        from engine import sources
        from engine.config import SourceConfig

        near = bmp(0.0025)  # deflates about 89:1
        flat = bmp(0.0)  # deflates about 1,000:1
        print(f"zip worst cases · {os.cpu_count()} CPUs · load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, member in (("near-ratio", near), ("small-flat", flat)):
            stored = len(zlib.compress(member, 6))
            path = Path(folder) / f"{name}.zip"
            write_zip(path, member, int(args.mb * 2**20 / stored))
            start = time.perf_counter()
            decoded = sources.load(SourceConfig(kind="zip", path=str(path)))
            seconds = time.perf_counter() - start
            print(
                f"{name:<11} {path.stat().st_size / 2**20:5.1f} MB · {len(member) / stored:,.0f}:1 per member · "
                f"{decoded.report.bytes_read / 2**20:,.0f} MiB decompressed · {len(decoded.labels):,} images kept, "
                f"{len(decoded.report.skipped):,} skipped · {seconds:.1f} s (target 10 s)"
            )


if __name__ == "__main__":
    main()
