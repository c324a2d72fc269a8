"""One checkpoint format for everything that trains: weights as safetensors, the rest as JSON, no pickles.

A checkpoint is a folder holding ``weights-<step>.safetensors`` (every tensor: model weights and
buffers, optimiser moments, RNG states) and ``checkpoint.json`` (the step, the structure around the
tensors, and the caller's metadata), which names the weights file. Both are written atomically, the
JSON last, so a reader sees the old checkpoint or the new one, never half of each; older weights files
are removed after the new JSON is in place. Any nest of dicts, lists, tuples, scalars, strings, tensors
and numpy arrays is stored exactly and read back as the same types (int keys stay ints, tuples stay
tuples): optimiser and scheduler ``state_dict()`` s, the RNG states of :func:`capture_rng`, histories.
Where this stops: no training (``synth/gan.py`` and ``synth/ddpm.py`` call it; classifier runs can),
no choice of what to save.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from engine import store

FORMAT = 1
INDEX = "checkpoint.json"
_MARKS = ("__tensor__", "__ndarray__", "__tuple__", "__items__")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the folder or the value."""


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` reads back."""

    step: int  # steps done when it was written
    state: dict[str, Any]  # the nest given to save_checkpoint, tensors on the CPU
    meta: dict[str, Any]  # the caller's JSON metadata (config, planned steps, ...)


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON tree of ``value``; its tensors and arrays go into ``tensors`` under their path."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(
            np.ascontiguousarray(value).astype(np.int64 if value.dtype.kind in "ui" else value.dtype)
        )
        return {"__ndarray__": path, "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _MARKS for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {"__items__": [[k, _encode(v, f"{path}/{k}", tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise CheckpointError(f"{path or 'state'}: a {type(value).__name__} cannot be stored in a checkpoint")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        return tensors[tree["__ndarray__"]].numpy().astype(tree["dtype"])
    if "__tuple__" in tree:
        return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {(tuple(k) if isinstance(k, list) else k): _decode(v, tensors) for k, v in tree["__items__"]}
    return {k: _decode(v, tensors) for k, v in tree.items()}


def save_checkpoint(folder: Path, *, step: int, state: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
    """Write ``state`` (see the module docstring) at ``step`` to ``folder``, replacing what was there."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "", tensors)
    weights = f"weights-{step}.safetensors"
    store.write_atomic(folder / weights, save(tensors))
    index = {"format": FORMAT, "step": step, "weights": weights, "state": tree, "meta": meta or {}}
    store.write_atomic(folder / INDEX, json.dumps(index).encode())  # the switch to the new checkpoint
    for old in folder.glob("weights-*.safetensors"):
        if old.name != weights:
            old.unlink(missing_ok=True)


def has_checkpoint(folder: Path) -> bool:
    return (Path(folder) / INDEX).is_file()


def load_checkpoint(folder: Path) -> Checkpoint:
    """The checkpoint in ``folder``; raises :class:`CheckpointError` when there is none or it is unreadable."""
    folder = Path(folder)
    try:
        index = json.loads((folder / INDEX).read_text())
        tensors = load_file(folder / index["weights"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"no readable checkpoint in {folder}: {err}") from None
    if index.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint format {index.get('format')!r} in {folder} is not accepted: expected {FORMAT}"
        )
    return Checkpoint(int(index["step"]), _decode(index["state"], tensors), dict(index["meta"]))


GLOBAL_RNGS = ("torch", "numpy", "python")


def capture_rng(
    generators: dict[str, torch.Generator], *, global_rngs: tuple[str, ...] = GLOBAL_RNGS
) -> dict[str, Any]:
    """The RNG states an exact resume needs: ``generators`` and the process-wide ones named in ``global_rngs``.

    Training that runs inside ``torch.random.fork_rng`` and draws nothing from numpy or Python asks for
    ``("torch",)`` only, so a resume does not reset the RNGs other threads of the server use.
    """
    getters: dict[str, Callable[[], Any]] = {
        "torch": torch.get_rng_state,
        "numpy": np.random.get_state,
        "python": random.getstate,
    }
    state: dict[str, Any] = {name: getters[name]() for name in global_rngs}
    state["generators"] = {name: gen.get_state() for name, gen in generators.items()}
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back what :func:`capture_rng` took; ``generators`` by the same names."""
    setters: dict[str, Callable[[Any], Any]] = {
        "torch": torch.set_rng_state,
        "numpy": np.random.set_state,
        "python": random.setstate,
    }
    for name, setter in setters.items():
        if name in state:
            setter(state[name])
    for name, gen in generators.items():
        gen.set_state(state["generators"][name])
