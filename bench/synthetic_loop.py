"""Benchmark: the whole synthetic-data loop, timed: train a generator, fill to balance, compare with controls.

On the built-in digits with 0, 1 and 2 cut to 10% (default), or a zip of class folders with chosen
minority classes: train a conditional GAN (or, with --generator ddpm, the small diffusion model) on
the training split, generate a filtered set that fills every class up to the largest, then run real
vs add vs oversample over 3 seeds and print the results table with intervals and verdicts, the
per-class recall gains of the minority classes, and how long each stage took. It uses a fresh temporary
workspace unless SYNTHLAB_HOME is set.

Usage: python bench/synthetic_loop.py [--zip PATH --minority bird,cat,deer] [--steps 3000] [--width 32]
       [--generator cgan|ddpm] [--ddim-steps 50] [--threshold 0.95] [--duplicates 0.99] [--mixes real,add,oversample]
       [--epochs 100] [--patience 10] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", default="", help="zip of class folders (default: built-in digits)")
    parser.add_argument("--minority", default="0,1,2", help="classes cut to --keep of their training images")
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--generator", choices=("cgan", "ddpm"), default="cgan")
    parser.add_argument("--steps", type=int, default=3000, help="generator training steps")
    parser.add_argument("--width", type=int, default=32, help="generator base width")
    parser.add_argument("--ddim-steps", type=int, default=50, help="diffusion model: DDIM steps per image")
    parser.add_argument("--epochs", type=int, default=100, help="classifier max epochs (early stopping decides)")
    parser.add_argument("--patience", type=int, default=10, help="classifier early-stopping patience")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per mix")
    parser.add_argument("--threshold", type=float, default=0.95, help="filter: least real-classifier confidence kept")
    parser.add_argument("--duplicates", type=float, default=0.99, help="near-duplicate similarity rejected (1 = off)")
    parser.add_argument("--mixes", default="real,add,oversample", help="mixes to run (real is always first)")
    args = parser.parse_args()
    mixes = ["real"] + [k for k in args.mixes.split(",") if k and k != "real"]
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)  # a benchmark reads what its user can read
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-loop-"))

    from engine import experiments, verdicts
    from engine.cli_output import Progress, RunProgress, generator_progress
    from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
    from engine.datasets import build_dataset
    from engine.mixes import MixConfig
    from engine.synth import ddpm, gan, generators, make_sets, sets
    from engine.training import TrainConfig

    source = SourceConfig(kind="zip", path=args.zip) if args.zip else SourceConfig()
    imbalance = ImbalanceConfig(kind="step", minority=tuple(args.minority.split(",")), keep_fraction=args.keep)
    clock = {"start": time.perf_counter()}
    dataset = build_dataset(DatasetConfig(source=source, imbalance=imbalance))
    clock["dataset"] = time.perf_counter()
    print(
        f"dataset: {len(dataset.train):,} train ({', '.join(imbalance.minority)} at {args.keep:.0%}), "
        f"{len(dataset.test):,} test, {dataset.resolution}px x {dataset.channels}ch",
        flush=True,
    )

    if args.generator == "ddpm":
        cfg: gan.GanConfig | ddpm.DdpmConfig = ddpm.DdpmConfig(steps=args.steps, width=args.width)
    else:
        cfg = gan.GanConfig(steps=args.steps, width=args.width)
    stored = {g["id"] for g in generators.list_generators(dataset)}  # with SYNTHLAB_HOME set, a generator is reused
    gen_id = generators.train_generator(cfg, dataset, on_event=generator_progress(Progress("generator")))
    trained = "reused, trained earlier" if gen_id in stored else f"{args.steps} steps"
    clock["gan"] = time.perf_counter()
    generate = make_sets.GenerateConfig(
        generator=gen_id, sample_steps=args.ddim_steps, threshold=args.threshold, duplicate_threshold=args.duplicates
    )
    info = make_sets.make_set(
        generate,
        dataset,
        on_progress=lambda f, m: print(f"  set {f:.0%}: {m} ({time.perf_counter() - clock['gan']:.0f} s)"),
    )
    clock["set"] = time.perf_counter()
    kept, total = sum(info.counts_kept), sum(info.counts_total)
    print(
        f"generator {gen_id}: {trained} in {clock['gan'] - clock['dataset']:.0f} s; set {info.id}: kept "
        f"{kept:,} of {total:,} generated ({kept / max(1, total):.0%}) in {clock['set'] - clock['gan']:.0f} s",
        flush=True,
    )
    quality = {q["name"]: q for q in info.quality.get("per_class", [])}
    records = sets.load_manifest(info.id)
    for name in imbalance.minority:
        q = quality.get(name, {})
        scores = [r.score for r in records if r.class_name == name and r.score is not None]
        shares = ", ".join(f"{sum(x >= t for x in scores) / max(1, len(scores)):.1%} at >= {t}" for t in (0.5, 0.95))
        print(
            f"  {name}: label fidelity {q.get('label_fidelity')}, TSTR recall {q.get('tstr_recall')}; "
            f"real-classifier confidence of its {len(scores):,} candidates: {shares}"
        )

    exp = experiments.ExperimentConfig(
        dataset=dataset.config,
        mixes=tuple(MixConfig(k, synthetic_set=info.id) if k in ("add", "replace") else MixConfig(k) for k in mixes),
        train=TrainConfig(max_epochs=args.epochs, patience=args.patience, flip=dataset.channels == 3),
        seeds=tuple(range(args.seeds)),
        name="synthetic loop",
    )
    runs_progress = RunProgress(exp.train.max_epochs)  # progress with the time left on stderr, as the CLI's
    record = experiments.run_experiment(
        exp, dataset=dataset, synthetic=sets.load_set, on_run=runs_progress.on_run, on_event=runs_progress.on_event
    )
    clock["runs"] = time.perf_counter()
    summary = experiments.summarize(record.id)
    for row in experiments.results_table(summary):
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    for mix in [m for m in summary.mixes[1:] if m.recall_diff]:
        gains = [
            f"{n} {g:+.3f}" for n, g in zip(summary.class_names, mix.recall_diff, strict=True) if n in summary.minority
        ]
        print(f"minority recall gain, {mix.label}: {', '.join(gains)}")
    for note in experiments.shortfall_notes(summary):
        print(f"note: {note}")
    head = verdicts.headline(summary)
    if head is not None:
        print(f"answer: {head.sentence}")
    for warning in verdicts.health_warnings(summary):
        print(f"warning: {warning}")
    print(
        f"time: dataset {clock['dataset'] - clock['start']:.0f} s, "
        f"{args.generator} {clock['gan'] - clock['dataset']:.0f} s, "
        f"set {clock['set'] - clock['gan']:.0f} s, "
        f"{len(mixes) * args.seeds} classifier runs {clock['runs'] - clock['set']:.0f} s, "
        f"total {clock['runs'] - clock['start']:.0f} s on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
