"""Benchmark: is the class-balanced judge fair to the classes a dataset cut?

Loads a stratified subset of a zip of class folders (by default 500 training and 200 test photos per
class of the CIFAR-10 zip, at the native 32 px) twice: with the --minority classes cut to --keep of
their training images, and uncut. Both share one split, so their validation images are the same. For
each seed it trains the judge on each training split exactly as a set recipe does
(``filters.reference_classifier``: a simple CNN and, from 32 px, a linear probe on EfficientNet-Lite0
features, both class-balanced; the better balanced validation accuracy judges), then prints per class:

- the judge's recall on the real validation images (``filters.judge_info``) and on the held-out test
  photos, cut against uncut, and the gap on the cut classes (the fairness figure);
- keep rates at the default filter on a candidate pool of known-good images: every held-out test photo
  and --copies augmented copies of each (the lab's augment control: affine + colour jitter), judged by
  the one judge step of every set recipe (``filters.judge``: verdict at the default threshold, then
  near-duplicates against the training images and the kept ones). A keep rate is then the share of good
  images of a class the judge lets through, which is what a user needs from it on a minority class;
- the verdicts alone (no near-duplicate check) at a lower threshold, --also;
- the share of the same photos kept when they carry a wrong label (one other class drawn at random per
  image): the judge's false acceptance, by the claimed class.

Real photos rather than a generator's images: they measure the judge, not a generator (a GAN trained
for minutes on a CPU draws few recognisable CIFAR-10 images, so its keep rates would mostly say how
poor the GAN is). This misses one thing: how the judge treats realistic but flawed images.
It uses a fresh temporary workspace unless SYNTHLAB_HOME is set (a workspace that already holds the
judges loads them, so its times are not training times).

Usage: python bench/judge_fairness.py --zip ../shared/data/cifar10-jpg.zip [--per-class 500]
       [--test-per-class 200] [--size 32] [--minority bird,cat,deer] [--keep 0.1] [--seeds 3] [--copies 2]
       [--also 0.5] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.photo_transfer import subset_zip


def per_class_rate(hit: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) share of ``hit`` among the items of each label (nan for a label with none)."""
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels[hit], minlength=num_classes).astype(np.float64)
    return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, help="zip of class folders with train/ and test/")
    parser.add_argument("--per-class", type=int, default=500, help="training photos per class before the cut")
    parser.add_argument("--test-per-class", type=int, default=200, help="held-out photos per class (the pool)")
    parser.add_argument("--size", type=int, default=32, help="working resolution of the photos")
    parser.add_argument("--minority", default="bird,cat,deer")
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3, help="judge seeds (the set recipes use seed 0)")
    parser.add_argument("--copies", type=int, default=2, help="augmented copies of each held-out photo")
    parser.add_argument("--also", type=float, default=0.5, help="a lower threshold whose verdicts are shown too")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-judge-"))

    import torch

    from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
    from engine.datasets import build_dataset
    from engine.mixes import augmented_copies
    from engine.synth import filters
    from engine.synth.make_sets import GenerateConfig
    from engine.training import predict_proba

    torch.set_num_threads(args.threads)
    defaults = {f.name: f.default for f in dataclasses.fields(GenerateConfig)}
    threshold, duplicate_threshold = float(defaults["threshold"]), float(defaults["duplicate_threshold"])

    # 1. The photos: one subset, loaded with the minority classes cut and uncut (same split, same val).
    clock = time.perf_counter()
    subset = Path(tempfile.mkdtemp(prefix="photos-")) / "subset.zip"
    subset_zip(Path(args.zip), subset, args.per_class, args.test_per_class)
    source = SourceConfig(kind="zip", path=str(subset), resolution=args.size)
    minority_names = tuple(args.minority.split(","))
    cut_imbalance = ImbalanceConfig(kind="step", minority=minority_names, keep_fraction=args.keep)
    splits = {
        "cut": build_dataset(DatasetConfig(source=source, imbalance=cut_imbalance)),
        "uncut": build_dataset(DatasetConfig(source=source)),
    }
    cut = splits["cut"]
    if not torch.equal(cut.val.images, splits["uncut"].val.images):
        raise SystemExit("the cut and uncut datasets do not share their validation images")
    names = cut.class_names
    num_classes = len(names)
    minority = [names.index(c) for c in minority_names]
    print(
        f"dataset: {len(cut.train):,} train cut ({args.minority} at {args.keep:.0%}) / "
        f"{len(splits['uncut'].train):,} uncut, {len(cut.val):,} val, {len(cut.test):,} test at "
        f"{cut.resolution} px; loaded in {time.perf_counter() - clock:.0f} s; torch threads {args.threads}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    # 2. The candidate pool: held-out photos and their augmented copies, with true and with wrong labels.
    test = cut.test
    index = np.arange(len(test))
    pool = torch.cat([test.images] + [augmented_copies(test, index, seed=1 + k).images for k in range(args.copies)])
    labels = np.tile(test.labels.numpy(), 1 + args.copies)
    is_copy = np.repeat(np.arange(1 + args.copies) > 0, len(test))
    rng = np.random.default_rng(0)
    wrong = (labels + rng.integers(1, num_classes, size=len(labels))) % num_classes
    y_test = test.labels.numpy()
    print(
        f"candidate pool: {len(test):,} held-out photos + {args.copies} augmented copies each = {len(pool):,}; "
        f"default filter: verify at threshold {threshold:g}, near-duplicates at similarity {duplicate_threshold:g}",
        flush=True,
    )

    # 3. Per seed and split: train the judge as the set recipes do, then judge the pool.
    rows: dict[str, dict[str, list[np.ndarray]]] = {s: {} for s in splits}
    for seed in range(args.seeds):
        for split, dataset in splits.items():
            start = time.perf_counter()
            judge = filters.reference_classifier(dataset, seed=seed)
            seconds = time.perf_counter() - start
            info = filters.judge_info(dataset, seed=seed)
            assert info is not None
            judge_json = filters._reference_files(dataset, seed)[0].with_name("judge.json")
            candidates = json.loads(judge_json.read_text())["candidates"]
            probs = predict_proba(judge, pool)
            verdict = filters.confidence_filter(probs, labels, names, threshold=threshold)
            train_names = [Path(o).name for o in dataset.train.provenance.origin]
            duplicates = filters.DuplicateIndex(
                dataset.train.images, dataset.train.labels.numpy(), train_names, duplicate_threshold
            )
            kept = np.zeros(num_classes, dtype=np.int64)
            wanted = np.full(num_classes, len(pool), dtype=np.int64)  # no count cap: every good image may stay
            reasons = filters.judge(pool.numpy(), labels, duplicates, kept, wanted, verdict=verdict)
            keep = np.array([r == "" for r in reasons])
            false_keep = filters.confidence_filter(probs, wrong, names, threshold=threshold).keep
            lenient = filters.confidence_filter(probs, labels, names, threshold=args.also)
            measured = {
                "val recall": np.array(info.val_recall),
                "test recall": per_class_rate(probs[: len(test)].argmax(1) == y_test, y_test, num_classes),
                "keep photos": per_class_rate(keep[~is_copy], labels[~is_copy], num_classes),
                "keep copies": per_class_rate(keep[is_copy], labels[is_copy], num_classes),
                f"keep at {args.also:g}": per_class_rate(lenient.keep, labels, num_classes),
                "wrong kept": per_class_rate(false_keep, wrong, num_classes),
            }
            for key, value in measured.items():
                rows[split].setdefault(key, []).append(value)
            scores = ", ".join(f"{n} {s:.3f}" for n, s in candidates.items())
            print(
                f"seed {seed} {split:5s}: judge {info.name!r}; balanced val accuracy of the candidates: {scores}; "
                f"cut-class val recall {np.mean(measured['val recall'][minority]):.3f}, keep rate (photos and "
                f"copies) {np.mean(keep):.3f}, duplicate rejections "
                f"{sum(r.startswith('near-duplicate') for r in reasons)}; {seconds:.0f} s to train",
                flush=True,
            )
    _print_table(rows, names, minority)


def _print_table(rows: dict[str, dict[str, list[np.ndarray]]], names: tuple[str, ...], minority: list[int]) -> None:
    """Per class, each measure cut / uncut (mean over seeds), then the gaps on the cut classes."""
    mean = {s: {k: np.mean(v, axis=0) for k, v in m.items()} for s, m in rows.items()}
    measures = list(mean["cut"])
    print("\nper class, cut / uncut (mean over seeds); * = a cut class")
    print(f"{'class':12s}" + "".join(f"{m:>17s}" for m in measures))
    for c, name in enumerate(names):
        cells = "".join(f"{mean['cut'][m][c]:>9.3f} / {mean['uncut'][m][c]:.3f}" for m in measures)
        print(f"{name + ('*' if c in minority else ''):12s}{cells}")
    print("\ngap on the cut classes, uncut minus cut, in points (mean ± std over seeds; per class):")
    for m in measures:
        gaps = [100 * (u[minority] - c[minority]) for c, u in zip(rows["cut"][m], rows["uncut"][m], strict=True)]
        per_seed = [float(np.mean(g)) for g in gaps]
        per_class = np.mean(gaps, axis=0)
        classes = ", ".join(f"{names[c]} {g:+.1f}" for c, g in zip(minority, per_class, strict=True))
        print(f"  {m:13s} {np.mean(per_seed):+6.1f} ± {np.std(per_seed):.1f}   ({classes})")


if __name__ == "__main__":
    main()
