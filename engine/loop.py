"""One TOML for the whole loop: dataset -> generator -> synthetic set -> experiment whose ``add`` mix uses the set.

:class:`LoopConfig` reads the file once and checks every section before anything long starts: the
``[dataset]`` tables (as in an experiment config), ``[generator]`` (a GAN or the small diffusion model;
``kind`` picks the family, the other keys are that family's config fields), ``[generate]`` (how the set
is made: :class:`~engine.synth.make_sets.GenerateConfig` without its ``generator``, unless it names a
stored one) and the experiment's keys (``name``, ``model``, ``seeds``, ``[train]``, ``[[mixes]]``). An
``add`` or ``replace`` mix without a ``synthetic_set`` gets the set the loop makes. The steps
(:func:`train_or_reuse_generator`, :func:`make_or_reuse_set`, :meth:`LoopConfig.experiment`) reuse what
an identical earlier request stored, so a lesson replays quickly. :func:`dataset_for_generator` finds
the dataset a stored generator learnt from. Where this stops: no printing and no threads (``cli.py``
reports progress; ``tasks.py`` runs the same work as jobs for the pages).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import experiments, runs, store
from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.mixes import SYNTHETIC_KINDS
from engine.synth import ddpm, gan, generators, make_sets, sets
from engine.synth.events import GeneratorEvent

EXPERIMENT_KEYS = ("name", "model", "seeds", "splits", "train", "mixes")
SECTIONS = ("dataset", "generator", "generate", *EXPERIMENT_KEYS)
GENERATOR_KINDS = (*gan.GAN_KINDS, "ddpm")
LOOP_MIXES = ({"kind": "real"}, {"kind": "add"}, {"kind": "oversample"}, {"kind": "reweight"})
PENDING = "pending"  # stands for the set (or generator) the loop has not made yet, while checking the config


class LoopError(ValueError):
    """A loop config, or a request made from it, is not accepted; the message names the field and the value."""


def read_toml(path: Path) -> dict[str, Any]:
    """The mapping in a TOML file; a missing file or bad TOML is a :class:`LoopError` naming the path."""
    if not path.is_file():
        raise LoopError(f"config={str(path)!r} is not accepted: expected the path of an existing TOML file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LoopError(f"config={str(path)!r} is not accepted: it is not valid TOML ({err})") from None


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise LoopError(f"{name}={value!r} is not accepted: expected a [{name}] table")
    return dict(value)


def _check_keys(section: str, table: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise LoopError(
            f"{section}.{unknown[0]}={table[unknown[0]]!r} is not accepted: expected keys {', '.join(sorted(known))}"
        )


def generator_config(table: dict[str, Any]) -> generators.GeneratorConfig:
    """A GAN or diffusion-model config from a ``[generator]`` table; ``kind`` picks the family (default cgan)."""
    kind = table.get("kind", "cgan")
    if kind not in GENERATOR_KINDS:
        raise LoopError(
            f"generator.kind={kind!r} is not accepted: expected one of {', '.join(map(repr, GENERATOR_KINDS))}"
        )
    family: type[gan.GanConfig] | type[ddpm.DdpmConfig] = ddpm.DdpmConfig if kind == "ddpm" else gan.GanConfig
    _check_keys("generator", table, {f.name for f in dataclasses.fields(family)})
    try:
        return family(**table)
    except TypeError as err:  # a value of the wrong type that a range check compared
        raise LoopError(f"generator: a value is not accepted ({err}); expected the types in docs/cli.md") from None


def generate_config(table: dict[str, Any], generator: str) -> make_sets.GenerateConfig:
    """The ``[generate]`` table as a :class:`~engine.synth.make_sets.GenerateConfig` for ``generator``."""
    known = {f.name for f in dataclasses.fields(make_sets.GenerateConfig)}
    _check_keys("generate", table, known)
    if "classes" in table:
        if not isinstance(table["classes"], list) or not all(isinstance(c, str) for c in table["classes"]):
            raise LoopError(f"generate.classes={table['classes']!r} is not accepted: expected a list of class names")
        table["classes"] = tuple(table["classes"])
    try:
        return make_sets.GenerateConfig(**{**table, "generator": generator})
    except TypeError as err:
        raise LoopError(f"generate: a value is not accepted ({err}); expected the types in docs/cli.md") from None


@dataclass(frozen=True)
class LoopConfig:
    """The whole loop, checked: what each step needs, nothing run yet."""

    dataset: DatasetConfig
    generator: generators.GeneratorConfig  # trained, or reused when an identical one is stored
    stored_generator: str  # the stored generator [generate] names; "" = train (or reuse) [generator]
    generate: make_sets.GenerateConfig  # checked with a stand-in generator id: see generate_for
    experiment_data: dict[str, Any]  # the experiment keys as given (mixes defaulted to LOOP_MIXES)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopConfig:
        """Every section checked; unknown keys and values that are not accepted raise :class:`LoopError`."""
        _check_keys("config", data, set(SECTIONS))
        dataset = DatasetConfig.from_dict(_table(data, "dataset"))
        generator = generator_config(_table(data, "generator"))
        generate_table = _table(data, "generate")
        stored = str(generate_table.pop("generator", ""))
        generate = generate_config(generate_table, stored or PENDING)
        exp = {k: data[k] for k in EXPERIMENT_KEYS if k in data}
        mixes = exp.setdefault("mixes", [dict(m) for m in LOOP_MIXES])
        if not isinstance(mixes, list) or not all(isinstance(m, dict) for m in mixes):
            raise LoopError(f"mixes={mixes!r} is not accepted: expected [[mixes]] tables")
        if not any(m.get("kind") in SYNTHETIC_KINDS for m in mixes):
            kinds = ", ".join(repr(m.get("kind", "real")) for m in mixes)
            raise LoopError(
                f"mixes={kinds} is not accepted: a loop needs an 'add' or 'replace' mix to use the set it makes"
            )
        cfg = cls(dataset, generator, stored, generate, exp)
        cfg.experiment(PENDING)  # the experiment keys are checked now, not after the generator has trained
        return cfg

    @classmethod
    def load(cls, path: Path) -> LoopConfig:
        return cls.from_dict(read_toml(path))

    def generate_for(self, gen_id: str) -> make_sets.GenerateConfig:
        """The ``[generate]`` request for generator ``gen_id``."""
        return dataclasses.replace(self.generate, generator=gen_id)

    @property
    def further_splits(self) -> tuple[int, ...]:
        """Split seeds after the dataset's own, when the experiment repeats its splits (``splits`` > 1)."""
        first, count = self.dataset.split.seed, int(self.experiment_data.get("splits", 1))
        return tuple(first + k for k in range(1, count))

    def experiment(self, set_id: str, split_sets: Sequence[tuple[str, int, str]] = ()) -> experiments.ExperimentConfig:
        """The experiment; its add/replace mixes without a set of their own (and their controls) use ``set_id``.

        With repeated splits ``split_sets`` names the set made like ``set_id`` on each further split
        (checked with stand-ins before anything is made).
        """
        mixes = [
            {**m, "synthetic_set": set_id} if m.get("kind") in SYNTHETIC_KINDS and not m.get("synthetic_set") else m
            for m in self.experiment_data["mixes"]
        ]
        if set_id == PENDING:
            split_sets = [(PENDING, k, PENDING) for k in self.further_splits]
        data = {**self.experiment_data, "mixes": mixes, "dataset": self.dataset.to_dict()}
        return experiments.ExperimentConfig.from_dict({**data, "split_sets": [list(x) for x in split_sets]})


# The steps ------------------------------------------------------------------------------------------


def load_dataset(cfg: DatasetConfig, *, on_progress: Callable[[int, int], None] | None = None) -> LabDataset:
    """Build (or read from the cache) the dataset, and remember its config so its generators can be found."""
    dataset = build_dataset(cfg, on_progress=on_progress)
    store.write_json(_configs_dir() / f"{cfg.cache_key()}.json", cfg.to_dict())
    return dataset


def train_or_reuse_generator(
    cfg: generators.GeneratorConfig,
    dataset: LabDataset,
    *,
    on_event: Callable[[GeneratorEvent], None] | None = None,
) -> tuple[str, bool]:
    """(generator id, whether it was reused): an identical config on the same dataset is trained once."""
    reused = generators.load_origin(generators.generator_id(cfg, dataset)) is not None
    return generators.train_generator(cfg, dataset, on_event=on_event), reused


def check_generator(gen_id: str, dataset: LabDataset) -> None:
    """A stored generator feeds sets for the dataset it learnt from only (the same source, split and imbalance)."""
    origin = generators.load_origin(gen_id)
    if origin is None:
        raise LoopError(
            f"generate.generator={gen_id!r} is not accepted: expected the id of a stored generator (see generators)"
        )
    if generators.made_for(origin) != dataset.key:
        raise LoopError(
            f"generate.generator={gen_id!r} is not accepted: it learnt from another dataset, split or imbalance, "
            "and may have seen this dataset's test images; expected a generator trained on this dataset"
        )


def find_set(cfg: make_sets.GenerateConfig, dataset: LabDataset) -> sets.SetInfo | None:
    """The newest stored set made for ``dataset`` by this exact request (generator, counts, filter, seed)."""
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
    for info in sets.list_sets(dataset.key):
        if info.generator == cfg.generator and info.config.get("generate") == wanted:
            return info
    return None


def make_or_reuse_set(
    cfg: make_sets.GenerateConfig,
    dataset: LabDataset,
    *,
    fresh: bool = False,
    on_progress: make_sets.ProgressFn | None = None,
) -> tuple[sets.SetInfo, bool]:
    """(set info, whether it was reused): an identical request's set is reused unless ``fresh``."""
    found = None if fresh else find_set(cfg, dataset)
    if found is not None:
        return found, True
    return make_sets.make_set(cfg, dataset, on_progress=on_progress), False


# Which dataset a stored generator learnt from ---------------------------------------------------------


def _configs_dir() -> Path:
    return store.subdir("dataset-configs")


def known_dataset_configs() -> list[DatasetConfig]:
    """Dataset configs this workspace has seen: built by the CLI, or named by an experiment or a run."""
    found: list[DatasetConfig] = []
    for path in sorted(_configs_dir().glob("*.json")):
        try:
            found.append(DatasetConfig.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    found += [record.config.dataset for record in experiments.list_experiments()]
    found += [record.config.dataset for record in runs.list_records()]
    return list(dict.fromkeys(found))


def config_for_key(dataset_key: str) -> DatasetConfig | None:
    """The dataset config whose split and imbalance a :attr:`~engine.datasets.LabDataset.key` names, if known."""
    suffix = dataset_key.rpartition("#")[2]
    return next((c for c in known_dataset_configs() if c.cache_key() == suffix), None)


def dataset_for_generator(gen_id: str) -> DatasetConfig:
    """The dataset config a stored generator was trained on; :class:`LoopError` when it is not known here."""
    origin = generators.load_origin(gen_id)
    if origin is None:
        raise LoopError(
            f"--generator={gen_id!r} is not accepted: expected the id of a stored generator (see generators)"
        )
    cfg = config_for_key(generators.made_for(origin))
    if cfg is None:
        raise LoopError(
            f"--generator={gen_id!r}: the dataset it learnt from is not known in this workspace; "
            "expected --dataset with a TOML file whose [dataset] tables describe it"
        )
    return cfg
