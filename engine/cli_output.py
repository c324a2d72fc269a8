"""What the CLI prints: progress with the time left, the dataset summary and the 120-column results table.

:class:`Progress` writes one long step's progress on stderr (a redrawn line on a terminal, plain lines
in a log); the adapters turn the engine's callbacks (dataset decoding, generator steps, set rounds,
runs and epochs) into it. :func:`report` prints an experiment: the dataset first (:class:`DatasetFacts`:
name, resolution, split counts, skipped files), then per mix the runs done, the primary metric,
accuracy, macro-F1 and minority recall as mean ± sd with their differences from the real baseline and
the verdict (:func:`compact_rows`); ``--wide`` adds the Compare page's columns (:func:`wide_rows`) and
``--csv`` writes every number (:func:`csv_rows`). Then the answer, warnings and notes. Where this stops:
no argument parsing and no engine work (``cli.py``).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from engine import datasets, experiments, runs, verdicts
from engine.config import DatasetConfig
from engine.datasets import LabDataset, user_file_name
from engine.synth import make_sets
from engine.synth.events import GeneratorEvent
from engine.training import TrainEvent

WIDTH = 120  # the results table and the notes fit this many columns
WORDS = {experiments.MINORITY_RECALL: "minority recall", "accuracy": "accuracy", "f1_macro": "macro-F1"}


# Progress on stderr -------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 07 s"`` or ``"1 h 05 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """One long step's progress with the time left, on stderr.

    On a terminal one line is redrawn (at most five times a second); in a log a line is written each
    time the step passes another tenth, or at a ``milestone`` (a new run, a new round), so a log of a
    long GAN holds about ten lines, each with its estimate.
    """

    drawn_live = False  # a redrawn line is on screen: an error message starts on a new line

    def __init__(self, what: str, *, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.what, self.stream = what, stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.start = self.last = time.monotonic()
        self.tenth, self.width = -1, 0

    def update(self, fraction: float, detail: str = "", *, milestone: bool = False) -> None:
        fraction, now = min(max(fraction, 0.0), 1.0), time.monotonic()
        tenth = int(fraction * 10)
        if self.live and now - self.last < 0.2 and not milestone:
            return
        if not self.live and tenth <= self.tenth and not milestone:
            return
        self.tenth, self.last = max(self.tenth, tenth), now
        elapsed = now - self.start
        left = f"about {duration(elapsed * (1 - fraction) / fraction)} left" if fraction >= 0.01 else "estimating"
        line = f"{self.what} {fraction:4.0%}  {detail}  ({duration(elapsed)} so far, {left})".replace("  (", " (")
        self._write(line, final=False)

    def finish(self, detail: str) -> None:
        self._write(f"{self.what}: {detail} ({duration(time.monotonic() - self.start)})", final=True)

    def _write(self, line: str, *, final: bool) -> None:
        if self.live:
            line = line[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r" + line.ljust(self.width) + ("\n" if final else ""))
            self.width = 0 if final else len(line)
            Progress.drawn_live = not final
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def say(text: str, *, wrap: bool = True) -> None:
    """A message on stderr, after any redrawn progress line; wrapped to the table's width unless ``wrap`` is off."""
    if Progress.drawn_live:
        sys.stderr.write("\n")
        Progress.drawn_live = False
    print(textwrap.fill(text, WIDTH, subsequent_indent="  ") if wrap else text, file=sys.stderr, flush=True)


def echo(text: str) -> None:
    """A line of the report on stdout, wrapped to the table's width."""
    print(textwrap.fill(text, WIDTH, subsequent_indent="  "))


def dataset_progress() -> tuple[Progress, Callable[[int, int], None]]:
    """The dataset step and the ``on_progress(done, total)`` that decoding reports to."""
    progress = Progress("dataset")
    return progress, lambda done, total: progress.update(done / max(1, total), f"{done:,} of {total:,} images read")


def generator_progress(progress: Progress) -> Callable[[GeneratorEvent], None]:
    """Generator training's ``on_event``: steps with their losses; warnings (e.g. mode collapse) on a line each."""

    def on_event(event: GeneratorEvent) -> None:
        if event.kind == "step":
            losses = "  ".join(f"{k} {v:.3g}" for k, v in list(event.values.items())[:3])
            progress.update(
                event.step / max(1, event.total_steps), f"step {event.step:,}/{event.total_steps:,} {losses}"
            )
        elif event.kind == "warning":
            say(f"warning: {event.message}")

    return on_event


def set_progress(progress: Progress) -> make_sets.ProgressFn:
    """Set making's ``on_progress``: each new stage (judge training, a round, quality) is a milestone."""
    said = {"stage": [""]}

    def on_progress(fraction: float, message: str) -> None:
        stage = message.split()[:2]  # "round 3:", "training the", "measuring quality"
        progress.update(fraction, message, milestone=stage != said["stage"])
        said["stage"] = stage

    return on_progress


class RunProgress:
    """An experiment's runs as one step: runs done plus the current run's epochs against the epochs runs took."""

    def __init__(self, max_epochs: int) -> None:
        self.progress = Progress("runs")
        self.max_epochs = max_epochs
        self.epochs_taken: list[int] = []  # epochs of the runs finished so far (early stopping decides them)
        self.current: tuple[int, int, str] = (0, 1, "")  # run index, runs, name
        self.epoch = 0

    def on_run(self, i: int, total: int, name: str) -> None:
        if i and self.epoch:
            self.epochs_taken.append(self.epoch)
        self.current, self.epoch = (i, total, name), 0
        self.progress.update(i / total, f"[{i + 1}/{total}] {name}", milestone=True)

    def on_event(self, event: TrainEvent) -> None:
        if event.kind != "epoch":
            return
        self.epoch = event.epoch
        i, total, name = self.current
        expected = float(np.mean(self.epochs_taken)) if self.epochs_taken else self.max_epochs
        within = min(0.95, event.epoch / max(1.0, expected))
        acc = event.values.get("val_acc")
        detail = f"[{i + 1}/{total}] {name}  epoch {event.epoch}" + (f"  val acc {acc:.3f}" if acc is not None else "")
        self.progress.update((i + within) / total, detail)


# Tables ---------------------------------------------------------------------------------------------


def text_table(rows: Sequence[dict[str, Any]], *, squeeze: str | None = None) -> str:
    """Rows as aligned columns; column ``squeeze`` is shortened (…) until the lines fit :data:`WIDTH`."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    size = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    if squeeze is not None:
        total = sum(size.values()) + 2 * (len(cols) - 1)
        size[squeeze] = max(8, size[squeeze] - max(0, total - WIDTH))

    def cell(c: str, value: Any) -> str:
        text = str(value)
        return (text if len(text) <= size[c] else text[: size[c] - 1] + "…").ljust(size[c])

    lines = ["  ".join(cell(c, c) for c in cols), "  ".join("-" * size[c] for c in cols)]
    lines += ["  ".join(cell(c, r[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class DatasetFacts:
    """What the results table says about the data first; None where the workspace no longer knows it."""

    name: str
    resolution: int | None
    channels: int | None
    train: int | None
    val: int | None
    test: int | None
    skipped: dict[str, int] | None  # skipped files by reason

    def line(self) -> str:
        pixels = f"{self.resolution} px {'grayscale' if self.channels == 1 else 'RGB'}" if self.resolution else "? px"
        counts = " · ".join(f"{k} {'?' if v is None else f'{v:,}'}" for k, v in self._splits())
        if self.skipped is None:
            skipped = "skipped files: not known (the decoded source is no longer in the cache)"
        else:
            total = sum(self.skipped.values())
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items())
            skipped = f"skipped files: {total:,}" + (f" ({reasons})" if reasons else "")
        return f"dataset: {self.name} · {pixels} · {counts} · {skipped}"

    def _splits(self) -> list[tuple[str, int | None]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]


def describe(cfg: DatasetConfig) -> str:
    """A dataset config in a few words: its source and what was made scarce."""
    source = cfg.source
    name = {"digits": "digits (built-in)", "torchvision": source.name}.get(source.kind) or user_file_name(source.path)
    imb = cfg.imbalance
    scarce = {
        "step": f"{', '.join(imb.minority)} at {imb.keep_fraction:.0%}",
        "longtail": f"long tail, ratio {imb.ratio:g}",
        "kshot": f"{imb.k} per class",
        "subsample": f"{imb.fraction:.0%} of every class",
    }.get(imb.kind)
    return f"{name}, {scarce}" if scarce else name


def facts_of(dataset: LabDataset) -> DatasetFacts:
    return DatasetFacts(
        describe(dataset.config),
        dataset.resolution,
        dataset.channels,
        len(dataset.train),
        len(dataset.val),
        len(dataset.test),
        dataset.report.reasons(),
    )


def stored_facts(summary: experiments.ExperimentSummary) -> DatasetFacts:
    """The facts of a stored experiment's dataset from its run records, without decoding the source again."""
    record = summary.experiment
    recs = [runs.load_record(run_id) for _, _, run_id in record.run_ids]
    counted = next((r for r in recs if r.val_counts), None)
    base = next((r for r in recs if r.config.mix.kind == "real" and r.real_counts), None)
    meta_files = [runs.runs_dir() / r.id / "model.json" for r in recs]
    meta: dict[str, Any] = next((json.loads(p.read_text()) for p in meta_files if p.is_file()), {})
    report = datasets.cached_report(record.dataset_key.partition("#")[0])  # the decoded source, if still cached
    skipped = report.reasons() if report is not None else None
    return DatasetFacts(
        describe(record.config.dataset),
        meta.get("resolution"),
        meta.get("channels"),
        sum(base.real_counts) if base else None,
        sum(counted.val_counts) if counted else None,
        sum(counted.test_counts) if counted else None,
        skipped,
    )


def _primary(summary: experiments.ExperimentSummary) -> str:
    """The headline's metric (fixed by the config), as :func:`verdicts.headline` judges it."""
    metric = verdicts.primary_metric(summary.experiment.config)
    return "f1_macro" if metric == experiments.MINORITY_RECALL and not summary.minority else metric


def minority_recalls(summary: experiments.ExperimentSummary) -> dict[str, list[float]]:
    """Per mix, the mean recall of the minority classes in each finished run (from its per-class recalls), over
    those of them its test set holds."""
    out: dict[str, list[float]] = {m.label: [] for m in summary.mixes}
    index = [summary.class_names.index(n) for n in summary.minority]
    for label, _, run_id in summary.experiment.run_ids:
        metrics = runs.load_metrics(run_id) if index and runs.load_record(run_id).status == "done" else None
        measured = [metrics.per_class[i].recall for i in index if metrics.per_class[i].support] if metrics else []
        if measured:  # a class without test images has no recall (health_warnings names it)
            out[label].append(float(np.mean(measured)))
    return out


def _spread(mean: float, sd: float, n: int) -> str:
    if n == 0 or np.isnan(mean):
        return "—"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {sd:.3f}"


def compact_rows(summary: experiments.ExperimentSummary) -> list[dict[str, str]]:
    """The 120-column table: per mix its runs, the primary metric (*), accuracy, macro-F1 and minority recall as
    mean ± sd over seeds, the differences from the real baseline (Δ) and the verdict on the primary metric."""
    primary, recalls = _primary(summary), minority_recalls(summary)
    shown = [experiments.MINORITY_RECALL] if summary.minority else []
    order = [primary, *(m for m in (*shown, "accuracy", "f1_macro") if m != primary)]
    rows = []
    for mix in summary.mixes:
        row = {"mix": mix.label, "runs": f"{mix.runs_done}/{mix.runs_total}"}
        for metric in order:
            name = WORDS[metric] + ("*" if metric == primary else "")
            if metric == experiments.MINORITY_RECALL:
                values = recalls[mix.label]
                sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                row[name] = _spread(float(np.mean(values)) if values else np.nan, sd, len(values))
            else:
                row[name] = _spread(mix.means[metric], mix.stds[metric], mix.runs_done)
            if metric in (primary, experiments.MINORITY_RECALL):
                comp = mix.comparisons.get(metric)
                row["Δ" + " " * (metric != primary)] = (
                    f"{comp.diff:+.3f}" if comp and experiments.measured(comp) else "—"
                )
        comp = mix.comparisons.get(primary)
        row["verdict"] = experiments.verdict_word(comp) if comp else ("baseline" if mix.kind == "real" else "—")
        rows.append(row)
    return rows


def wide_rows(summary: experiments.ExperimentSummary) -> list[dict[str, Any]]:
    """The compact table and every column of the Compare page's table beside it."""
    full = experiments.results_table(summary)
    skip = {"mix", "runs", "accuracy", "f1_macro"}
    return [
        {**c, **{k: v for k, v in f.items() if k not in skip}} for c, f in zip(compact_rows(summary), full, strict=True)
    ]


def csv_rows(summary: experiments.ExperimentSummary) -> list[dict[str, Any]]:
    """Everything, as plain numbers: means and sds, differences with both intervals, per-class recall changes."""
    recalls, rows = minority_recalls(summary), []
    compared = (experiments.MINORITY_RECALL, *experiments.COMPARED)
    for mix in summary.mixes:
        row: dict[str, Any] = {"mix": mix.label, "kind": mix.kind, "runs_done": mix.runs_done}
        row.update(runs_total=mix.runs_total, synthetic_share=round(mix.synthetic_share, 4))
        values = recalls[mix.label]
        row["minority_recall_mean"] = float(np.mean(values)) if values else ""
        row["minority_recall_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else ""
        for metric, mean in mix.means.items():
            row[f"{metric}_mean"], row[f"{metric}_sd"] = ("", "") if np.isnan(mean) else (mean, mix.stds[metric])
        for metric in compared:
            comp, seed = mix.comparisons.get(metric), mix.seed_tests.get(metric)
            comp = comp if comp and experiments.measured(comp) else None  # not measured: empty cells
            row[f"{metric}_diff"] = comp.diff if comp else ""
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = (comp.ci_low, comp.ci_high) if comp else ("", "")
            row[f"{metric}_verdict"] = comp.verdict if comp else ("not measured" if metric in mix.comparisons else "")
            row[f"{metric}_seed_t_low"], row[f"{metric}_seed_t_high"] = (
                (seed.ci_low, seed.ci_high) if seed else ("", "")
            )
        diffs = mix.recall_diff or ("",) * len(summary.class_names)
        row.update({f"recall_diff {name}": d for name, d in zip(summary.class_names, diffs, strict=True)})
        row["short"] = "; ".join(mix.short)
        rows.append(row)
    return rows


def report(
    summary: experiments.ExperimentSummary, facts: DatasetFacts, *, n_boot: int, wide: bool, csv_path: str | None
) -> int:
    """Print the dataset summary, the table, the answer, warnings and notes; 1 when some runs failed."""
    cfg, record = summary.experiment.config, summary.experiment
    echo(facts.line())
    echo(f"experiment {record.id}: {cfg.name or 'unnamed'} · {cfg.model} · seeds {list(cfg.seeds)}")
    echo(f"minority classes: {', '.join(summary.minority) or 'none'}")
    print(text_table(wide_rows(summary)) if wide else text_table(compact_rows(summary), squeeze="mix"))
    primary = _primary(summary)
    echo(
        f"*primary metric: {WORDS[primary]}, fixed by the config before the runs. Values: mean ± sd over seeds; "
        "Δ: difference from real on the column to its left (mean over paired seeds); verdict: the 95% interval of "
        f"the Δ of {WORDS[primary]} against real." + ("" if wide else " More columns with --wide.")
    )
    head = verdicts.headline(summary, n_boot=n_boot)
    if head is not None:
        echo(f"answer: {head.sentence}")
    for warning in verdicts.health_warnings(summary):
        echo(f"warning: {warning}")
    for note in experiments.shortfall_notes(summary):
        echo(f"note: {note}")
    short = experiments.unconverged_runs(summary)
    if short:
        echo(
            f"warning: {len(short)} run(s) were still improving at max_epochs ({', '.join(short[:4])}); "
            "raise train.max_epochs so that differences are not down to training length"
        )
    method = next((c.method for m in summary.mixes for c in m.comparisons.values()), "")
    if method:
        echo(f"intervals: {method}")
    if csv_path:
        rows = csv_rows(summary)
        with open(csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        echo(f"wrote {csv_path}")
    recs = [runs.load_record(run_id) for _, _, run_id in record.run_ids]
    waiting = [r for r in recs if r.status in runs.ACTIVE]
    if waiting:
        say(f"{len(waiting)} run(s) are still queued or running: the table shows the finished ones")
    failed = [r for r in recs if r.status not in (*runs.ACTIVE, "done")]
    for rec in failed:
        say(f"run {rec.id} {rec.status}: {rec.error or 'no message'}")
    return 1 if failed else 0
