"""The one checkpoint format: exact round trips of weights, optimiser and RNG state, atomic replacement, no pickles."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine import checkpoints


def equal(a: object, b: object) -> bool:
    """Nested equality that compares tensors and arrays by value and dtype, and keeps types strict (an
    OrderedDict, as ``state_dict()`` gives, reads back as a plain dict: ``load_state_dict`` takes either)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)  # type: ignore[union-attr,arg-type]
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)  # type: ignore[union-attr,arg-type]
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


def trained_state() -> dict[str, object]:
    """A model and an Adam optimiser after two steps, and every RNG state."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(2):
        loss = model(torch.randn(5, 1, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = torch.Generator().manual_seed(7)
    torch.rand(3, generator=gen)  # the generator has moved on from its seed
    return {
        "models": {"net": model.state_dict()},
        "optimizers": {"net": opt.state_dict()},
        "rng": checkpoints.capture_rng({"batches": gen}),
        "history": [{"step": 1.0, "loss": float("nan")}, {"step": 2.0, "loss": 0.5}],
        "marks": {(1, "a"): None, "plain": True},
    }


def test_a_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    state = trained_state()
    checkpoints.save_checkpoint(tmp_path, step=42, state=state, meta={"config": {"steps": 100}})
    back = checkpoints.load_checkpoint(tmp_path)
    assert back.step == 42 and back.meta == {"config": {"steps": 100}}
    history = back.state.pop("history")
    original = state.pop("history")
    assert np.isnan(history[0]["loss"]) and history[1] == original[1]  # type: ignore[index]
    assert equal(back.state, state)  # int keys stay ints, tuples stay tuples, dtypes are kept
    assert isinstance(back.state["optimizers"]["net"]["param_groups"][0]["betas"], tuple)


def test_a_loaded_optimiser_and_rng_continue_as_if_never_stopped(tmp_path: Path) -> None:
    def run(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, steps: int) -> None:
        for _ in range(steps):
            loss = model(torch.randn(4, 3, generator=gen)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator]:
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        return model, torch.optim.AdamW(model.parameters(), lr=0.1), torch.Generator().manual_seed(1)

    model, opt, gen = fresh()
    run(model, opt, gen, 5)
    model2, opt2, gen2 = fresh()
    run(model2, opt2, gen2, 2)
    state = {"model": model2.state_dict(), "opt": opt2.state_dict(), "rng": checkpoints.capture_rng({"g": gen2})}
    checkpoints.save_checkpoint(tmp_path, step=2, state=state)
    model3, opt3, gen3 = fresh()
    back = checkpoints.load_checkpoint(tmp_path).state
    model3.load_state_dict(back["model"])
    opt3.load_state_dict(back["opt"])
    checkpoints.restore_rng(back["rng"], {"g": gen3})
    run(model3, opt3, gen3, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model3.parameters(), strict=True))


def test_global_rngs_are_restored_only_when_captured() -> None:
    state = checkpoints.capture_rng({})
    expected = (torch.rand(2), np.random.random(2), random.random())
    checkpoints.restore_rng(state, {})
    assert torch.equal(torch.rand(2), expected[0]) and np.array_equal(np.random.random(2), expected[1])
    assert random.random() == expected[2]
    torch_only = checkpoints.capture_rng({}, global_rngs=("torch",))
    assert set(torch_only) == {"torch", "generators"}
    numpy_before = np.random.get_state()[1].copy()
    checkpoints.restore_rng(torch_only, {})
    assert np.array_equal(np.random.get_state()[1], numpy_before)  # numpy left alone


def test_a_new_checkpoint_replaces_the_old_one_whole_and_holds_no_pickle(tmp_path: Path) -> None:
    checkpoints.save_checkpoint(tmp_path, step=1, state={"w": torch.zeros(3)})
    checkpoints.save_checkpoint(tmp_path, step=2, state={"w": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "weights-2.safetensors"]
    assert torch.equal(checkpoints.load_checkpoint(tmp_path).state["w"], torch.ones(3))
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    assert index["weights"] == "weights-2.safetensors" and index["format"] == checkpoints.FORMAT
    assert b"\x80\x04" not in (tmp_path / "weights-2.safetensors").read_bytes()[:16]  # safetensors, not a pickle


def test_unstorable_values_and_missing_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(checkpoints.CheckpointError, match="/opt: a function cannot be stored"):
        checkpoints.save_checkpoint(tmp_path, step=1, state={"opt": lambda: 0})
    assert not checkpoints.has_checkpoint(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="no readable checkpoint in"):
        checkpoints.load_checkpoint(tmp_path / "missing")
