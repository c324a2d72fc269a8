"""Benchmark: which synthetic resize preset closes the gap to real photos of varied shapes, per dataset fit.

Builds "photos" from the built-in digits (each a centred crop of the upscaled digit at one of four
aspects, 0.6 to 16:9, saved as PNG files in class folders), loads them with each dataset fit (pad,
crop, stretch), and scores real photos against synthetic squares (the other half of the digits)
without a preset and with every resize mode: the domain-gap score is the held-out accuracy of a
small CNN telling real from synthetic (0.5 = indistinguishable). Prints one row per fit and mode
with the score for two seeds. It uses a fresh temporary workspace and folder.

Usage: python bench/gap_presets.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ASPECTS = (0.6, 0.75, 4 / 3, 16 / 9)


def photos_and_squares(images: np.ndarray, labels: np.ndarray, root: Path) -> np.ndarray:
    """Write even-numbered digits (uint8 (N, 1, 8, 8)) as "photos" under ``root/<label>/``; return the
    odd-numbered ones as synthetic squares, uint8 (M, 1, 24, 24).

    A photo is the upscaled digit framed at a random aspect from ASPECTS (a centred crop), as a camera
    with another sensor shape would frame the same scene; seeded, so the same files every time.
    """
    rng = np.random.default_rng(0)
    for i in range(0, len(labels), 2):
        a = ASPECTS[rng.integers(len(ASPECTS))]
        w, h = (48, round(48 / a)) if a >= 1 else (round(48 * a), 48)
        scene = Image.fromarray(images[i, 0]).resize((48, 48), Image.Resampling.BICUBIC)
        photo = scene.crop(((48 - w) // 2, (48 - h) // 2, (48 - w) // 2 + w, (48 - h) // 2 + h))
        (root / str(labels[i])).mkdir(parents=True, exist_ok=True)
        photo.save(root / str(labels[i]) / f"{i}.png")
    odd = range(1, len(labels), 2)
    return np.stack(
        [np.asarray(Image.fromarray(images[i, 0]).resize((24, 24), Image.Resampling.BICUBIC)) for i in odd]
    )[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="domain-gap classifiers per row")
    args = parser.parse_args()
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)  # a benchmark reads what its user can read
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-gap-"))

    import torch

    from engine import gap, preprocess
    from engine.config import DatasetConfig, SourceConfig
    from engine.datasets import build_dataset

    # 1. Real "photos" from one half of the digits, synthetic squares from the other half.
    digits = build_dataset(DatasetConfig())
    root = Path(tempfile.mkdtemp(prefix="synthlab-photos-"))
    squares = photos_and_squares(digits.train.images.numpy(), digits.train.labels.numpy(), root)
    synthetic = torch.from_numpy(squares)

    # 2. Every fit against every resize mode of the synthetic preset.
    start = time.perf_counter()
    print(f"{len(synthetic)} synthetic squares; photos at aspects {', '.join(f'{a:.2f}' for a in ASPECTS)}")
    print(f"{'fit':8} {'synthetic resize':18} domain-gap score per seed")
    for fit in ("pad", "crop", "stretch"):
        real = build_dataset(DatasetConfig(source=SourceConfig(kind="folder", path=str(root), resolution=24, fit=fit)))
        parts = (real.train, real.val, real.test)
        real_images = torch.cat([p.images for p in parts])
        pool = torch.cat([preprocess.real_aspects(p.provenance.orig_width, p.provenance.orig_height) for p in parts])
        suggested = preprocess.suggested_synthetic(fit, pool).resize
        for mode in preprocess.RESIZE_MODES:
            gen = torch.Generator().manual_seed(0)
            aspects = preprocess.draw_aspects(pool, len(synthetic), gen)
            framed = preprocess.apply(synthetic, preprocess.Preset(resize=mode), aspects=aspects, gen=gen)
            scores = [gap.domain_gap_score(real_images, framed, seed=s).accuracy for s in range(args.seeds)]
            mark = "  <- suggested" if mode == suggested else ""
            print(f"{fit:8} {mode:18} {'  '.join(f'{x:.3f}' for x in scores)}{mark}", flush=True)
    print(f"time: {time.perf_counter() - start:.0f} s on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
