"""The CLI: the whole loop from one TOML, re-printed tables, set making, listings, exit codes, progress lines."""

from __future__ import annotations

import csv
import io
import re
import tomllib
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import recall_score

from engine import cli_output, experiments, runs
from engine.cli import main
from engine.loop import LoopConfig
from engine.store import REPO_ROOT
from engine.synth import filters, gan, generators, quality, sets
from tests.test_experiments import fabricate

LOOP = """
name = "tiny loop"
seeds = [0, 1]

[dataset.source]
kind = "zip"
path = "{zip}"

[dataset.imbalance]
kind = "step"
minority = ["a"]
keep_fraction = 0.3

[generator]
kind = "cgan"
steps = 4
width = 8
batch_size = 8
sample_every = 4

[generate]
threshold = 0.0

[train]
max_epochs = 2
batch_size = 16
device = "cpu"
precision = "fp32"

[[mixes]]
kind = "real"

[[mixes]]
kind = "add"
"""


def tiny_zip(path: Path) -> Path:
    """Three classes of 30 grey 8 px images each (a different brightness per class) and one file that is no image."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for c, name in enumerate("abc"):
            for i in range(30):
                pixels = (rng.integers(0, 60, (8, 8)) + 80 * c).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                archive.writestr(f"{name}/{i:03d}.png", buffer.getvalue())
        archive.writestr("notes.txt", "not an image")
    return path


@pytest.fixture(autouse=True)
def quick_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The set's judge and its quality measure train for two epochs: this file tests the CLI, not them."""
    monkeypatch.setattr(
        filters, "train_reference_classifier", partial(filters.train_reference_classifier, max_epochs=2)
    )
    monkeypatch.setattr(quality, "quality_report", partial(quality.quality_report, max_epochs=2))


@pytest.fixture
def loop_toml(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str = LOOP) -> Path:
        path = tmp_path / "loop.toml"
        path.write_text(text.format(zip=tiny_zip(tmp_path / "tiny.zip")))
        return path

    return write


def table_of(out: str) -> list[str]:
    """The results table's lines: from its header to the line before the footnote."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("mix "))
    end = next(i for i, line in enumerate(lines) if line.startswith("*primary metric"))
    return lines[start:end]


def test_one_toml_runs_the_whole_loop_and_every_step_is_reused_or_reprinted(
    loop_toml: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. The loop: dataset -> generator -> set -> experiment whose add mix uses the set.
    config = loop_toml()
    assert main(["loop", str(config), "--n-boot", "100"]) == 0
    out, err = capsys.readouterr()
    [info] = sets.list_sets()
    [generator] = generators.list_generators()
    [record] = experiments.list_experiments()
    assert info.generator == generator["id"] and f"set {info.id}: kept" in out
    assert {m.synthetic_set for m in record.config.mixes if m.kind != "real"} == {info.id}  # add and its controls
    assert re.search(r"generator cgan +\d+%.*step \d/4.*left\)", err)  # progress with the time left, in a log
    assert re.search(r"runs +\d+%.*\[\d/4\].*left\)", err) and "Traceback" not in err
    # 2. The results: the dataset summary first, a table within 120 columns with minority recall as a value.
    facts = next(line for line in out.splitlines() if line.startswith("dataset:"))
    assert "tiny.zip, a at 30%" in facts and "8 px grayscale" in facts and "train 48 · val 9 · test 18" in facts
    assert "skipped files: 1 (1 not an image)" in facts
    table = table_of(out)
    assert max(map(len, table)) <= 120 and table[0].split()[:4] == ["mix", "runs", "minority", "recall*"]
    recalls = []  # the minority class "a" is label 0
    for run_id in [run_id for label, _, run_id in record.run_ids if label == "add fill"]:
        y_true, probs = runs.load_predictions(run_id)
        recalls.append(recall_score(y_true, probs.argmax(1), labels=[0], average="macro"))
    add_row = next(line for line in table if line.startswith("add fill"))
    assert f"{np.mean(recalls):.3f} ± {np.std(recalls, ddof=1):.3f}" in add_row
    # 3. show re-prints the same table; --csv writes every number.
    csv_path = tmp_path / "results.csv"
    assert main(["show", record.id, "--n-boot", "100", "--csv", str(csv_path)]) == 0
    shown = capsys.readouterr().out
    assert table_of(shown) == table and facts in shown
    rows = {r["mix"]: r for r in csv.DictReader(csv_path.read_text().splitlines())}
    assert float(rows["add fill"]["minority_recall_mean"]) == pytest.approx(np.mean(recalls))
    assert {"recall_diff a", "accuracy_ci_low", "f1_macro_seed_t_high"} <= set(rows["real"])
    # 4. The same request again: generator and set are reused, nothing new is stored.
    assert main(["make-set", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "reused: trained earlier" in err and "reused: made earlier" in err and f"set {info.id}" in out
    # 5. make-set from a generator id alone: its dataset is known; per-class counts are printed.
    request = ["--generator", generator["id"], "--per-class", "2", "--classes", "b", "--threshold", "0"]
    assert main(["make-set", *request]) == 0
    out = capsys.readouterr().out
    newest = sets.list_sets()[0]
    assert newest.id != info.id and list(newest.counts_kept) == [0, 2, 0]
    assert re.search(r"^b\s+21\s+2\s+2\s+\d+$", out, re.M)  # class, real train, asked, kept, generated
    # 6. Listings and the generator id on stdout.
    assert main(["sets"]) == 0 and main(["generators"]) == 0
    listed = capsys.readouterr().out
    assert info.id in listed and newest.id in listed and generator["id"] in listed and "tiny.zip, a at 30%" in listed
    assert main(["generate", str(config)]) == 0 and capsys.readouterr().out.strip() == generator["id"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({'minority = ["a"]': 'minority = ["z"]'}, "imbalance.minority='z' is not a class of this dataset"),
        ({'path = "{zip}"': 'path = "{zip}-missing.zip"'}, "missing.zip' is not a file"),
        ({"steps = 4": "stepz = 4"}, "generator.stepz=4 is not accepted: expected keys"),
        ({"threshold = 0.0": 'classes = ["q"]'}, "generate.classes='q' is not accepted: classes are a, b, c"),
        ({"threshold = 0.0": "threshold = 3"}, "generate.threshold=3 is not accepted"),
        ({'kind = "add"': 'kind = "oversample"'}, "a loop needs an 'add' or 'replace'"),
        ({"[train]": "[train\n"}, "is not valid TOML"),
    ],
)
def test_bad_input_exits_with_2_and_one_line_naming_the_field(
    loop_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str], change: dict[str, str], message: str
) -> None:
    text = LOOP
    for old, new in change.items():
        text = text.replace(old, new)
    config = loop_toml(text)
    assert main(["loop", str(config)]) == 2
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert message in line and err.rstrip().endswith(line) and "Traceback" not in err and "Error" not in line
    assert generators.list_generators() == [] and runs.list_records() == []  # refused before anything long ran


def test_ids_and_paths_that_do_not_exist_exit_with_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "20990101-000000-beef"]) == 2
    assert main(["make-set"]) == 2
    assert main(["make-set", "--generator", "cgan-000000000000"]) == 2
    assert main(["export-set", "nope", str(tmp_path / "x.zip")]) == 2
    assert main(["export-model", "nope", str(tmp_path / "out")]) == 2
    assert main(["generate", str(tmp_path / "missing.toml")]) == 2
    (tmp_path / "bundle.json").write_text("{not json")
    assert main(["experiment", str(tmp_path / "bundle.json")]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 7 and all(line.startswith("error: ") for line in lines) and "Traceback" not in err, lines
    assert "experiment='20990101-000000-beef'" in lines[0] and "--generator='cgan-000000000000'" in lines[2]
    assert "set id 'nope'" in lines[3] and "run='nope'" in lines[4] and "missing.toml" in lines[5]
    assert "bundle.json' is not accepted: it is not valid JSON" in lines[6]


def test_the_table_fits_120_columns_and_shows_the_primary_metric_as_a_value() -> None:
    summary = experiments.summarize(fabricate(0.05, 0.003), n_boot=200)  # no imbalance: macro-F1 is primary
    rows = cli_output.compact_rows(summary)
    assert list(rows[0]) == ["mix", "runs", "macro-F1*", "Δ", "accuracy", "verdict"]
    over = summary.mixes[1]
    assert rows[1]["macro-F1*"] == f"{over.means['f1_macro']:.3f} ± {over.stds['f1_macro']:.3f}"
    assert rows[1]["Δ"] == f"{over.comparisons['f1_macro'].diff:+.3f}" and rows[1]["verdict"] == "helps"
    long = [{**rows[1], "mix": "replace 30/70 with a name far too long for any table " * 2}]
    assert max(map(len, cli_output.text_table(long, squeeze="mix").splitlines())) <= 120
    assert len(cli_output.wide_rows(summary)[1]) > len(rows[1])  # --wide adds the Compare page's columns


def test_progress_is_a_redrawn_line_on_a_terminal_and_a_line_per_tenth_in_a_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = iter(float(t) for t in range(1000))
    monkeypatch.setattr(cli_output.time, "monotonic", lambda: next(now))
    log, terminal = io.StringIO(), io.StringIO()
    for stream, live in ((log, False), (terminal, True)):
        progress = cli_output.Progress("generator cgan", stream=stream, live=live)
        for step in range(1, 101):
            progress.update(step / 100, f"step {step}/100")
        progress.finish("done")
    lines = log.getvalue().splitlines()  # the first step, then every tenth, then the end
    assert len(lines) == 12 and lines[1] == "generator cgan  10%  step 10/100 (10 s so far, about 1 min 30 s left)"
    assert lines[5].endswith("(50 s so far, about 50 s left)")  # one clock tick per step: half done, half left
    assert lines[-1] == "generator cgan: done (1 min 41 s)"
    drawn = terminal.getvalue()
    assert drawn.count("\n") == 1 and drawn.count("\r") == 101 and "\rgenerator cgan: done (1 min 41 s)" in drawn


def test_the_example_loop_is_a_valid_loop_config() -> None:
    cfg = LoopConfig.load(REPO_ROOT / "examples" / "default_loop.toml")
    assert cfg.dataset.imbalance.minority == ("0", "1", "2") and cfg.dataset.imbalance.keep_fraction == 0.1
    assert (cfg.generator.kind, cfg.generator.preset) == ("cgan", gan.DEFAULT_PRESET)
    assert cfg.generate.per_class == 0  # fill to balance
    exp = cfg.experiment("some-set")
    assert [m.kind for m in exp.mixes] == ["real", "add", "oversample", "reweight"] and exp.seeds == (0, 1, 2)
    assert {m.synthetic_set for m in exp.mixes[1:]} == {"some-set"}


def test_a_loop_with_repeated_splits_is_checked_up_front_and_names_each_splits_set() -> None:
    text = (REPO_ROOT / "examples" / "default_loop.toml").read_text()
    cfg = LoopConfig.from_dict({**tomllib.loads(text), "splits": 3})
    assert cfg.further_splits == (1, 2)
    exp = cfg.experiment("first", [("first", 1, "second"), ("first", 2, "third")])
    assert exp.splits == 3 and {r.mix.synthetic_set for r in exp.run_configs() if r.seed >= 2000} >= {"third"}
    with pytest.raises(experiments.ExperimentError, match="split_sets has no set for split seed 2"):
        cfg.experiment("first", [("first", 1, "second")])


def test_a_reader_that_stops_early_gets_no_error_message() -> None:
    import os
    import subprocess
    import sys

    fabricate(0.0, 0.003)  # runs to list, in this test's workspace
    shell = f"{sys.executable} -m engine runs | head -n 0"  # head closes the pipe before the table is written
    done = subprocess.run(["bash", "-c", shell], cwd=REPO_ROOT, env=os.environ, capture_output=True, text=True)
    assert done.stderr == ""


def test_a_lost_connection_is_an_error_even_though_it_is_a_broken_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine import cli

    def lost(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_runs", lost)
    assert main(["runs"]) == 1  # standard output is fine here: the pipe that broke was another one
    assert "error: [Errno 32] Broken pipe" in capsys.readouterr().err
