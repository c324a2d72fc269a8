"""Frozen, validated configuration dataclasses for the dataset layer.

Every config checks itself in ``__post_init__`` and raises :class:`ConfigError` naming the field,
the value and what would be accepted. ``cache_key()`` gives a stable hash of the fields, used to key
the on-disk cache. This module knows nothing about decoding or training; it only describes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

SourceKind = Literal["digits", "folder", "zip", "torchvision"]
ColorMode = Literal["auto", "rgb", "grayscale"]
FitMode = Literal["crop", "stretch", "pad"]
ImbalanceKind = Literal["none", "step", "longtail", "kshot", "subsample"]

SOURCE_KINDS: tuple[str, ...] = ("digits", "folder", "zip", "torchvision")
COLOR_MODES: tuple[str, ...] = ("auto", "rgb", "grayscale")
FIT_MODES: tuple[str, ...] = ("crop", "stretch", "pad")
IMBALANCE_KINDS: tuple[str, ...] = ("none", "step", "longtail", "kshot", "subsample")
TORCHVISION_NAMES: tuple[str, ...] = (
    "CIFAR10",
    "CIFAR100",
    "FashionMNIST",
    "MNIST",
    "SVHN",
    "STL10",
    "OxfordIIITPet",
    "Flowers102",
)
MIN_RESOLUTION, MAX_RESOLUTION = 8, 512  # below 8 px there is nothing left to classify


class ConfigError(ValueError):
    """A configuration field holds a value that is not accepted."""


def _fail(field_name: str, value: object, accepted: str) -> None:
    raise ConfigError(f"{field_name}={value!r} is not accepted: expected {accepted}.")


def _check_choice(field_name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(field_name, value, "one of " + ", ".join(repr(c) for c in choices))


def _items(value: object) -> tuple[object, ...]:
    """The items of a list or tuple; anything else as one item (which a check then refuses)."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _check_fraction(field_name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and value <= 1):
        _fail(field_name, value, "a number in (0, 1]")


# Fields added after datasets were first keyed, with the value that reproduces the earlier behaviour or
# is safe to treat as it: left out of the key at that value, so stored sets and caches keep their keys.
# (Moving near-copies of training images out of validation and test only shrinks those splits, so a
# generator trained on the earlier split has still never seen the new split's test images.)
_LATER_FIELDS = {"near_copies": "train"}
NEAR_COPY_MODES: tuple[str, ...] = ("train", "keep")


def _without_later_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_later_defaults(v) for k, v in value.items() if _LATER_FIELDS.get(k, object()) != v}
    return value


def _key(obj: object) -> str:
    data = _without_later_defaults(dataclasses.asdict(obj))  # type: ignore[call-overload]
    payload = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SourceConfig:
    """Where the real images come from and how they are decoded; the cached part of a dataset."""

    kind: SourceKind = "digits"  # digits (built-in, offline) | folder | zip | torchvision
    path: str = ""  # folder or .zip path on the server, for kind folder / zip
    name: str = ""  # torchvision dataset class name, for kind torchvision
    resolution: int | None = None  # working side in pixels, 8 to 512; None = native up to 64 px, else 128 (or 64)
    color: ColorMode = "auto"  # auto keeps grayscale sets grayscale, everything else RGB
    fit: FitMode = "crop"  # how non-square images become square: centre crop, stretch or pad

    def __post_init__(self) -> None:
        _check_choice("source.kind", self.kind, SOURCE_KINDS)
        _check_choice("source.color", self.color, COLOR_MODES)
        _check_choice("source.fit", self.fit, FIT_MODES)
        if not isinstance(self.path, str):
            _fail("source.path", self.path, "a path as text, in quotes")
        if self.kind in ("folder", "zip") and not self.path.strip():
            _fail("source.path", self.path, f"a {self.kind} path for source kind {self.kind!r}")
        if self.kind == "torchvision":
            _check_choice("source.name", self.name, TORCHVISION_NAMES)
        if self.resolution is not None and not (
            isinstance(self.resolution, int) and MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION
        ):
            _fail(
                "source.resolution",
                self.resolution,
                f"None (native) or a whole number of pixels from {MIN_RESOLUTION} to {MAX_RESOLUTION}",
            )

    def cache_key(self) -> str:
        return _key(self)


@dataclass(frozen=True)
class SplitConfig:
    """How the real images are split; validation and test sets only ever hold real images."""

    val_fraction: float = 0.1  # share of the training pool held out for validation
    test_fraction: float = 0.2  # share held out for test when the source has no test split
    use_source_test: bool = True  # use the source's own test split when it has one
    seed: int = 0  # seed of the stratified shuffle
    # Validation and test images that nearly copy a training image: "train" moves them into the training
    # split (they would be answered from memory and inflate every score), "keep" leaves them where they fell.
    near_copies: str = "train"

    def __post_init__(self) -> None:
        _check_choice("split.near_copies", self.near_copies, NEAR_COPY_MODES)
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 0.9):
                _fail(f"split.{name}", value, "a number greater than 0 and below 0.9")
        if self.val_fraction + self.test_fraction >= 0.9:
            _fail(
                "split.val_fraction + split.test_fraction",
                round(self.val_fraction + self.test_fraction, 4),
                "a sum below 0.9, so that training keeps at least 10% of the images",
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            _fail("split.seed", self.seed, "a whole number >= 0")

    def cache_key(self) -> str:
        return _key(self)


@dataclass(frozen=True)
class ImbalanceConfig:
    """Scarcity applied to the training split only, deterministic for a seed."""

    kind: ImbalanceKind = "none"  # none | step | longtail | kshot | subsample
    minority: tuple[str, ...] = ()  # step: class names that keep only `keep_fraction`
    keep_fraction: float = 0.1  # step: share of each minority class kept (0.1 = 10%)
    ratio: float = 10.0  # longtail: imbalance ratio rho = n_max / n_min, >= 1
    k: int = 10  # kshot: images kept per class
    fraction: float = 0.5  # subsample: share of every class kept
    seed: int = 0  # which images are dropped

    def __post_init__(self) -> None:
        _check_choice("imbalance.kind", self.kind, IMBALANCE_KINDS)
        if isinstance(self.minority, str) or not all(isinstance(m, str) for m in _items(self.minority)):
            shown = list(self.minority) if isinstance(self.minority, (list, tuple)) else self.minority
            _fail("imbalance.minority", shown, 'a list of class names in quotes, e.g. ["cat", "3"]')
        object.__setattr__(self, "minority", tuple(self.minority))
        if self.kind == "step":
            if not self.minority:
                _fail("imbalance.minority", self.minority, "at least one class name for a step profile")
            _check_fraction("imbalance.keep_fraction", self.keep_fraction)
        if self.kind == "longtail" and not (isinstance(self.ratio, (int, float)) and self.ratio >= 1):
            _fail("imbalance.ratio", self.ratio, "a number >= 1 (n_max / n_min)")
        if self.kind == "kshot" and not (isinstance(self.k, int) and self.k >= 1):
            _fail("imbalance.k", self.k, "a whole number >= 1")
        if self.kind == "subsample":
            _check_fraction("imbalance.fraction", self.fraction)
        if not isinstance(self.seed, int) or self.seed < 0:
            _fail("imbalance.seed", self.seed, "a whole number >= 0")

    def cache_key(self) -> str:
        return _key(self)


@dataclass(frozen=True)
class DatasetConfig:
    """A whole dataset: source, split and imbalance. What every page of a session works on."""

    source: SourceConfig = field(default_factory=SourceConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)

    def cache_key(self) -> str:
        return _key(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetConfig:
        """Build from a plain mapping (a TOML or JSON file); unknown keys and sections that are not tables are
        an error."""
        if not isinstance(data, dict):
            _fail("dataset", data, "a table with the sections source, split and imbalance")
        parts: dict[str, Any] = {}
        for name, klass in (("source", SourceConfig), ("split", SplitConfig), ("imbalance", ImbalanceConfig)):
            if not isinstance(data.get(name, {}), dict):
                _fail(name, data[name], f"a [dataset.{name}] table of fields")
            raw = dict(data.get(name, {}))
            known = {f.name for f in dataclasses.fields(klass)}
            unknown = sorted(set(raw) - known)
            if unknown:
                _fail(f"{name}.{unknown[0]}", raw[unknown[0]], "one of the fields " + ", ".join(sorted(known)))
            texts = {f.name for f in dataclasses.fields(klass) if isinstance(f.default, str)}
            for key in sorted(texts & set(raw)):  # a number where a name or path belongs
                if not isinstance(raw[key], str):
                    _fail(f"{name}.{key}", raw[key], "text in quotes")
            if name == "imbalance" and isinstance(raw.get("minority"), list):
                raw["minority"] = tuple(raw["minority"])
            parts[name] = klass(**raw)
        unknown_top = sorted(set(data) - set(parts) - {"source", "split", "imbalance"})
        if unknown_top:
            _fail(unknown_top[0], data[unknown_top[0]], "the sections source, split and imbalance")
        return cls(**parts)
