"""Benchmark: EfficientNet-Lite0 feature extraction in images/second, and a feature-cache hit.

Usage: python bench/feature_extraction.py [-n 512] [--digits] [--threads T] [--batch 64]
Extracts pooled features of N images (uniform noise at 32x32 RGB, or the built-in digits) at 128
and 224 px, in float32 and, where the CPU computes bfloat16 natively, in bf16 autocast (channels_last
in both, as engine.device chooses on the CPU). The network is loaded once and warmed up before timing.
Then times cached_features on the same images twice in a fresh cache: a miss (computes and stores)
and a hit. Prints the CPU flags it found, torch's CPU capability and the thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [flag for flag in FLAGS if flag in words]


def load_images(n: int, digits: bool) -> torch.Tensor:
    if not digits:
        return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    from engine.config import DatasetConfig
    from engine.datasets import build_dataset

    images = build_dataset(DatasetConfig()).train.images
    return images.repeat((n + len(images) - 1) // len(images), 1, 1, 1)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=512, help="images to extract features of")
    parser.add_argument("--digits", action="store_true", help="built-in digits (8x8 grey) instead of 32x32 noise")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    args = parser.parse_args()
    os.environ["SYNTHLAB_HOME"] = tempfile.mkdtemp(prefix="synthlab-bench-")
    if args.threads:
        torch.set_num_threads(args.threads)

    from engine.backbones import extract_features, load_backbone
    from engine.device import cpu_has_bf16, pick_device
    from engine.features import cached_features

    images = load_images(args.n, args.digits)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    print(f"cpu flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(FLAGS)}")
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, cpu capability {capability}, {torch.get_num_threads()} threads")
    print(f"images: {tuple(images.shape)} uint8, batch {args.batch}")
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    if not cpu_has_bf16():
        print("bf16: skipped, this CPU has no native bfloat16 (autocast would be many times slower)")
    for size in (128, 224):
        net = load_backbone("efficientnet_lite0", size=size)
        for precision in precisions:
            setup = pick_device("cpu", precision)
            extract_features("efficientnet_lite0", images[: args.batch], size=size, setup=setup, model=net)  # warm-up
            start = time.perf_counter()
            extract_features("efficientnet_lite0", images, size=size, batch_size=args.batch, setup=setup, model=net)
            seconds = time.perf_counter() - start
            print(f"{size:>4} px {setup.label:<24} {len(images) / seconds:8.1f} images/s  ({seconds:.2f} s)")

    with tempfile.TemporaryDirectory() as cache:
        for label in ("cache miss (224 px, auto)", "cache hit  (224 px, auto)"):
            start = time.perf_counter()
            cached_features("efficientnet_lite0", images, size=224, cache_dir=Path(cache), batch_size=args.batch)
            print(f"{label}: {time.perf_counter() - start:8.3f} s")


if __name__ == "__main__":
    main()
