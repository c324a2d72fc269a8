"""The CLI's contract for bad input: exit status 2 and one line naming the field, the value and what is accepted.

Every case is refused before anything trains (the built-in digits, tiny settings). Also: a lookup that fails
anywhere is one line too, while a genuine bug keeps its traceback; the Stable Diffusion model field answers
the same for a folder outside the allowed places whether or not it exists; messages name the user's own
file names, not where things lie on the server.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from engine import cli, cli_output, store
from engine.cli import main
from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
from engine.datasets import build_dataset, user_file_name
from engine.synth import filters, generators, quality, sets
from engine.synth import stable_diffusion as sd
from tests.test_cli import LOOP, tiny_zip

EXPERIMENT = """
name = "bad input"
model = "{model}"
seeds = [0]

[dataset.source]
kind = "digits"

[dataset.imbalance]
kind = "step"
minority = {minority}
keep_fraction = {keep}

[train]
max_epochs = {epochs}
batch_size = 16
device = "cpu"

[[mixes]]
kind = "{mix}"
"""
DEFAULTS = {"model": "simple_cnn", "minority": '["0"]', "keep": "0.3", "epochs": "1", "mix": "real"}
DIGITS_LOOP = """
[dataset.source]
kind = "digits"

[generator]
kind = "{kind}"
steps = {steps}

[generate]
threshold = {threshold}
{stored}
"""
LOOP_DEFAULTS = {"kind": "cgan", "steps": "4", "threshold": "0.0", "stored": ""}


def experiment(**changes: str) -> str:
    return EXPERIMENT.format(**{**DEFAULTS, **changes})


def digits_loop(**changes: str) -> str:
    return DIGITS_LOOP.format(**{**LOOP_DEFAULTS, **changes})


# (argv with {tmp} for the test's folder, files to write there first, what the one line must say)
CASES: list[tuple[list[str], dict[str, str], str]] = [
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(minority="3")}, r"imbalance\.minority=3 .*list of class"),
    (["experiment", "{tmp}/missing.toml"], {}, r"config='.*missing\.toml' is not accepted: expected an existing"),
    (["experiment", "{tmp}/b.json"], {"b.json": "{not json"}, r"config='.*b\.json' is not accepted: .*not valid JSON"),
    (["experiment", "{tmp}/b.json"], {"b.json": "[1, 2]"}, r"b\.json' is not accepted: expected a JSON object.*list"),
    (["experiment", "{tmp}/b.json"], {"b.json": '{"config": 5}'}, r"expected a JSON object .*not a number"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(model="nonet")}, r"model='nonet' .*one of simple_cnn"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(mix="blend")}, r"mix\.kind='blend' .*one of real, add"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(keep="0")}, r"imbalance\.keep_fraction=0 .*\(0, 1\]"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(keep="-1")}, r"imbalance\.keep_fraction=-1 .*\(0, 1\]"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(epochs='"x"')}, r"train\.max_epochs='x' .*whole number"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": experiment(epochs="0")}, r"train\.max_epochs=0 .*1 to 1000"),
    (["experiment", "{tmp}/c.toml"], {"c.toml": "[dataset.source]\nkind = 'imagenet'\n"}, r"source\.kind='imagenet'"),
    (
        ["experiment", "{tmp}/c.toml"],
        {"c.toml": "[dataset.source]\nkind = 'torchvision'\nname = 'Imagenet'\n"},
        r"source\.name='Imagenet' .*'CIFAR10'",
    ),
    (
        ["experiment", "{tmp}/c.toml"],
        {"c.toml": "[dataset.source]\nkind = 'zip'\npath = 5\n"},
        r"source\.path=5 .*text",
    ),
    (
        ["experiment", "{tmp}/c.toml"],
        {"c.toml": "[dataset.source]\nkind = 'zip'\npath = 'missing.zip'\n"},
        r"source\.path=.*missing\.zip",
    ),
    (["experiment", "{tmp}/c.toml"], {"c.toml": "[dataset]\nsource = 5\n"}, r"source=5 is not accepted: .*table"),
    (
        ["experiment", "{tmp}/c.toml"],
        {"c.toml": experiment(mix='add"\nsynthetic_set = "nope')},
        r"mix\.synthetic_set='nope' is not accepted: expected the id of a synthetic set",
    ),
    (["experiment", "{tmp}/c.toml", "--n-boot", "-5"], {"c.toml": experiment()}, r"--n-boot=-5 .*whole number >= 1"),
    (
        ["experiment", "{tmp}/c.toml", "--csv", "{tmp}/no/r.csv"],
        {"c.toml": experiment()},
        r"--csv='.*r\.csv' is not accepted: it is in a folder that does not exist",
    ),
    (["show", "20990101-000000-beef"], {}, r"experiment='20990101-000000-beef' is not in this workspace"),
    (["show", "20990101-000000-beef", "--n-boot", "0"], {}, r"--n-boot=0 is not accepted"),
    (["generate", "{tmp}/missing.toml"], {}, r"config='.*missing\.toml' is not accepted"),
    (["generate", "{tmp}/l.toml"], {"l.toml": digits_loop(kind="vae")}, r"generator\.kind='vae' .*'cgan'"),
    (["generate", "{tmp}/l.toml"], {"l.toml": digits_loop(steps="-3")}, r"steps=-3 is not accepted: .*whole number"),
    (["generate", "{tmp}/l.toml"], {"l.toml": digits_loop(steps='"many"')}, r"steps='many' is not accepted"),
    (["loop", "{tmp}/l.toml"], {"l.toml": digits_loop(threshold="-1")}, r"generate\.threshold=-1 .*\[0, 1\]"),
    (
        ["loop", "{tmp}/l.toml"],
        {"l.toml": digits_loop(stored='generator = "cgan-nope"')},
        r"generate\.generator='cgan-nope' is not accepted: expected the id of a stored generator",
    ),
    (["make-set"], {}, r"make-set was given neither a config nor --generator"),
    (["make-set", "--generator", "cgan-nope"], {}, r"--generator='cgan-nope' is not accepted: expected the id"),
    (["make-set", "--generator", "cgan-nope", "--classes", ","], {}, r"--classes=',' is not accepted: expected class"),
    (["make-set", "--generator", "cgan-nope", "--seed", "-1"], {}, r"--seed=-1 is not accepted: .*>= 0"),
    (["make-set", "{tmp}/l.toml", "--per-class", "-1"], {"l.toml": digits_loop()}, r"per_class=-1 is not accepted"),
    (["make-set", "{tmp}/l.toml", "--threshold", "2"], {"l.toml": digits_loop()}, r"threshold=2\.0 .*\[0, 1\]"),
    (["export-set", "nope", "{tmp}/s.zip"], {}, r"set id 'nope' is not a synthetic set"),
    (["export-set", "../x", "{tmp}/s.zip"], {}, r"set id '\.\./x' is not accepted: expected letters"),
    (["export-model", "nope", "{tmp}/out"], {}, r"run='nope' is not accepted: expected the id of a run"),
    (["--as-user", "bad name!", "runs"], {}, r"user='bad name!' is not accepted: expected a user name"),
    (["--as-user", "", "runs"], {}, r"user='' is not accepted"),
    (["users", "remove", "ghost"], {}, r"user 'ghost' is not accepted: no such user"),
    (["limits", "set", "nofield", "3"], {}, r"field='nofield' is not a limit: expected one of max_jobs"),
    (["limits", "set", "max_jobs", "-3"], {}, r"max_jobs='-3' is not accepted: expected a whole number"),
    (["limits", "set", "max_jobs", "3", "--user", "bad name!"], {}, r"user='bad name!' is not accepted"),
]


def one_error_line(err: str) -> str:
    """The only line on stderr, which must be an error line without a traceback or an exception class name."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert lines[0].startswith("error: ") and not re.search(r"\w+(Error|Exception)\b", lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize(("argv", "files", "pattern"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], files: dict[str, str], pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert re.search(pattern, one_error_line(capsys.readouterr().err))
    assert generators.list_generators() == []  # refused before anything trained


def test_a_minority_class_that_is_not_in_the_dataset_lists_the_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_dataset(DatasetConfig())  # the digits in the cache: no progress lines before the error
    (tmp_path / "c.toml").write_text(experiment(minority='["z"]'))
    assert main(["experiment", str(tmp_path / "c.toml")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "imbalance.minority='z' is not a class of this dataset; expected some of: 0, 1, 2" in line


def test_classes_not_made_by_the_generator_are_refused_before_the_dataset_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        filters, "train_reference_classifier", partial(filters.train_reference_classifier, max_epochs=2)
    )
    monkeypatch.setattr(quality, "quality_report", partial(quality.quality_report, max_epochs=2))
    config = tmp_path / "loop.toml"
    config.write_text(LOOP.format(zip=tiny_zip(tmp_path / "tiny.zip")))
    assert main(["generate", str(config)]) == 0
    gen_id = capsys.readouterr().out.strip()
    assert main(["make-set", "--generator", gen_id, "--classes", "a,z"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == "error: --classes='z' is not accepted: the generator's classes are a, b, c"


def test_as_user_on_a_server_with_accounts_must_be_one_of_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNTHLAB_AUTH", "users")
    assert main(["--as-user", "ghost", "runs"]) == 2
    assert "--as-user='ghost' is not accepted: expected one of the server's users" in one_error_line(
        capsys.readouterr().err
    )


def test_a_failed_lookup_is_one_line_but_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def lookup(args: object) -> int:
        return {"a": 1}["class_names"]

    def bug(args: object) -> int:
        return len(None)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "cmd_runs", lookup)
    assert main(["runs"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: 'class_names' was not found") and cli.DEBUG_ENV in line
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyError, match="class_names"):
        main(["runs"])
    monkeypatch.setattr(cli, "cmd_runs", bug)
    with pytest.raises(TypeError):
        main(["runs"])


# No existence oracle in the model folder field --------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Folder roots that hold only an ``allowed`` folder; returns the model field's message for a path outside."""
    (tmp_path / "allowed").mkdir()
    monkeypatch.setenv(store.FOLDER_ROOTS_ENV, str(tmp_path / "allowed"))

    def message(path: str) -> str:
        with pytest.raises(sd.SDConfigError) as caught:
            sd.resolve_model(path)
        return str(caught.value).replace(path, "PATH")

    return message


def test_a_folder_outside_the_allowed_places_gets_one_answer_whether_or_not_it_exists(
    tmp_path: Path, tiny_sd_folder: Path, outside: Callable[[str], str]
) -> None:
    (tmp_path / "secret").mkdir()
    existing, missing = outside(str(tmp_path / "secret")), outside(str(tmp_path / "no-such-folder"))
    assert existing == missing and "must lie inside the workspace" in existing
    assert outside(str(tiny_sd_folder)) == existing  # even a real pipeline folder: it lies outside
    assert outside("/etc") == outside("/no-such-top-folder") == existing
    assert outside("../../secret") == outside("../../no-such-folder") == existing  # relative: from the workspace


def test_inside_the_allowed_places_the_model_field_says_what_is_wrong(
    tmp_path: Path, outside: Callable[[str], str]
) -> None:
    (tmp_path / "allowed" / "empty").mkdir()
    assert "no model_index.json" in outside(str(tmp_path / "allowed" / "empty"))
    assert "no such folder" in outside(str(tmp_path / "allowed" / "missing"))
    assert sd.resolve_model("stabilityai/sd-turbo") == ("stabilityai/sd-turbo", False)


def test_a_relative_model_folder_starts_in_the_workspace(tiny_sd_folder: Path) -> None:
    shutil.copytree(tiny_sd_folder, store.home() / "pipelines" / "tiny-sd")
    source, local = sd.resolve_model("pipelines/tiny-sd")
    assert local and source == str((store.home() / "pipelines" / "tiny-sd").resolve())


# Messages name the user's own file names -------------------------------------------------------------


def test_uploads_are_named_by_the_name_the_user_gave() -> None:
    upload = store.save_upload("my flowers.zip", b"PK not really a zip")
    assert upload.name != "my_flowers.zip" and user_file_name(str(upload)) == "my_flowers.zip"
    cfg = DatasetConfig(SourceConfig(kind="zip", path=str(upload)), imbalance=ImbalanceConfig())
    assert cli_output.describe(cfg) == "my_flowers.zip" and str(store.home()) not in cli_output.describe(cfg)
    assert user_file_name("/data/photos/") == "photos"


def test_a_set_image_that_cannot_be_read_is_named_by_its_file_in_the_set() -> None:
    records = [sets.ImageRecord("", 0, "a", "g", "h", 0, 0, None, True, "")]
    info = sets.create_set(
        "s", np.zeros((1, 1, 8, 8), np.uint8), records, ("a",), generator="g", dataset_key="k", config={}
    )
    [record] = sets.load_manifest(info.id)
    (sets.sets_dir() / info.id / record.file).unlink()
    with pytest.raises(sets.SetError) as caught:
        sets.load_set(info.id)
    assert str(caught.value) == f"image {record.file!r} of set {info.id!r} could not be read: it is missing"
    assert str(store.home()) not in str(caught.value)


def test_a_pipeline_folder_that_does_not_load_is_named_by_its_own_name(tmp_path: Path) -> None:
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(sd.SDConfigError) as caught:
        sd.load_pipeline(str(broken), device="cpu")
    message = str(caught.value)
    assert message.startswith("model folder 'broken' is not a pipeline diffusers can load: ")
    assert str(tmp_path) not in message
