"""Image sets, stratified splits, imbalance profiles and the cached dataset build.

A source (see :mod:`engine.sources`) becomes one :class:`ImageSet`: a uint8 tensor (N, C, H, W),
integer labels, class names and per-image provenance. :func:`build_dataset` turns a
:class:`~engine.config.DatasetConfig` into a :class:`LabDataset` (train / val / test), decoding
through the on-disk cache. Validation and test sets only ever hold real images; imbalance touches
the training split only. Where this stops: no preprocessing, no training.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import weakref
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine import archives, owners, sources, store
from engine.config import DatasetConfig, ImbalanceConfig, SplitConfig
from engine.signatures import nearest, thumbnails

log = logging.getLogger(__name__)
NEAR_COPY = 0.99  # signature similarity at or above which a validation or test image copies a training image

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


class DatasetError(ValueError):
    """A dataset cannot be built from what was given; the message says what and why."""


@dataclass(frozen=True)
class Provenance:
    """Where each image came from, one entry per image (columns of equal length N)."""

    source: np.ndarray  # (N,) str: e.g. "digits", "zip:pets.zip", "torchvision:CIFAR10"
    origin: np.ndarray  # (N,) str: original file inside the source, or index
    orig_width: np.ndarray  # (N,) int32, pixels before resizing
    orig_height: np.ndarray  # (N,) int32, pixels before resizing
    source_split: np.ndarray  # (N,) str: "train" / "test" when the source has its own split, else ""
    synthetic: np.ndarray  # (N,) bool
    generator: np.ndarray  # (N,) str: generator id for synthetic images, "" for real ones

    @classmethod
    def real(
        cls,
        source: str,
        origin: Sequence[str],
        sizes: Sequence[tuple[int, int]],
        source_split: Sequence[str],
    ) -> Provenance:
        n = len(origin)
        wh = np.asarray(sizes, dtype=np.int32).reshape(n, 2)
        return cls(
            source=np.full(n, source, dtype=object),
            origin=np.asarray(origin, dtype=object),
            orig_width=wh[:, 0].copy(),
            orig_height=wh[:, 1].copy(),
            source_split=np.asarray(source_split, dtype=object),
            synthetic=np.zeros(n, dtype=bool),
            generator=np.full(n, "", dtype=object),
        )

    def __len__(self) -> int:
        return len(self.origin)

    def take(self, index: np.ndarray) -> Provenance:
        return Provenance(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    @staticmethod
    def concat(parts: Sequence[Provenance]) -> Provenance:
        names = Provenance.__dataclass_fields__
        return Provenance(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


@dataclass(frozen=True)
class ImageSet:
    """Labelled images in memory: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    provenance: Provenance

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError(
                f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        n = self.images.shape[0]
        if self.labels.shape != (n,) or len(self.provenance) != n:
            raise DatasetError(
                f"images ({n}), labels ({tuple(self.labels.shape)}) and provenance ({len(self.provenance)}) "
                "differ in length"
            )
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DatasetError(f"labels must lie in [0, {len(self.class_names)}) for {len(self.class_names)} classes")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        """(num_classes,) int64 number of images per class."""
        return np.bincount(self.labels.numpy(), minlength=self.num_classes)

    def subset(self, index: np.ndarray | Sequence[int]) -> ImageSet:
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(
            images=self.images[torch.from_numpy(idx)],
            labels=self.labels[torch.from_numpy(idx)],
            class_names=self.class_names,
            provenance=self.provenance.take(idx),
        )

    @staticmethod
    def concat(parts: Sequence[ImageSet]) -> ImageSet:
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise DatasetError("image sets with different class names cannot be joined")
        return ImageSet(
            images=torch.cat([p.images for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            class_names=names,
            provenance=Provenance.concat([p.provenance for p in parts]),
        )


@dataclass(frozen=True)
class LabDataset:
    """The dataset a session works on: real train (after imbalance), val and test splits."""

    config: DatasetConfig
    train: ImageSet  # after the imbalance profile
    val: ImageSet  # real only
    test: ImageSet  # real only
    train_counts_before: tuple[int, ...]  # per class, before the imbalance profile
    report: sources.LoadReport
    identity: str  # hash of the source's content and decoding config
    from_cache: bool = False
    notes: tuple[str, ...] = field(default=())  # human-readable remarks (e.g. k-shot caps)

    @property
    def key(self) -> str:
        """What synthetic data is made for: the source's content *and* its split and imbalance.

        Sets, generators, Stable Diffusion requests and the reference classifier are keyed by it. A set
        drawn by a generator trained on one split must not feed runs on another split of the same source:
        that generator may have learnt from the other split's test images. The format,
        ``"<identity>#<config key>"``, is the one stored sets carry.
        """
        return dataset_key(self.identity, self.config)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names

    @property
    def resolution(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    def summary(self) -> list[dict[str, object]]:
        """One row per class: counts before/after imbalance, val and test."""
        after, val, test = self.train.class_counts(), self.val.class_counts(), self.test.class_counts()
        return [
            {
                "class": name,
                "train (before)": self.train_counts_before[i],
                "train": int(after[i]),
                "kept %": round(100.0 * float(after[i]) / max(1, self.train_counts_before[i]), 1),
                "val": int(val[i]),
                "test": int(test[i]),
            }
            for i, name in enumerate(self.class_names)
        ]


def _round_count(n: int, fraction: float) -> int:
    """Images kept when a class of n keeps `fraction`: round half up, at least one."""
    return max(1, int(np.floor(n * fraction + 0.5))) if n else 0


def _class_perms(labels: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    """Per class, the indices of its images in a seeded random order."""
    gen = torch.Generator().manual_seed(seed)
    perms = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        perms.append(idx[torch.randperm(len(idx), generator=gen).numpy()])
    return perms


def stratified_split(
    labels: np.ndarray, num_classes: int, fractions: Sequence[float], seed: int, class_names: Sequence[str]
) -> list[np.ndarray]:
    """Split indices per class into len(fractions)+1 parts; the first part takes the rest.

    Each of the held-out parts gets round(n_c * fraction) images of class c, at least one, so
    every class appears in every part. Returns sorted index arrays, disjoint and covering all.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c, perm in enumerate(_class_perms(labels, num_classes, seed)):
        if len(perm) < len(fractions) + 1:
            raise DatasetError(
                f"class {class_names[c]!r} has {len(perm)} image(s); a stratified split into "
                f"{len(fractions) + 1} parts needs at least {len(fractions) + 1} per class"
            )
        start = 0
        for j, fraction in enumerate(fractions, start=1):
            take = min(_round_count(len(perm), fraction), len(perm) - start - 1)
            parts[j].append(perm[start : start + take])
            start += take
        parts[0].append(perm[start:])
    return [np.sort(np.concatenate(p)) for p in parts]


def split_real(images: ImageSet, cfg: SplitConfig) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Stratified train / val / test, or the source's own test split when it has one."""
    if images.provenance.synthetic.any():
        raise DatasetError("only real images can be split into train / val / test")
    labels = images.labels.numpy()
    own_test = images.provenance.source_split == "test"
    if cfg.use_source_test and own_test.any():
        pool = np.flatnonzero(~own_test)
        train_i, val_i = stratified_split(
            labels[pool], images.num_classes, [cfg.val_fraction], cfg.seed, images.class_names
        )
        return images.subset(pool[train_i]), images.subset(pool[val_i]), images.subset(np.flatnonzero(own_test))
    train_i, val_i, test_i = stratified_split(
        labels, images.num_classes, [cfg.val_fraction, cfg.test_fraction], cfg.seed, images.class_names
    )
    return images.subset(train_i), images.subset(val_i), images.subset(test_i)


def imbalance_targets(counts: Sequence[int], class_names: Sequence[str], cfg: ImbalanceConfig) -> list[int]:
    """Images each class keeps under the profile (exact, documented rules).

    step: minority classes keep round(n * keep_fraction) (at least 1), the others all.
    longtail: class i keeps min(n_i, floor(n_max * rho ** (-i / (C - 1)))), the CIFAR-LT rule.
    kshot: min(n_i, k). subsample: round(n_i * fraction), at least 1.
    """
    counts = [int(n) for n in counts]
    if cfg.kind == "none":
        return counts
    if cfg.kind == "step":
        check_minority(cfg, class_names)
        return [
            _round_count(n, cfg.keep_fraction) if class_names[i] in cfg.minority else n for i, n in enumerate(counts)
        ]
    if cfg.kind == "longtail":
        n_max, num = max(counts), len(counts)
        return [min(n, max(1, int(n_max * cfg.ratio ** (-i / max(1, num - 1))))) for i, n in enumerate(counts)]
    if cfg.kind == "kshot":
        return [min(n, cfg.k) for n in counts]
    return [_round_count(n, cfg.fraction) for n in counts]


def user_file_name(path: str) -> str:
    """The last part of a dataset's path as the person gave it (an upload's own file name): for messages and
    tables, which never show where things lie on the server."""
    return archives.shown_name(Path(path), owners.public_source_path(path))


def check_minority(cfg: ImbalanceConfig, class_names: Sequence[str]) -> None:
    """:class:`DatasetError` naming the first minority class that is not one of ``class_names``, and the names."""
    unknown = [m for m in cfg.minority if m not in class_names] if cfg.kind == "step" else []
    if unknown:
        raise DatasetError(
            f"imbalance.minority={unknown[0]!r} is not a class of this dataset; "
            f"expected some of: {', '.join(class_names)}"
        )


def apply_imbalance(train: ImageSet, cfg: ImbalanceConfig) -> ImageSet:
    """Drop training images per :func:`imbalance_targets`; deterministic for ``cfg.seed``.

    The kept images of a class are a prefix of one seeded permutation, so a smaller fraction
    keeps a subset of what a larger one keeps.
    """
    targets = imbalance_targets(train.class_counts().tolist(), train.class_names, cfg)
    perms = _class_perms(train.labels.numpy(), train.num_classes, cfg.seed)
    keep = np.sort(np.concatenate([perm[:t] for perm, t in zip(perms, targets, strict=True)]))
    return train.subset(keep)


def move_near_copies(
    train: ImageSet, val: ImageSet, test: ImageSet, threshold: float = NEAR_COPY
) -> tuple[ImageSet, ImageSet, ImageSet, int]:
    """Validation and test images whose signature is ``threshold`` similar to a training image's join training.

    Returns the three splits and how many images moved. Copies within validation or test stay: they
    share no image with training, which is what a score needs.
    """
    reference = thumbnails(train.images)
    moved, kept = [], []
    for name, images in (("validation", val), ("test", test)):
        best, _ = nearest(thumbnails(images.images), reference)
        copies = best >= threshold
        if len(images) and copies.all():
            raise DatasetError(
                f"every {name} image nearly copies a training image (split.near_copies='train' would leave the "
                "split empty): remove the copies from the source, or set split.near_copies='keep'"
            )
        moved.append(images.subset(np.flatnonzero(copies)))
        kept.append(images.subset(np.flatnonzero(~copies)))
    count = sum(len(m) for m in moved)
    if count:
        train = ImageSet.concat([train, *moved])
    return train, kept[0], kept[1], count


def source_identity(cfg: sources.SourceConfig) -> str:
    """What a decoded source is stored under: the decoder's version, the source config and its content."""
    return f"{sources.DECODER_VERSION}-{cfg.cache_key()}-{sources.content_identity(cfg)}"


def dataset_key(identity: str, cfg: DatasetConfig) -> str:
    """:attr:`LabDataset.key` of the dataset ``cfg`` builds from the source decoded as ``identity``."""
    return f"{identity}#{cfg.cache_key()}"


_IN_USE: weakref.WeakValueDictionary[str, LabDataset] = weakref.WeakValueDictionary()
_IN_USE_LOCK = threading.Lock()


def shared_dataset(cfg: DatasetConfig, *, on_progress: ProgressFn | None = None) -> LabDataset:
    """:func:`build_dataset`, shared by every session of this process: while some session holds the dataset
    of the same config built from the same content, that very object is returned (datasets are never changed
    after they are built). Thirty people on the built-in digits then hold one copy, and a new session's first
    page does not split the images again. The source's content is checked at every call, as by
    :func:`build_dataset` (a changed upload or folder is built anew), and its path is checked for this user."""
    identity = source_identity(cfg.source)  # a zip is read whole for it: once per call, passed on
    key = f"{store.home()}:{dataset_key(identity, cfg)}"  # one workspace's datasets apart
    with _IN_USE_LOCK:
        found = _IN_USE.get(key)
    if found is not None:
        return found
    dataset = build_dataset(cfg, on_progress=on_progress, identity=identity)
    with _IN_USE_LOCK:
        return _IN_USE.setdefault(key, dataset)  # two sessions that built it at once keep the first one's


def build_dataset(
    cfg: DatasetConfig,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    identity: str | None = None,
) -> LabDataset:
    """Decode (through the disk cache), split and imbalance a dataset. ``identity``: the source's
    :func:`source_identity` when the caller has just computed it, so that a zip is not read whole twice.

    Raises :class:`sources.SourceError` or :class:`DatasetError` with a message for the user; a decode
    stops within a second once ``should_stop()`` turns true (see :func:`sources.load`).
    """
    # 1. Decode the source, or read it back from the cache.
    raw, report, identity, from_cache = load_source_cached(
        cfg.source, on_progress=on_progress, should_stop=should_stop, identity=identity
    )
    check_minority(cfg.imbalance, raw.class_names)  # before the split, whose own checks would speak first
    # 2. Split the real images; near-copies of training images leave validation and test.
    train, val, test = split_real(raw, cfg.split)
    notes = []
    if cfg.split.near_copies == "train":
        held = [(v, t) for v, t in zip(val.class_counts(), test.class_counts(), strict=True)]
        train, val, test, moved = move_near_copies(train, val, test)
        if moved:
            notes.append(
                f"{moved} validation or test image(s) nearly copied a training image (the same photo twice, a "
                "resized copy) and were moved into the training split, so that no score is answered from memory"
            )
            lost = {"test": test.class_counts(), "validation": val.class_counts()}
            said = {
                "test": "Their recall cannot be measured, and the Compare page says so where it needs it",
                "validation": "Training stops on validation scores that never see them",
            }
            for part, counts in lost.items():  # a part that held some of a class's images lost all of them
                index = 1 if part == "test" else 0
                gone = [raw.class_names[c] for c, n in enumerate(counts) if held[c][index] and not n]
                if gone:
                    notes.append(
                        f"{len(gone)} class(es) have no {part} images left, all of theirs being near-copies of "
                        f"training images: {', '.join(map(repr, gone[:5]))}. {said[part]}; add "
                        "distinct images of these classes"
                    )
    empty = [raw.class_names[c] for c, n in enumerate(train.class_counts()) if n == 0]
    if empty:
        raise DatasetError(f"class {empty[0]!r} has no training images; every class needs some")
    # 3. Make the training split scarce or imbalanced on purpose.
    before = tuple(int(n) for n in train.class_counts())
    train = apply_imbalance(train, cfg.imbalance)
    if cfg.imbalance.kind == "kshot" and min(before) < cfg.imbalance.k:
        short = [raw.class_names[i] for i, n in enumerate(before) if n < cfg.imbalance.k]
        notes.append(
            f"{len(short)} class(es) have fewer than k={cfg.imbalance.k} training images and keep all: "
            + ", ".join(short[:5])
        )
    return LabDataset(cfg, train, val, test, before, report, identity, from_cache, tuple(notes))


def load_source_cached(
    cfg: sources.SourceConfig,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    identity: str | None = None,
) -> tuple[ImageSet, sources.LoadReport, str, bool]:
    """Decode a source once; later calls with the same config and content read the disk cache. ``identity``:
    its :func:`source_identity`, when the caller has it already.

    The cache holds plain bytes (:func:`_pack`); an entry that does not unpack is decoded again. On a full
    disk the decoded images are returned without being cached.
    """
    identity = identity or source_identity(cfg)
    cached = _read_cached(identity)
    if cached is not None:
        return cached[0], cached[1], identity, True
    decoded = sources.load(cfg, on_progress=on_progress, should_stop=should_stop)
    images = ImageSet(
        images=torch.from_numpy(decoded.images),
        labels=torch.from_numpy(decoded.labels),
        class_names=decoded.class_names,
        provenance=Provenance.real(decoded.source, decoded.origin, decoded.sizes, decoded.source_split),
    )
    try:
        store.cache_set(("source", identity), _pack(images, decoded.report), what=f"the decoded {cfg.kind} dataset")
        side = decoded.images.shape[-1]
        readable = f"{decoded.source} · {len(decoded.labels):,} images at {side} px"  # what the clean-up view shows
        store.cache_set(("name", identity), readable.encode(), what=f"the decoded {cfg.kind} dataset")
    except store.DiskFull as err:
        log.warning("%s; loaded without caching", err)
    return images, decoded.report, identity, False


def cached_report(identity: str) -> sources.LoadReport | None:
    """The load report of the source decoded as ``identity``, while it is still in the cache."""
    cached = _read_cached(identity)
    return cached[1] if cached is not None else None


def _read_cached(identity: str) -> tuple[ImageSet, sources.LoadReport] | None:
    data = store.cache_get(("source", identity))
    if data is None:
        return None
    try:
        return _unpack(data)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:  # DatasetError is a ValueError
        log.warning("cached decode of %s ignored (%s): decoding again", identity, err)
        return None


_STRINGS = ("source", "origin", "source_split", "generator")  # provenance columns of strings (object arrays)


def _pack(images: ImageSet, report: sources.LoadReport) -> bytes:
    """An ImageSet and its load report as plain bytes: one .npz of arrays (strings as fixed-width unicode)
    whose ``meta`` member is UTF-8 JSON (class names, report). Read back without pickle (:func:`_unpack`)."""
    prov = images.provenance
    meta = {
        "class_names": list(images.class_names),
        "report": {"scanned": report.scanned, "skipped": [list(s) for s in report.skipped], "layout": report.layout},
    }
    arrays = {f"prov_{n}": getattr(prov, n).astype(str) if n in _STRINGS else getattr(prov, n) for n in _PROV}
    buffer = io.BytesIO()
    np.savez(
        buffer,
        images=images.images.numpy(),
        labels=images.labels.numpy(),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        **arrays,
    )
    return buffer.getvalue()


def _unpack(data: bytes) -> tuple[ImageSet, sources.LoadReport]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        prov = {n: npz[f"prov_{n}"] for n in _PROV}
        images, labels = npz["images"], npz["labels"]
    for name in _STRINGS:
        prov[name] = prov[name].astype(object)
    report = meta["report"]
    skipped = tuple((str(f), str(r)) for f, r in report["skipped"])
    image_set = ImageSet(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=tuple(str(n) for n in meta["class_names"]),
        provenance=Provenance(**prov),
    )
    return image_set, sources.LoadReport(int(report["scanned"]), skipped, str(report["layout"]))


_PROV = tuple(Provenance.__dataclass_fields__)
