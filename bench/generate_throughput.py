"""Benchmark: Stable Diffusion images per second at batch sizes 1, 4 and 16, through SynthLab's loading path.

By default it builds a tiny random-weight pipeline (engine/synth/tiny_sd.py) in a temporary folder, so
it runs offline on a CPU; ``--realistic`` builds Stable Diffusion 1.5's UNet and VAE layout instead
(random weights, about 1B parameters: meant for a GPU); ``--model`` takes any local pipeline folder or
cached hub id. The pipeline is loaded with :func:`engine.synth.stable_diffusion.load_pipeline` (fp16 on CUDA,
fp32 on the CPU). ``--compile both`` times the UNet with and without ``torch.compile``. Each figure is
the median of ``--repeats`` timed calls after one warm-up call.

Usage: python bench/generate_throughput.py [--realistic] [--size 64] [--steps 4] [--batches 1,4,16]
       [--compile off|on|both] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="pipeline folder or cached hub id (default: build one)")
    parser.add_argument("--realistic", action="store_true", help="build SD 1.5's layout with random weights")
    parser.add_argument("--size", type=int, default=0, help="output side in px (default 64 tiny, 512 realistic)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)  # a benchmark reads what its user can read
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-gen-"))

    import torch

    from engine.synth import stable_diffusion
    from engine.synth.tiny_sd import build_tiny_pipeline

    model = args.model or str(
        build_tiny_pipeline(Path(tempfile.mkdtemp(prefix="sd-bench-")) / "pipe", realistic=args.realistic)
    )
    size = args.size or (512 if args.realistic else 64)
    pipe, _ = stable_diffusion.load_pipeline(model, device=args.device)
    device = pipe.device
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    print(
        f"pipeline: {'realistic SD 1.5 layout' if args.realistic else Path(model).name}, UNet {params:.1f}M "
        f"parameters, {device} {pipe.unet.dtype}, {size}x{size} px, {args.steps} steps, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        flush=True,
    )
    eager_unet = pipe.unet
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for compiled in modes:
        pipe.unet = torch.compile(eager_unet) if compiled else eager_unet
        for batch in [int(b) for b in args.batches.split(",")]:
            times = []
            for i in range(args.repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.inference_mode():
                    pipe(
                        ["a photo of a cat"] * batch,
                        height=size,
                        width=size,
                        num_inference_steps=args.steps,
                        guidance_scale=7.5,
                        generator=[torch.Generator("cpu").manual_seed(k) for k in range(batch)],
                        output_type="np",
                    )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first call warms up (and compiles)
                    times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(
                f"compile {'on ' if compiled else 'off'} batch {batch:>3}: {batch / median:8.2f} images/s "
                f"({median / batch * 1000:8.1f} ms per image, median of {args.repeats})",
                flush=True,
            )


if __name__ == "__main__":
    main()
