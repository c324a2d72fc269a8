"""Headless runs: ``python -m engine experiment <config.toml | bundle.json>``.

Runs the same experiment as the Train page, with a progress line on stderr, prints the results
table with the verdicts, and writes the same workspace files, so CLI runs appear on Compare.
``python -m engine runs`` lists the runs in the workspace. Exit status: 0 when every run finished,
1 when some failed, 2 for a config that is not accepted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from engine import experiments, runs, store, verdicts
from engine.synth import sets
from engine.training import TrainEvent


def load_config(path: Path) -> experiments.ExperimentConfig:
    """An experiment config from TOML, or from an exported JSON bundle (its ``config``)."""
    if not path.is_file():
        raise experiments.ExperimentError(f"config={str(path)!r} is not a file")
    if path.suffix == ".json":
        data: dict[str, Any] = json.loads(path.read_text())
        data = data.get("config", data)
    else:
        data = tomllib.loads(path.read_text())
    return experiments.ExperimentConfig.from_dict(data)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def cmd_experiment(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(Path(args.config))
    except (ValueError, tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    state = {"run": ""}

    live = sys.stderr.isatty()  # a redrawn progress line on a terminal, one line per run in a log

    def on_run(i: int, total: int, name: str) -> None:
        state["run"] = f"[{i + 1}/{total}] {name}"
        print(f"\r{state['run']:<70}", end="" if live else "\n", file=sys.stderr, flush=True)

    def on_event(event: TrainEvent) -> None:
        if event.kind == "epoch" and live:
            line = f"{state['run']}  epoch {event.epoch}  val_acc {event.values['val_acc']:.3f}"
            print(f"\r{line:<70}", end="", file=sys.stderr, flush=True)

    try:
        record = experiments.run_experiment(cfg, synthetic=sets.load_set, on_run=on_run, on_event=on_event)
    except (experiments.ExperimentError, sets.SetError) as err:  # a set that is missing or made for other data
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    summary = experiments.summarize(record.id, n_boot=args.n_boot)
    print(f"experiment {record.id}: {cfg.name or 'unnamed'} · {cfg.model} · seeds {list(cfg.seeds)}")
    print(f"minority classes: {', '.join(summary.minority) or 'none'}")
    head = verdicts.headline(summary, n_boot=args.n_boot)
    if head is not None:
        print(f"answer: {head.sentence}")
    for warning in verdicts.health_warnings(summary):
        print(f"warning: {warning}")
    print(_table(experiments.results_table(summary)))
    for note in experiments.shortfall_notes(summary):
        print(f"note: {note}")
    short = experiments.unconverged_runs(summary)
    if short:
        print(
            f"warning: {len(short)} run(s) were still improving at max_epochs ({', '.join(short[:4])}); "
            "raise train.max_epochs so that differences are not down to training length"
        )
    method = next((c.method for m in summary.mixes for c in m.comparisons.values()), "")
    if method:
        print(f"intervals: {method}")
    failed = [r for _, _, r in record.run_ids if runs.load_record(r).status != "done"]
    for run_id in failed:
        print(f"run {run_id} failed: {runs.load_record(run_id).error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_runs(args: argparse.Namespace) -> int:
    rows = [
        {
            "run": r.id,
            "experiment": r.experiment,
            "mix": r.config.mix.label,
            "seed": r.config.seed,
            "model": r.config.model,
            "status": r.status,
            "accuracy": r.headline.get("accuracy", ""),
        }
        for r in runs.list_records()
    ]
    print(_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The folder-roots guard protects a shared web server from its visitors; the CLI runs as its own user.
    os.environ.setdefault(store.FOLDER_ROOTS_ENV, os.sep)
    parser = argparse.ArgumentParser(prog="python -m engine", description="SynthLab headless runs")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("experiment", help="run an experiment from a TOML config or an exported JSON bundle")
    exp.add_argument("config", help="path to config.toml or bundle.json")
    exp.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the intervals")
    exp.set_defaults(fn=cmd_experiment)
    sub.add_parser("runs", help="list the runs in the workspace").set_defaults(fn=cmd_runs)
    args = parser.parse_args(argv)
    return int(args.fn(args))
