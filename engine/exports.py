"""What leaves the lab: a synthetic set as a zip of class folders, a run's classifier as a folder of files.

:func:`set_zip` / :func:`save_set_zip`: the kept images of a set in ``<class>/<file>.png`` folders (the
layout every image-folder loader reads, this lab's included) with ``manifest.json`` (the set's info)
and ``manifest.csv`` (one row per image, rejected ones too, with the reason). :func:`export_classifier`:
``model.safetensors`` (every weight, the normalisation buffers included), ``config.json`` (model name,
input size, normalisation, class names, the run it came from), ``load.py`` and ``README.md`` showing how
to load it with the engine and predict one image; :func:`load_classifier` reads it back as an
:class:`ExportedClassifier`. Where this stops: no training, no Streamlit (the pages offer these as
downloads, the CLI writes them to disk).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from engine import owners, preprocess, runs, store
from engine.backbones import BackboneClassifier
from engine.models import build_classifier, pretrained_parts
from engine.sources import decode_one
from engine.synth import sets
from engine.training import predict_proba

FORMAT = "synthlab-classifier/1"
MANIFEST_COLUMNS = ("file", "class", "label", "kept", "reason", "score", "generator", "seed", "noise_index")


class ExportError(ValueError):
    """A set or a run cannot be exported; the message names the id and what is accepted."""


# Synthetic sets ---------------------------------------------------------------------------------------


def _class_folders(class_names: tuple[str, ...]) -> list[str]:
    """A safe, distinct folder name per class: the class name itself wherever it is one."""
    folders: list[str] = []
    for i, name in enumerate(class_names):
        safe = re.sub(r"[^\w .-]+", "_", name).strip(" .") or f"class_{i}"
        folders.append(safe if safe not in folders else f"{safe}_{i}")
    return folders


def write_set_zip(set_id: str, target: IO[bytes]) -> int:
    """Write set ``set_id`` as a zip to ``target``; returns the number of images in its class folders."""
    info = sets.load_info(set_id)  # a SetError (a ValueError) names an unknown id
    records = sets.load_manifest(set_id)
    folder = sets.sets_dir() / set_id
    names = _class_folders(info.class_names)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(MANIFEST_COLUMNS)
    written = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for i, r in enumerate(records):
            inside = ""
            if r.kept:
                inside = f"{names[r.label]}/{i:06d}.png"
                archive.write(folder / r.file, inside)
                written += 1
            writer.writerow(
                [inside, r.class_name, r.label, r.kept, r.reason, r.score, r.generator, r.seed, r.noise_index]
            )
        about = owners.without_server_paths(
            {**dataclasses.asdict(info), "class_folders": names, "images_in_zip": written}
        )
        archive.writestr("manifest.json", json.dumps(about, indent=1))
        archive.writestr("manifest.csv", table.getvalue())
    return written


def set_zip(set_id: str) -> bytes:
    """The set as zip bytes (a download)."""
    buffer = io.BytesIO()
    write_set_zip(set_id, buffer)
    return buffer.getvalue()


def save_set_zip(set_id: str, path: Path) -> Path:
    """The set as a zip file at ``path`` (written whole or not at all); returns the path."""
    if path.suffix.lower() != ".zip":
        raise ExportError(f"out={str(path)!r} is not accepted: expected a file name ending in .zip")
    buffer = io.BytesIO()
    write_set_zip(set_id, buffer)
    store.write_atomic(path.expanduser().resolve(), buffer.getvalue())
    return path


# Classifiers ------------------------------------------------------------------------------------------


def classifier_config(run_id: str, model: nn.Module) -> dict[str, Any]:
    """What ``config.json`` says: enough to rebuild the model and feed it images as the run did."""
    record = runs.load_record(run_id)
    meta = json.loads((runs.runs_dir() / run_id / "model.json").read_text())
    mean = model.get_buffer("mean").flatten().tolist()
    std = model.get_buffer("std").flatten().tolist()
    return {
        "format": FORMAT,
        "model": record.config.model,
        "class_names": list(record.class_names),
        "channels": meta["channels"],
        "resolution": meta["resolution"],
        "backbone_input_size": model.side if isinstance(model, BackboneClassifier) else None,
        "input": "float images in [0, 1], shape (N, channels, resolution, resolution)",
        "normalisation": {"mean": mean, "std": std, "applied": "inside the model"},
        # the real images' preset: its deterministic part (grayscale) applies to images to predict, as to test images
        "preprocess": record.config.train.preprocess_real,
        "fit": record.config.dataset.source.fit,
        "run": run_id,
        "experiment": record.experiment,
        "mix": record.config.mix.label,
        "seed": record.config.seed,
        "test_metrics": record.headline,
        "versions": record.versions,
    }


def export_classifier(run_id: str, folder: Path, *, repo_root: str | None = None) -> Path:
    """Write the classifier of finished run ``run_id`` into ``folder``; returns the folder.

    ``load.py`` finds the SynthLab code at ``repo_root`` (this checkout by default; "" for a download from the
    server, which must not tell where the lab lies: the user sets ``SYNTHLAB_ROOT`` or runs it from the lab's folder).
    """
    if not (runs.runs_dir() / run_id / "run.json").is_file():
        raise ExportError(f"run={run_id!r} is not accepted: expected the id of a run in this workspace (see runs)")
    record = runs.load_record(run_id)
    if record.status != "done":
        raise ExportError(f"run={run_id!r} is not accepted: it is {record.status}; expected a finished run")
    model = runs.load_model(run_id)
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    store.write_atomic(folder / "model.safetensors", save(state))
    store.write_json(folder / "config.json", classifier_config(run_id, model))
    root = str(store.REPO_ROOT) if repo_root is None else repo_root
    store.write_atomic(folder / "load.py", LOAD_PY.replace("REPO_ROOT", root or ".").encode())
    store.write_atomic(folder / "README.md", README.format(run=run_id, model=record.config.model).encode())
    return folder


def classifier_zip(run_id: str) -> bytes:
    """The exported classifier's files as zip bytes (a download)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_classifier(run_id, Path(tmp) / run_id, repo_root="")  # a download: no server paths
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, f"{run_id}/{path.name}")
    return buffer.getvalue()


@dataclass(frozen=True)
class ExportedClassifier:
    """An exported classifier, loaded: the model (CPU, eval mode) and its ``config.json``."""

    model: nn.Module
    config: dict[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config["class_names"])

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities (N, classes) for uint8 images (N, C, R, R), prepared as the run's test images were."""
        preset = preprocess.evaluation_preset(str(self.config["preprocess"]))
        return predict_proba(self.model, preprocess.apply(images, preset))

    def predict_file(self, path: Path) -> list[tuple[str, float]]:
        """(class, probability) pairs for one image file, most likely first."""
        pixels = decode_one(
            path.read_bytes(),
            path.name,
            side=int(self.config["resolution"]),
            fit=str(self.config["fit"]),
            gray=int(self.config["channels"]) == 1,
        )
        probs = self.predict(torch.from_numpy(pixels.transpose(2, 0, 1).copy()).unsqueeze(0))[0]
        return [(self.class_names[i], float(probs[i])) for i in np.argsort(-probs)]


def load_classifier(folder: Path) -> ExportedClassifier:
    """Read a folder written by :func:`export_classifier` (no pretrained weights needed: all are in the file)."""
    path = folder / "config.json"
    if not path.is_file():
        raise ExportError(f"folder={str(folder)!r} is not accepted: expected a folder with config.json")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ExportError(f"format={config.get('format')!r} is not accepted: expected {FORMAT!r}")
    name, classes = config["model"], len(config["class_names"])
    parts = pretrained_parts(name)
    model: nn.Module
    if parts is not None:  # every weight is in the file: the backbone's own weights need not be on this machine
        model = BackboneClassifier(parts[1], classes, size=config["backbone_input_size"], pretrained=False)
    else:
        model = build_classifier(
            name, channels=config["channels"], num_classes=classes, resolution=config["resolution"]
        )
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return ExportedClassifier(model.eval(), config)


LOAD_PY = '''"""Load this exported SynthLab classifier and predict one image: python load.py IMAGE

Run it with the SynthLab environment (its engine package rebuilds the network), for example
    /path/to/synthlab/.venv/bin/python load.py photo.jpg
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.environ.get("SYNTHLAB_ROOT", "REPO_ROOT"))  # the SynthLab folder this was exported from

from engine.exports import load_classifier  # noqa: E402

classifier = load_classifier(Path(__file__).resolve().parent)
for name, probability in classifier.predict_file(Path(sys.argv[1]))[:3]:
    print(f"{name}\\t{probability:.3f}")
'''

README = """# Classifier exported from SynthLab

Run `{run}`, model `{model}`. Files:

- `model.safetensors`: every weight, with the input normalisation (`mean`, `std`) as buffers;
- `config.json`: model name, class names, input size (`resolution`, `channels`), normalisation, the
  preprocessing of test images, the run it came from and its test metrics;
- `load.py`: `python load.py IMAGE` prints the three most likely classes.

Load it with the engine (from the SynthLab folder, or with `SYNTHLAB_ROOT` pointing at it):

```python
from pathlib import Path
from engine.exports import load_classifier

classifier = load_classifier(Path("this/folder"))
print(classifier.predict_file(Path("image.png"))[:3])  # [(class, probability), ...]
probs = classifier.predict(images)  # uint8 tensor (N, channels, resolution, resolution) -> (N, classes)
```

The image is decoded as the lab decodes a dataset: made square (`fit`), resized to `resolution`,
grey or RGB as `channels` says. The model takes values in [0, 1] (it divides uint8 input by 255
in `predict`) and normalises with `mean` / `std` itself.
"""
