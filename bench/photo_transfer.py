"""Benchmark: a net trained from scratch against a pretrained backbone (linear probe, fine-tuned) on photos.

Takes a stratified subset of a zip of class folders (by default 500 training and 100 test photos per
class of the CIFAR-10 zip), cuts the minority classes to --keep of their training images, stores the
photos at --size px and trains the real baseline with three classifiers: ``simple_cnn`` from
scratch, EfficientNet-Lite0 as a linear probe on cached features, and EfficientNet-Lite0 with its
last stages fine-tuned (at most --finetune-epochs, the best validation epoch kept). Prints accuracy,
minority recall (mean ± std over seeds), the best epoch of each seed and the wall time of each phase,
and runs the probe a second time to time the feature cache. --phases picks which of the three run
(the from-scratch net is by far the slowest).
It uses a fresh temporary workspace unless SYNTHLAB_HOME is set. torch threads: --threads (default 1
per job on a busy machine is the safe choice; 2 on a quiet 2-core one).

Usage: python bench/photo_transfer.py --zip ../shared/data/cifar10-jpg.zip [--per-class 500] [--size 128]
       [--minority bird,cat,deer] [--keep 0.1] [--seeds 3] [--finetune-epochs 5] [--finetune-seeds 1]
       [--phases scratch,probe,finetune] [--grid]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
PHASES = ("scratch", "probe", "finetune")  # the from-scratch net, the linear probe (twice), the fine-tune


def subset_zip(source: Path, target: Path, per_class: int, test_per_class: int) -> None:
    """Copy the first ``per_class`` training and ``test_per_class`` test photos of each class (sorted names)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        names = sorted(n for n in zin.namelist() if not n.endswith("/"))
        taken: dict[tuple[str, str], int] = {}
        for name in names:
            parts = name.split("/")
            if len(parts) < 3:
                continue
            split, label = parts[-3], parts[-2]
            limit = per_class if split == "train" else test_per_class
            key = (split, label)
            if taken.get(key, 0) < limit:
                taken[key] = taken.get(key, 0) + 1
                zout.writestr("/".join(parts[-3:]), zin.read(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, help="zip of class folders with train/ and test/")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="working resolution of the photos")
    parser.add_argument("--minority", default="bird,cat,deer")
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30, help="from-scratch max epochs")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"which classifiers to train, comma-separated from {PHASES}"
    )
    parser.add_argument("--grid", action="store_true", help="only time 4 mixes x 5 seeds with the probe, twice")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if not phases or any(p not in PHASES for p in phases):
        parser.error(f"--phases={args.phases!r} is not accepted: comma-separated names from {', '.join(PHASES)}")
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-photo-"))

    import torch

    from engine import experiments, runs
    from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
    from engine.datasets import build_dataset
    from engine.mixes import MixConfig
    from engine.training import TrainConfig

    torch.set_num_threads(args.threads)
    # 1. The photos: a stratified subset, stored at the working size, minority classes cut.
    clock = time.perf_counter()
    subset = Path(tempfile.mkdtemp(prefix="photos-")) / "subset.zip"
    subset_zip(Path(args.zip), subset, args.per_class, args.test_per_class)
    imbalance = ImbalanceConfig(kind="step", minority=tuple(args.minority.split(",")), keep_fraction=args.keep)
    data_cfg = DatasetConfig(
        source=SourceConfig(kind="zip", path=str(subset), resolution=args.size), imbalance=imbalance
    )
    dataset = build_dataset(data_cfg)
    print(
        f"dataset: {len(dataset.train):,} train ({args.minority} at {args.keep:.0%}), {len(dataset.val):,} val, "
        f"{len(dataset.test):,} test at {dataset.resolution} px; loaded in {time.perf_counter() - clock:.0f} s; "
        f"torch threads {args.threads}, {os.cpu_count()} CPUs",
        flush=True,
    )
    minority = [dataset.class_names.index(c) for c in imbalance.minority]

    def run(model: str, train: TrainConfig, seeds: int) -> None:
        start = time.perf_counter()
        cfg = experiments.ExperimentConfig(
            dataset=data_cfg, mixes=(MixConfig("real"),), model=model, train=train, seeds=tuple(range(seeds))
        )
        record = experiments.run_experiment(cfg, dataset=dataset)
        seconds = time.perf_counter() - start
        accs, recalls, epochs = [], [], []
        for _, _, run_id in record.run_ids:
            rec = runs.load_record(run_id)
            if rec.status != "done":
                print(f"  {model}: run {run_id} {rec.status}: {rec.error}")
                continue
            y, probs = runs.load_predictions(run_id)
            pred = probs.argmax(1)
            epochs.append(f"{rec.best_epoch}/{rec.epochs}")
            accs.append(float(np.mean(pred == y)))
            recalls.append(float(np.mean([np.mean(pred[y == c] == c) for c in minority])))
        print(
            f"{model:32s} accuracy {np.mean(accs):.3f} ± {np.std(accs):.3f}  minority recall "
            f"{np.mean(recalls):.3f} ± {np.std(recalls):.3f}  ({len(accs)} seeds, {seconds:.0f} s; "
            f"best epoch / epochs run: {', '.join(epochs)})",
            flush=True,
        )

    if args.grid:  # 4 mixes x 5 seeds with the probe, twice: the second run reads every feature from the cache
        for attempt in ("first (features computed)", "second (features cached)"):
            start = time.perf_counter()
            grid = experiments.ExperimentConfig(
                dataset=data_cfg,
                mixes=(MixConfig("oversample"), MixConfig("augment"), MixConfig("reweight")),
                model="probe:efficientnet_lite0",
                train=TrainConfig(max_epochs=100, patience=10),
                seeds=tuple(range(5)),
            )
            record = experiments.run_experiment(grid, dataset=dataset)
            done = sum(runs.load_record(r).status == "done" for _, _, r in record.run_ids)
            print(f"probe grid 4 mixes x 5 seeds, {attempt}: {done} runs in {time.perf_counter() - start:.0f} s")
        return
    # 2. The three classifiers, then the probe again: its features now come from the cache.
    if "scratch" in phases:
        run("simple_cnn", TrainConfig(max_epochs=args.epochs, patience=5, flip=True), args.seeds)
    if "probe" in phases:
        run("probe:efficientnet_lite0", TrainConfig(max_epochs=100, patience=10), args.seeds)
        run("probe:efficientnet_lite0", TrainConfig(max_epochs=100, patience=10), args.seeds)
    if "finetune" in phases:
        run(
            "finetune:efficientnet_lite0",
            TrainConfig(max_epochs=args.finetune_epochs, patience=0, lr=1e-4, flip=True),
            args.finetune_seeds,
        )


if __name__ == "__main__":
    main()
