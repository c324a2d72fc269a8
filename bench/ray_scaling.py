"""Benchmark: one experiment on threads, then on a local Ray cluster with one worker node and with two.

The experiment is the Train page's: the first --mixes of real / oversample / augment / reweight × --seeds
seeds, simple_cnn on the built-in digits, --epochs epochs with no early stop, CPU float32, submitted with
``tasks.submit_experiment`` exactly as the page does. It runs three times in one fresh workspace:

1. threads: the default runner (heavy jobs one at a time on this process's CPU lane);
2. ray, 1 worker: a head node with no CPUs (it only schedules) and one worker node of 1 CPU;
3. ray, 2 workers: the same cluster with a second worker node of 1 CPU added.

The worker nodes are separate ``ray start`` raylets (each with its own worker processes) under a short
temporary folder; they are stopped by their process group at the end, never with a global ``ray stop``.
Printed per set-up: runs per minute (wall time from the first submit to the last run's end), the
per-task overhead (a job's wall time less the run's own time in its record: scheduling, moving the
dataset, a worker's first imports), and for Ray the round trip of a no-op task and the nodes the runs
ran on; then the parallel efficiency of two workers against one. On one machine with two cores this
measures the backend's overhead, not true scaling: both workers share the same cores.

    .venv/bin/python bench/ray_scaling.py                                   # 4 mixes × 4 seeds, 10 epochs
    .venv/bin/python bench/ray_scaling.py --mixes 2 --seeds 2 --epochs 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NOTE = (
    "On one machine with 2 cores this measures the Ray backend's overhead, not true scaling: "
    "both worker nodes share the same cores."
)


def run_once(runner: Any, cfg: Any, dataset: Any, owner: str, timeout: float) -> dict[str, Any]:
    """Submit the experiment, wait for every run; wall time, runs/min, overhead per task, where they ran."""
    from engine import runs, tasks
    from engine.jobs import FINISHED

    start = time.time()
    record = tasks.submit_experiment(runner, cfg, dataset, owner=owner)
    group = str(tasks.JobGroup(tasks.JobKind.EXPERIMENT, record.id))
    deadline = time.monotonic() + timeout
    while True:
        snaps = runner.list(group=group, events=False)
        if all(s.status in FINISHED for s in snaps):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"experiment {record.id} did not finish in {timeout:.0f} s")
        time.sleep(0.2)
    wall = max(s.finished for s in snaps) - start
    statuses = sorted({s.status for s in snaps})
    if statuses != ["done"]:
        errors = "; ".join(sorted({s.error for s in snaps if s.error}))
        raise RuntimeError(f"runs ended {statuses}: {errors}")
    overheads, trainings = [], []
    for snap in snaps:
        rec = runs.load_record(snap.tag)
        own = rec.finished - rec.created  # the run's own time on its worker: mix, training, evaluation, saving
        trainings.append(own)
        overheads.append((snap.finished - snap.started) - own)
    return {
        "runs": len(snaps),
        "wall_s": wall,
        "runs_per_min": 60 * len(snaps) / wall,
        "run_s_median": statistics.median(trainings),
        "overhead_s_median": statistics.median(overheads),
        "overhead_s_max": max(overheads),
        "nodes": sorted({getattr(s, "where", "") for s in snaps} - {""}),
    }


def noop_round_trip_ms(n: int = 30) -> float:
    """Median round trip of an empty 1-CPU task on the connected cluster (the first calls warm a worker)."""
    import ray

    @ray.remote(num_cpus=1)
    def noop() -> None:
        return None

    for _ in range(3):
        ray.get(noop.remote())
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixes", type=int, default=4, choices=range(1, 5), help="first N of the default mixes")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each set-up may take")
    parser.add_argument("--root", default="/tmp/ray-bench", help="short folder for the cluster's temporary files")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="synthlab-ray-bench-"))
    os.environ["SYNTHLAB_HOME"] = str(home)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a short-lived private cluster, joined at 127.0.0.1
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = Path(args.root) / str(os.getpid())
    root.mkdir(parents=True, exist_ok=True)

    import torch

    from engine import experiments, jobs
    from engine.config import DatasetConfig
    from engine.datasets import build_dataset
    from engine.training import TrainConfig

    dataset = build_dataset(DatasetConfig())  # built and cached once, before any timing
    train = TrainConfig(max_epochs=args.epochs, patience=0, device="cpu", precision="fp32")
    cfg = experiments.ExperimentConfig(
        dataset=dataset.config,
        mixes=experiments.DEFAULT_MIXES[: args.mixes],
        train=train,
        seeds=tuple(range(args.seeds)),
        name="ray scaling bench",
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average (1, 5, 15 min) before: {load}")
    print(f"experiment: {args.mixes} mixes × {args.seeds} seeds, simple_cnn on digits, {args.epochs} epochs, CPU fp32")
    figures: dict[str, Any] = {"mixes": args.mixes, "seeds": args.seeds, "epochs": args.epochs, "cpus": os.cpu_count()}

    # 1. Threads: the default runner in this process.
    os.environ["SYNTHLAB_RUNNER"] = "threads"
    figures["threads"] = run_once(jobs.make_runner(), cfg, dataset, "bench", args.timeout)
    report("threads (one run at a time, this process)", figures["threads"])

    # 2. Ray with one worker node, then 3. with a second one added to the same cluster.
    from tests.ray_util import LocalCluster

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cluster = LocalCluster(root, env)
    try:
        address = cluster.start_head()
        cluster.add_worker("w1")
        os.environ["SYNTHLAB_RUNNER"], os.environ["SYNTHLAB_RAY_ADDRESS"] = "ray", address
        runner: Any = jobs.make_runner()  # a RayRunner: joins the cluster; as many runs at once as its CPUs
        wait_for_nodes(runner, 2)
        figures["noop_round_trip_ms"] = noop_round_trip_ms()
        figures["ray_1"] = run_once(runner, cfg, dataset, "bench", args.timeout)
        report("ray, 1 worker node of 1 CPU", figures["ray_1"])
        runner.close()
        cluster.add_worker("w2")
        wait_for_nodes(runner, 3)
        runner = jobs.make_runner()  # a new runner counts the new node's CPU
        figures["ray_2"] = run_once(runner, cfg, dataset, "bench", args.timeout)
        report("ray, 2 worker nodes of 1 CPU each", figures["ray_2"])
        runner.close()
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    figures["efficiency_2_vs_1"] = figures["ray_2"]["runs_per_min"] / (2 * figures["ray_1"]["runs_per_min"])
    print(f"no-op task round trip: {figures['noop_round_trip_ms']:.1f} ms (median of 30)")
    print(
        f"parallel efficiency, 2 workers against 1: {figures['efficiency_2_vs_1']:.2f} "
        "(1.00: twice the runs per minute)"
    )
    print(NOTE)
    if args.json:
        print(json.dumps(figures))
    shutil.rmtree(home, ignore_errors=True)


def wait_for_nodes(runner: Any, count: int, timeout: float = 60) -> None:
    """Until the cluster reports ``count`` nodes alive (a node that just started takes a moment to register)."""
    deadline = time.monotonic() + timeout
    while True:
        info = runner.cluster()
        if info is not None and sum(n.alive for n in info.nodes) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster still has fewer than {count} nodes alive after {timeout:.0f} s")
        time.sleep(0.5)


def report(name: str, fig: dict[str, Any]) -> None:
    nodes = f" · ran on {len(fig['nodes'])} node(s)" if fig["nodes"] else ""
    why = ": the first task of a new worker process, which imports torch" if fig["nodes"] else ""
    print(
        f"{name}: {fig['runs']} runs in {fig['wall_s']:.1f} s · {fig['runs_per_min']:.1f} runs/min · "
        f"a run's own time {fig['run_s_median']:.2f} s · overhead per task {fig['overhead_s_median']:.2f} s "
        f"(median; max {fig['overhead_s_max']:.2f} s{why}){nodes}",
        flush=True,
    )


if __name__ == "__main__":
    main()
