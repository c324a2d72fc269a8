"""Runs: one (dataset, mix, model, training config, seed), executed and kept on disk.

A run's folder ``<workspace>/runs/<id>/`` holds ``run.json`` (config, status, counts, timings),
``history.json`` (one row per epoch), ``metrics.json``, ``predictions.npz`` (test labels and
probabilities) and ``model.safetensors``. Every file is written atomically, so a crash never
leaves half a file. While a run trains, ``checkpoint/`` holds the training loop's state after its last
epoch (:mod:`engine.checkpoints`); it is removed when the run ends. Runs whose process stopped (a
restart, a killed CLI) are marked ``interrupted`` by :func:`sweep`, with the reason; :func:`resume_run`
continues one from its last checkpoint to the same weights an uninterrupted run ends with (CPU).
Where this stops: no threads (see :mod:`engine.jobs`), no statistics across runs (see
:mod:`engine.experiments`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
import torchvision
from safetensors.torch import load_file, save
from torch import nn

from engine import checkpoints, heartbeat, owners, preprocess, probe, records, store
from engine.config import DatasetConfig
from engine.datasets import ImageSet, LabDataset
from engine.device import pick_device
from engine.jobs import user_message
from engine.metrics import Metrics, compute_metrics
from engine.mixes import Mix, MixConfig, build_mix
from engine.models import ALL_MODELS, build_classifier, pretrained_parts
from engine.synth import generators
from engine.training import (
    StopFn,
    TrainConfig,
    TrainConfigError,
    TrainEvent,
    TrainState,
    channel_stats,
    predict_proba,
    train,
)

log = logging.getLogger(__name__)
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
ENDED = ("done", "failed", "cancelled")  # a run that will not change any more (interrupted ones can)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result."""

    dataset: DatasetConfig
    mix: MixConfig = field(default_factory=MixConfig)
    model: str = "simple_cnn"  # one of engine.models.ALL_MODELS
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0  # model initialisation, batch order, augmentation and mix sampling

    def __post_init__(self) -> None:
        if self.model not in ALL_MODELS:
            raise ValueError(f"model={self.model!r} is not accepted: expected one of {', '.join(ALL_MODELS)}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} is not accepted: expected a whole number >= 0.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(
            dataset=DatasetConfig.from_dict(data["dataset"]),
            mix=MixConfig(**data.get("mix", {})),
            model=data.get("model", "simple_cnn"),
            train=TrainConfig(**data.get("train", {})),
            seed=int(data.get("seed", 0)),
        )


@dataclass(frozen=True)
class RunRecord:
    """What ``run.json`` says about a run."""

    id: str
    config: RunConfig
    status: str
    experiment: str = ""
    error: str = ""
    created: float = 0.0
    finished: float = 0.0
    dataset_key: str = ""  # LabDataset.key: source content, split and imbalance (old records: content only)
    class_names: tuple[str, ...] = ()
    real_counts: tuple[int, ...] = ()
    synthetic_counts: tuple[int, ...] = ()
    short: tuple[str, ...] = ()  # classes the synthetic set had fewer images of than the mix asked
    val_counts: tuple[int, ...] = ()  # per class, real validation images
    test_counts: tuple[int, ...] = ()  # per class, real test images
    best_epoch: int = 0
    epochs: int = 0
    images_per_second: float = 0.0
    device: str = ""
    headline: dict[str, float | None] = field(default_factory=dict)
    pid: int = 0  # process that queued or runs it; a live one (e.g. the CLI) is never marked interrupted
    versions: dict[str, str] = field(default_factory=dict)  # python, torch, … that ran it: results depend on them
    owner: str = ""  # the user who started it ("" in records written before accounts: the local user's)
    shared: bool = False  # shown to every user of the server, read-only
    schema: int = records.SCHEMA  # record layout version; older ones are migrated when read
    host: str = ""  # machine of the process in ``pid`` ("" in older records: this one)

    @property
    def synthetic_share(self) -> float:
        total = sum(self.real_counts) + sum(self.synthetic_counts)
        return sum(self.synthetic_counts) / max(1, total)


def library_versions() -> dict[str, str]:
    """The versions that decide a run's numbers, recorded with it."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "cpu": platform.machine(),
    }


def runs_dir() -> Path:
    return store.subdir("runs")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def save_record(record: RunRecord) -> None:
    data = dataclasses.asdict(record)
    data["config"] = record.config.to_dict()
    store.write_json(runs_dir() / record.id / "run.json", data)


def load_record(run_id: str) -> RunRecord:
    data = records.migrate("run", json.loads((runs_dir() / run_id / "run.json").read_text()), run_id)
    data["config"] = RunConfig.from_dict(data["config"])
    for name in ("class_names", "real_counts", "synthetic_counts", "short", "val_counts", "test_counts"):
        data[name] = tuple(data.get(name, ()))
    return RunRecord(**data)


def list_records() -> list[RunRecord]:
    """All readable runs (every user's), newest first; unreadable folders are logged and left out."""
    found = []
    for path in sorted(runs_dir().glob("*/run.json"), reverse=True):
        try:
            found.append(load_record(path.parent.name))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping unreadable run %s: %s", path.parent.name, err)
    return found


def visible_records(shared_experiments: frozenset[str] = frozenset()) -> list[RunRecord]:
    """The runs the acting user may see: their own, shared ones, those of ``shared_experiments``; all for an admin."""
    return [r for r in list_records() if owners.can_see(r.owner, r.shared or r.experiment in shared_experiments)]


def delete_run(run_id: str) -> None:
    shutil.rmtree(runs_dir() / run_id, ignore_errors=True)


APP_STOPPED = "the app stopped during this run"
PROCESS_STOPPED = "the process running it stopped"
WORKER_STOPPED = "the cluster worker running it stopped"  # followed by its node where known


def stop_reason(host: str, pid: int) -> str:
    """Why work of process ``pid`` on ``host`` stopped, in words: the app's server, a cluster worker (on its
    node), or another process."""
    role = heartbeat.stopped_role(host, pid)
    if role == "worker":
        where = heartbeat.stopped_where(host, pid)
        return f"{WORKER_STOPPED} on {where}" if where else WORKER_STOPPED
    return APP_STOPPED if role == "app" else PROCESS_STOPPED


def mark_lost(run_id: str, reason: str) -> bool:
    """Mark ``run_id`` interrupted with ``reason`` when the process running it died (the cluster said so) and
    the run is still queued or running; returns whether it was marked. The run's own process is its only
    writer while it lives: call this only once that process is known dead."""
    try:
        record = load_record(run_id)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if record.status not in ACTIVE:
        return False
    save_record(dataclasses.replace(record, status="interrupted", error=reason))
    return True


def mark_interrupted() -> list[str]:
    """At a server's start: runs a stopped process left queued or running are marked interrupted; returns their ids.

    A run that claims this very process was left by an earlier one whose pid this process got; one that
    names no process (pid 0, older records) is marked here only, never by the periodic :func:`sweep`.
    """
    here = ("", heartbeat.host())
    return _sweep(lambda record: record.pid <= 0 or (record.pid == os.getpid() and record.host in here))


def sweep() -> list[str]:
    """Mark the queued or running runs whose process stopped as interrupted (with the reason), and the same
    for generator trainings (:func:`engine.synth.generators.sweep`); returns the run ids marked."""
    changed = _sweep(lambda record: False)
    generators.sweep()
    heartbeat.forget_dead()
    return changed


def _sweep(also: Callable[[RunRecord], bool]) -> list[str]:
    changed = []
    for path in runs_dir().glob("*/run.json"):
        try:
            record = load_record(path.parent.name)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.status not in ACTIVE:
            continue
        if also(record) or (record.pid > 0 and heartbeat.has_stopped(record.host, record.pid)):
            reason = stop_reason(record.host, record.pid)
            save_record(dataclasses.replace(record, status="interrupted", error=reason))
            changed.append(record.id)
    return changed


def checkpoint_dir(run_id: str) -> Path:
    """Where a run keeps its training state while it trains."""
    return runs_dir() / run_id / "checkpoint"


def checkpoint_epoch(run_id: str) -> int:
    """The epoch a resume of ``run_id`` starts after (counted over both phases of a pretrain mix); 0 without one."""
    try:
        index = json.loads((checkpoint_dir(run_id) / checkpoints.INDEX).read_text())
        return int(index["meta"].get("first_epochs", 0)) + int(index["state"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def load_history(run_id: str) -> list[dict[str, float]]:
    path = runs_dir() / run_id / "history.json"
    rows: list[dict[str, float]] = json.loads(path.read_text()) if path.exists() else []
    return rows


def load_metrics(run_id: str) -> Metrics | None:
    path = runs_dir() / run_id / "metrics.json"
    return Metrics.from_dict(json.loads(path.read_text())) if path.exists() else None


def load_predictions(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Test labels (N,) and probabilities (N, C) of a finished run."""
    with np.load(runs_dir() / run_id / "predictions.npz") as data:
        return data["y_true"], data["probs"]


def load_model(run_id: str) -> nn.Module:
    """The trained classifier of a finished run, on the CPU, in eval mode.

    A probe stored only its head: the backbone's pretrained weights are loaded again (an error says how
    to get them where they are missing).
    """
    record = load_record(run_id)
    meta = json.loads((runs_dir() / run_id / "model.json").read_text())
    model = build_classifier(record.config.model, **meta)
    state = load_file(str(runs_dir() / run_id / "model.safetensors"))
    if _is_probe(record.config.model):
        model.load_state_dict(state, strict=False)  # the head; the backbone came with its weights
    else:
        model.load_state_dict(state)
    return model.eval()


def _is_probe(model: str) -> bool:
    parts = pretrained_parts(model)
    return parts is not None and parts[0] == "probe"


def execute_run(
    run_id: str,
    cfg: RunConfig,
    dataset: LabDataset,
    *,
    synthetic: ImageSet | None = None,
    experiment: str = "",
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: StopFn | None = None,
    resume: bool = False,
) -> RunRecord:
    """Build the mix, train, evaluate on the real test set and save everything; returns the record.

    The training state is checkpointed after every epoch that another follows; with ``resume``, training
    continues from the run's checkpoint (without one, or for a linear probe, whose head is quick to fit
    again on cached features, it starts over). Without ``resume`` a checkpoint left there is discarded.
    The checkpoint is removed when the run ends. A failure is recorded on disk (status ``failed`` with the
    message) and raised again; a process stopped by Ctrl-C or an exit leaves the run ``interrupted``.
    """
    # 1. Record the run as running (this process beats, so a sweep sees it stop); find the checkpoint.
    heartbeat.start()
    folder = runs_dir() / run_id
    saved = checkpoint_dir(run_id)
    ckpt = checkpoints.load_checkpoint(saved) if resume and checkpoints.has_checkpoint(saved) else None
    if ckpt is None:
        shutil.rmtree(saved, ignore_errors=True)
    record = RunRecord(
        id=run_id,
        config=cfg,
        status="running",
        experiment=experiment,
        created=time.time(),
        dataset_key=dataset.key,
        class_names=dataset.class_names,
        val_counts=tuple(int(n) for n in dataset.val.class_counts()),
        test_counts=tuple(int(n) for n in dataset.test.class_counts()),
        pid=os.getpid(),
        versions=library_versions(),
        owner=owners.owner_name(),
        host=heartbeat.host(),
    )
    save_record(record)
    history: list[dict[str, float]] = list(ckpt.state["rows"]) if ckpt is not None else []
    store.write_json(folder / "history.json", history)

    def collect(event: TrainEvent) -> None:
        if event.kind == "epoch":
            history.append(event.values)
            store.write_json(folder / "history.json", history)
        if on_event:
            on_event(event)

    def keeper(phase: int, offset: int, first_epochs: int) -> Callable[[TrainState], None]:
        """Writes the loop's state after an epoch, with the run's rows and where in the run it is."""

        def keep(state: TrainState) -> None:
            meta = {"phase": phase, "first_epochs": first_epochs}
            checkpoints.save_checkpoint(saved, step=offset + state["step"], state={**state, "rows": history}, meta=meta)

        return keep

    try:
        # 2. Build the training mix and the model.
        mix = build_mix(cfg.mix, dataset.train, synthetic, seed=cfg.seed)
        record = dataclasses.replace(
            record, real_counts=mix.real_counts, synthetic_counts=mix.synthetic_counts, short=mix.short
        )
        save_record(record)
        mean, std = channel_stats(mix.train.images)
        meta = {"channels": dataset.channels, "num_classes": len(dataset.class_names), "resolution": dataset.resolution}
        model = build_classifier(cfg.model, **meta, mean=mean, std=std, seed=cfg.seed)
        # 3. Train, then score the real test set (with the deterministic part of the real images' preset).
        evaluation = preprocess.evaluation_preset(cfg.train.preprocess_real)
        val_set = dataclasses.replace(dataset.val, images=preprocess.apply(dataset.val.images, evaluation))
        test_images = preprocess.apply(dataset.test.images, evaluation)
        if _is_probe(cfg.model):
            del history[:]  # a probe starts over: its rows come again
            return _finish_probe(record, cfg, dataset, mix, synthetic, model, meta, collect, should_stop)
        aspects = preprocess.real_aspects(dataset.train.provenance.orig_width, dataset.train.provenance.orig_height)
        phase = int(ckpt.meta.get("phase", 0)) if ckpt is not None else 0
        second: Callable[[TrainEvent], None] = collect
        first_epochs, offset, train_cfg = 0, 0, cfg.train
        if mix.pretrain is not None:  # pretrain mixes: a first phase on the set's images, then fine-tune on real
            phase_cfg = dataclasses.replace(cfg.train, max_epochs=cfg.mix.pretrain_epochs, patience=0)
            batches = -(-len(mix.pretrain) // cfg.train.batch_size) * phase_cfg.max_epochs
            total = batches + -(-len(mix.train) // cfg.train.batch_size) * cfg.train.max_epochs
            if phase == 2:  # the checkpoint is in the fine-tuning: the first phase is done
                first_epochs = int(ckpt.meta["first_epochs"]) if ckpt is not None else 0
            else:
                first = train(
                    model,
                    mix.pretrain,
                    val_set,
                    phase_cfg,
                    seed=cfg.seed,
                    aspect_pool=aspects,
                    on_event=_phase(collect, 1, 0, 0, total),
                    should_stop=should_stop,
                    on_checkpoint=keeper(1, 0, 0),
                    start=ckpt.state if ckpt is not None and phase == 1 else None,
                )
                first_epochs = len(first.history)
            train_cfg = dataclasses.replace(cfg.train, lr=cfg.train.lr * cfg.mix.finetune_lr_scale)
            second = _phase(collect, 2, first_epochs, batches, total)
            offset = batches  # phase 1 runs all its epochs (no early stop): checkpoint steps keep counting up
        result = train(
            model,
            mix.train,
            val_set,
            train_cfg,
            seed=cfg.seed,
            weights=mix.weights,
            aspect_pool=aspects,
            on_event=second,
            should_stop=should_stop,
            on_checkpoint=keeper(2 if mix.pretrain is not None else 0, offset, first_epochs),
            start=ckpt.state if ckpt is not None and phase != 1 else None,
        )
        result.model.cpu()
        probs = predict_proba(model, test_images)
        # 4. Save predictions, metrics and weights, then the final record; the checkpoint has served.
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        finished = dataclasses.replace(
            record,
            status="cancelled" if result.cancelled else "done",
            best_epoch=first_epochs + result.best_epoch,
            epochs=first_epochs + len(result.history),
            images_per_second=result.images_per_second,
            device=result.device,
        )
        outcome = _save_outcome(finished, dataset, probs, meta, state)
        shutil.rmtree(saved, ignore_errors=True)
        return outcome
    except (KeyboardInterrupt, SystemExit):  # the process is stopping: the run can be resumed
        save_record(dataclasses.replace(record, status="interrupted", error=PROCESS_STOPPED))
        raise
    except BaseException as err:
        save_record(dataclasses.replace(record, status="failed", error=user_message(err), finished=time.time()))
        shutil.rmtree(saved, ignore_errors=True)
        raise


def resume_run(
    run_id: str,
    dataset: LabDataset,
    *,
    synthetic: ImageSet | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: StopFn | None = None,
) -> RunRecord:
    """Continue an interrupted run from its last checkpoint (from the start when it has none); returns the record.

    ``dataset`` must be the split the run trained on and ``synthetic`` the set its mix names, as for
    :func:`execute_run`. Raises ValueError for a run that is not interrupted or another dataset.
    """
    record = load_record(run_id)
    if record.status != "interrupted":
        raise ValueError(f"run={run_id!r} is {record.status}: only an interrupted run can be resumed")
    if record.dataset_key and record.dataset_key != dataset.key:
        raise ValueError(
            f"run={run_id!r} trained on dataset {record.dataset_key[:24]}, not {dataset.key[:24]}: "
            "load the dataset it trained on to resume it"
        )
    return execute_run(
        run_id,
        record.config,
        dataset,
        synthetic=synthetic,
        experiment=record.experiment,
        on_event=on_event,
        should_stop=should_stop,
        resume=True,
    )


def _phase(
    collect: Callable[[TrainEvent], None], phase: int, epochs: int, steps: int, total: int
) -> Callable[[TrainEvent], None]:
    """Events of one phase of a pretrain mix, counted on after the first phase's epochs and steps, phase marked."""

    def forward(event: TrainEvent) -> None:
        values = {**event.values, "phase": float(phase)}
        if event.kind == "epoch":
            values["epoch"] = float(epochs + event.epoch)
        collect(
            dataclasses.replace(
                event, epoch=epochs + event.epoch, step=steps + event.step, total_steps=total, values=values
            )
        )

    return forward


def _finish_probe(
    record: RunRecord,
    cfg: RunConfig,
    dataset: LabDataset,
    mix: Mix,
    synthetic: ImageSet | None,
    model: nn.Module,
    meta: dict[str, int],
    collect: Callable[[TrainEvent], None],
    should_stop: StopFn | None,
) -> RunRecord:
    """A probe run: cached features of every split, a linear head fitted on them, saved like any run.

    The deterministic parts of the preprocessing presets apply before the features (a probe uses no
    per-batch random augmentation); only the head is saved, the backbone's weights come with the package.
    """
    assert isinstance(model, probe.BackboneClassifier)
    real_eval = preprocess.evaluation_preset(cfg.train.preprocess_real)
    synth_eval = preprocess.evaluation_preset(cfg.train.preprocess_synthetic)

    def prepared(images: ImageSet, preset: preprocess.Preset) -> ImageSet:
        return dataclasses.replace(images, images=preprocess.apply(images.images, preset))

    precision = "fp32" if cfg.train.precision == "auto" else cfg.train.precision  # see probe.probe_features
    try:  # the config only checked values: this is where the machine is asked
        setup = pick_device(cfg.train.device, precision)
    except ValueError as err:
        raise TrainConfigError(f"train.{err}") from err
    uses_synthetic = bool((mix.sources == 1).any())
    feats = probe.probe_features(
        model.spec.name,
        prepared(dataset.train, real_eval),
        prepared(dataset.val, real_eval),
        prepared(dataset.test, real_eval),
        prepared(synthetic, synth_eval) if synthetic is not None and uses_synthetic else None,
        augment=bool((mix.sources == 2).any()),
        size=model.side,
        setup=setup,
        should_stop=should_stop,
    )
    x_train = probe.mix_features(mix, feats, seed=cfg.seed)
    result = probe.train_probe(
        model,
        x_train,
        mix.train.labels.numpy(),
        feats.val,
        dataset.val.labels.numpy(),
        cfg.train,
        seed=cfg.seed,
        weights=mix.weights,
        on_event=collect,
        should_stop=should_stop,
    )
    probs = probe.head_probs(model, feats.test)
    state = {k: v.contiguous() for k, v in model.head.state_dict(prefix="head.").items()}
    finished = dataclasses.replace(
        record,
        status="cancelled" if result.cancelled else "done",
        best_epoch=result.best_epoch,
        epochs=len(result.history),
        images_per_second=result.features_per_second,
        device=f"{setup.label} (linear probe on cached features)",
    )
    return _save_outcome(finished, dataset, probs, meta, state)


def _save_outcome(
    record: RunRecord, dataset: LabDataset, probs: np.ndarray, meta: dict[str, int], state: dict[str, torch.Tensor]
) -> RunRecord:
    """Write predictions, metrics, the model's build arguments and weights, then the final record."""
    folder = runs_dir() / record.id
    y_true = dataset.test.labels.numpy()
    metrics = compute_metrics(y_true, probs, dataset.class_names)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, y_true=y_true, probs=probs.astype(np.float32))
    store.write_atomic(folder / "predictions.npz", buffer.getvalue())
    store.write_json(folder / "metrics.json", metrics.to_dict())
    store.write_json(folder / "model.json", meta)
    store.write_atomic(folder / "model.safetensors", save(state))
    record = dataclasses.replace(record, finished=time.time(), headline=metrics.headline())
    save_record(record)
    return record
