"""Kill a training run at random moments, resume it, and check the weights against an uninterrupted run.

For each kill: a run starts in a child process (one torch thread), is killed with SIGKILL at a random
moment of its training, the sweep marks it interrupted, and it is resumed here from its last epoch
checkpoint. Printed per kill: when it was killed, the epoch it resumed after, the training time lost
(from the last checkpoint to the kill: the work done again) and whether every weight tensor equals the
uninterrupted run's (``torch.equal``). A kill that lands after the run finished is reported and another is
drawn. CPU, float32, one thread, a fresh workspace in a temporary folder.

    .venv/bin/python bench/kill_resume.py            # 10 kills
    .venv/bin/python bench/kill_resume.py --kills 20 --epochs 12 --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD = """
import sys, torch
torch.set_num_threads(1)
from engine import runs
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.training import TrainConfig
data = build_dataset(DatasetConfig())
train = TrainConfig(max_epochs=int(sys.argv[2]), batch_size=64, patience=4, flip=True, device="cpu", precision="fp32")
runs.execute_run(sys.argv[1], runs.RunConfig(data.config, train=train, seed=7), data)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills that land during training")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    os.environ["SYNTHLAB_HOME"] = tempfile.mkdtemp(prefix="kill-resume-")
    sys.path.insert(0, str(REPO))
    import torch
    from safetensors.torch import load_file

    from engine import checkpoints, runs
    from engine.config import DatasetConfig
    from engine.datasets import build_dataset

    torch.set_num_threads(1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def child(run_id: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", CHILD, run_id, str(args.epochs)], env=env, cwd=REPO)

    def weights(run_id: str) -> dict[str, torch.Tensor]:
        return load_file(str(runs.runs_dir() / run_id / "model.safetensors"))

    # 1. The uninterrupted run, timed from its record's start (after the child's imports and dataset build).
    data = build_dataset(DatasetConfig())  # cached in the workspace: the children load it quickly
    proc = child("reference")
    proc.wait()
    ref = runs.load_record("reference")
    assert ref.status == "done", ref.error
    training_s = ref.finished - ref.created
    reference = weights("reference")
    print(f"uninterrupted: {ref.epochs} epochs, {training_s:.1f} s of training (1 thread, CPU fp32)")

    # 2. Kill, sweep, resume, compare.
    rng = random.Random(args.seed)
    matched, resumed, lost_total, k = 0, 0, 0.0, 0
    while resumed < args.kills and k < 3 * args.kills:  # a kill that lands after the end does not count
        k += 1
        run_id = f"kill-{k}"
        proc = child(run_id)
        folder = runs.runs_dir() / run_id
        while not (folder / "run.json").is_file() or runs.load_record(run_id).status != "running":
            time.sleep(0.01)
        began = runs.load_record(run_id).created
        time.sleep(rng.uniform(0.0, 0.8 * training_s))  # the pace varies with the machine's load
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        index = runs.checkpoint_dir(run_id) / checkpoints.INDEX
        status = runs.load_record(run_id).status
        if status == "done":  # it finished before the kill landed
            print(f"kill {k:2d}: after {killed_at - began:5.1f} s the run had already finished; nothing to resume")
            continue
        lost = killed_at - (index.stat().st_mtime if index.is_file() else began)
        epoch = runs.checkpoint_epoch(run_id)
        swept = runs.sweep()
        start = time.perf_counter()
        runs.resume_run(run_id, data)
        resumed_s = time.perf_counter() - start
        got = weights(run_id)
        same = got.keys() == reference.keys() and all(torch.equal(got[n], reference[n]) for n in reference)
        matched += same
        resumed += 1
        lost_total += lost
        print(
            f"kill {k:2d}: at {killed_at - began:5.1f} s, swept={run_id in swept}, resumed after epoch {epoch:2d}, "
            f"time lost {lost:4.1f} s, resume took {resumed_s:4.1f} s, weights identical: {'yes' if same else 'NO'}"
        )
    print(
        f"{matched} of {resumed} resumed runs matched the uninterrupted weights exactly; "
        f"time lost {lost_total / max(1, resumed):.1f} s per kill on average"
    )


if __name__ == "__main__":
    main()
