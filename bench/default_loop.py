"""Benchmark: the whole default loop with default settings, timed phase by phase, through the app's job runner.

What a student gets by clicking through with every default: the built-in digits with 0, 1 and 2 cut to
10% (Dataset), the conditional GAN at its default preset (Generate), a filtered set that fills every
class up to the largest, then real vs add vs oversample vs reweight over 3 seeds (Train), and the
headline (Compare). Every heavy step runs as a job of a :class:`~engine.jobs.JobRunner`, as the pages
submit them, so the thread budget applies as it does in the app. Prints each phase's seconds, the total,
the CPU count and the torch threads each job got, and the verdict. Target: 300 s on 2 CPU cores. A fresh
temporary workspace unless SYNTHLAB_HOME is set (then a stored generator and set are reused: the figure
is not the whole loop's).

Usage: python bench/default_loop.py [--preset quick|standard|thorough] [--generator cgan|wgan-gp|ddpm]
       [--seeds 3] [--browser]
--browser: the same loop clicked through the real app in Debian's Chromium (Playwright), server on a free port.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run"]


def engine_loop(args: argparse.Namespace) -> None:
    import torch

    from engine import experiments, tasks, threads, verdicts
    from engine.config import DatasetConfig, ImbalanceConfig
    from engine.datasets import build_dataset
    from engine.jobs import JobRunner, JobSnapshot
    from engine.mixes import MixConfig
    from engine.models import default_model
    from engine.synth import ddpm, gan, make_sets, sets
    from engine.training import TrainConfig

    runner, owner = JobRunner(), "bench"
    seen_threads: set[int] = set()

    def wait(job_id: str) -> JobSnapshot:
        last = ""
        while (snap := runner.snapshot(job_id)).status not in ("done", "failed", "cancelled", "stopped"):
            if snap.message and snap.message != last and time.monotonic() - clock["printed"] > 15:
                print(f"  {snap.title}: {snap.message}", flush=True)
                last, clock["printed"] = snap.message, time.monotonic()
            time.sleep(0.2)
        if snap.status != "done":
            raise SystemExit(f"{snap.title} ended {snap.status}: {snap.error}")
        return snap

    def phase(name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        clock["phases"].append((name, now - clock["last"]))
        print(f"{name}: {now - clock['last']:.0f} s ({cpu - clock['cpu']:.0f} CPU s)", flush=True)
        clock["last"], clock["cpu"] = now, cpu

    clock: dict = {"start": time.perf_counter(), "phases": [], "printed": 0.0, "cpu": time.process_time()}
    clock["last"] = clock["start"]
    # 1. Dataset page defaults: digits, 0, 1 and 2 cut to 10% of their training images.
    imbalance = ImbalanceConfig(kind="step", minority=("0", "1", "2"), keep_fraction=0.1)
    dataset = build_dataset(DatasetConfig(imbalance=imbalance))
    phase("dataset")
    # 2. Generate page defaults: the generator at its preset, then fill every class up to the largest.
    if args.generator == "ddpm":
        cfg: gan.GanConfig | ddpm.DdpmConfig = ddpm.DdpmConfig(preset=args.preset)
    else:
        cfg = gan.GanConfig(kind=args.generator, preset=args.preset)
    probe = runner.submit("threads", lambda ctx: torch.get_num_threads(), owner=owner)
    seen_threads.add(int(wait(probe).result))
    gen_id = wait(tasks.submit_generator_training(runner, cfg, dataset, owner=owner)).result
    phase(f"generator ({cfg.kind}, {args.preset}: {cfg.steps:,} steps, width {cfg.width})")
    info = wait(
        tasks.submit_generation(runner, make_sets.GenerateConfig(generator=gen_id), dataset, owner=owner)
    ).result
    phase(f"set (kept {sum(info.counts_kept):,} of {sum(info.counts_total):,})")
    wanted = info.config.get("wanted") or []
    short = [f"{n} {k} of {w}" for n, k, w in zip(info.class_names, info.counts_kept, wanted, strict=False) if k < w]
    print(f"  set filled: {'yes' if not short else 'short: ' + ', '.join(short)}")
    # 3. Train page defaults: real, add (the set), oversample and reweight, 3 seeds, the default model.
    mixes = (MixConfig("real"), MixConfig("add", synthetic_set=info.id), MixConfig("oversample"), MixConfig("reweight"))
    exp = experiments.ExperimentConfig(
        dataset.config, mixes, default_model(dataset), TrainConfig(), tuple(range(args.seeds)), "default loop"
    )
    record = tasks.submit_experiment(runner, exp, dataset, owner=owner, synthetic=sets.load_set)
    for snap in runner.list(owner=owner, group=str(tasks.JobGroup(tasks.JobKind.EXPERIMENT, record.id))):
        wait(snap.id)
    phase(f"{len(record.run_ids)} classifier runs")
    # 4. Compare: the headline.
    summary = experiments.summarize(record.id)
    head = verdicts.headline(summary)
    phase("compare")
    total = time.perf_counter() - clock["start"]
    print(
        f"total: {total:.0f} s ({total / 60:.1f} min; target 300 s on 2 CPU cores), {time.process_time():.0f} CPU s, "
        f"on {os.cpu_count()} CPUs, "
        f"{threads.total_threads()} torch threads in all, {sorted(seen_threads)} per heavy job, torch "
        f"{torch.__version__}; load average before: {args.load}"
    )
    print(f"verdict: {head.sentence if head is not None else 'none'}")


def browser_loop() -> None:
    """The same loop clicked through the real app in Debian's Chromium, on a fresh workspace; phase times."""
    import socket
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tempfile.mkdtemp(prefix="synthlab-default-loop-browser-")
    log = open(Path(home) / "server.log", "w")  # noqa: SIM115 (open for the server's whole life)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"]
    server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "SYNTHLAB_HOME": home}, stdout=log, stderr=log)
    url, last = f"http://127.0.0.1:{port}", time.perf_counter()
    started = last

    def phase(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        print(f"{name}: {now - last:.0f} s", flush=True)
        last = now

    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        phase("server start")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def go(name: str) -> None:
                page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
                expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)

            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Dataset")).to_be_visible(timeout=60_000)
            page.get_by_test_id("stSelectbox").filter(has_text="Profile").click()
            page.get_by_role("option", name="Step: some classes cut to a few percent").click()
            page.get_by_role("button", name="Apply to the training split").click()
            expect(page.get_by_test_id("stSidebar")).to_contain_text("step", timeout=60_000)
            phase("dataset page")
            go("Generate")
            page.get_by_role("button", name="Train generator").click()
            expect(page.get_by_text("Train a generator first")).to_have_count(0, timeout=3_600_000)
            phase("generator (default preset; the page's timing of a few steps included)")
            page.get_by_role("button", name="Generate set").click()
            stored = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Stored set")
            expect(stored).to_be_visible(timeout=3_600_000)
            phase("set")
            go("Train")
            page.get_by_role("button", name="Start").click()
            expect(page.get_by_text("All runs of this experiment have finished")).to_be_visible(timeout=3_600_000)
            phase("classifier runs")
            go("Compare")
            question = "Did the synthetic images beat every cheap control?"
            headline = page.locator('[data-testid^="stAlertContent"]').filter(has_text=question).first
            expect(headline).to_be_visible(timeout=600_000)
            phase("compare")
            print(f"verdict: {headline.inner_text()}")
            print(f"error boxes: {page.get_by_test_id('stException').count()} exceptions")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    print(f"total through the browser: {time.perf_counter() - started:.0f} s (server start and page loads included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard", choices=("quick", "standard", "thorough"))
    parser.add_argument("--generator", default="cgan", choices=("cgan", "wgan-gp", "ddpm"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="click the loop through the real app instead")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) before: {load} -- other processes share these cores", flush=True)
    if args.browser:
        browser_loop()
        return
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-default-loop-"))
    args.load = load
    engine_loop(args)


if __name__ == "__main__":
    main()
