"""Benchmark: two classifier trainings at once, with the thread budget against torch's default thread count.

Each training is the default loop's: simple_cnn on the built-in 8x8 digits (training split), batch 64,
a fixed number of epochs, no early stop, after one warm-up training. Four set-ups, each timed on its
own (the best of --repeats): one training alone with the budget, and with torch's default count; two
at once as heavy jobs of a job runner, as the app runs them (one lane each, so that they run at once;
the budget shares the threads out), and two at once in plain threads with torch's default count in each
(as many as cores: twice the cores in all). Prints training images/s in total for each, the thread
counts each training had, the CPU count and the load average before (other processes share the cores:
the machine is not quiet unless the load says so).

Usage: python bench/threads.py [--epochs 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="repeat each set-up; the best is printed")
    args = parser.parse_args()
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-threads-"))

    import torch

    from engine import threads
    from engine.config import DatasetConfig
    from engine.datasets import build_dataset
    from engine.jobs import JobRunner
    from engine.models import build_model
    from engine.training import TrainConfig, channel_stats, train

    data = build_dataset(DatasetConfig())
    cfg = TrainConfig(max_epochs=args.epochs, patience=0, device="cpu", precision="fp32")
    mean, std = channel_stats(data.train.images)
    default = torch.get_num_threads()

    def one(seed: int, should_stop: Callable[[], bool]) -> list[int]:
        """Train; the thread counts the training ran with, in order (a job takes a new share when one ends)."""
        model = build_model(
            "simple_cnn", channels=1, num_classes=10, resolution=data.resolution, mean=mean, std=std, seed=seed
        )
        counts = [torch.get_num_threads()]

        def stop() -> bool:
            answer = should_stop()
            if torch.get_num_threads() != counts[-1]:
                counts.append(torch.get_num_threads())
            return answer

        train(model, data.train, data.val, cfg, seed=seed, should_stop=stop)
        return counts

    def with_budget(jobs: int) -> list[list[int]]:
        """As the app runs heavy jobs: on a job runner, here one lane per training so that they run at once."""
        runner = JobRunner()
        ids = [
            runner.submit(f"t{seed}", lambda ctx, s=seed: one(s, ctx.should_stop), owner="b", lane=f"lane-{seed}")
            for seed in range(jobs)
        ]
        return [runner.wait(job_id, 3600).result for job_id in ids]

    def with_default(jobs: int) -> list[list[int]]:
        seen: list[list[int]] = []

        def run(seed: int) -> None:
            torch.get_num_threads()  # a fresh thread starts at the process-wide value: set torch's default back
            torch.set_num_threads(default)
            seen.append(one(seed, lambda: False))

        pool = [threading.Thread(target=run, args=(seed,)) for seed in range(jobs)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return seen

    def setup(jobs: int, budget: bool) -> tuple[float, list[list[int]]]:
        start = time.perf_counter()
        seen = with_budget(jobs) if budget else with_default(jobs)
        images = jobs * len(data.train) * args.epochs
        return images / (time.perf_counter() - start), seen

    one(99, lambda: False)  # warm-up: first-use costs (kernels, allocator) are not the budget's
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs ({threads.cores()} usable), torch {torch.__version__} default {default} threads")
    print(f"load average (1, 5, 15 min) before: {load}", flush=True)
    for name, jobs, budget in (
        ("one training, budget", 1, True),
        ("one training, torch default", 1, False),
        ("two at once, budget", 2, True),
        ("two at once, torch default", 2, False),
    ):
        best, seen = max(setup(jobs, budget) for _ in range(args.repeats))
        print(f"{name}: {best:,.0f} images/s in total (thread counts of each training, in order: {seen})", flush=True)


if __name__ == "__main__":
    main()
