"""Benchmark: training images/second of our loop against the usual PyTorch pipeline, same data and model.

Ours: uint8 images in one tensor, batched crop/flip on the device (engine.training.train).
Reference: torchvision ImageFolder over PNG files, DataLoader, PIL transforms (RandomCrop with
padding 4, RandomHorizontalFlip, ToTensor, Normalize), float32. Both train simple_cnn on 32x32 RGB at
batch 128 for the same epochs; the script prints images/second (training only, no evaluation), the
ratio, the test accuracy of each, and the fraction of this CPU's measured matmul FLOP/s our loop
reaches (FLOPs counted with torch.utils.flop_counter on one training step).

Usage: python bench/train_throughput.py [--zip ../shared/data/cifar10-jpg.zip] [--train 10000] [--epochs 3]
Without the zip it uses the built-in digits, upscaled to 32x32 RGB.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.zip"


def load_data(zip_path: Path | None, n_train: int, n_test: int):  # type: ignore[no-untyped-def]
    from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
    from engine.datasets import build_dataset

    if zip_path and zip_path.is_file():
        source = SourceConfig(kind="zip", path=str(zip_path), resolution=32, color="rgb")
    else:
        source = SourceConfig(kind="digits", resolution=32, color="rgb")
    data = build_dataset(DatasetConfig(source=source, imbalance=ImbalanceConfig()))
    gen = np.random.default_rng(0)
    train = data.train.subset(np.sort(gen.permutation(len(data.train))[:n_train]))
    test = data.test.subset(np.sort(gen.permutation(len(data.test))[:n_test]))
    return data, train, test


def matmul_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def flops_per_image(model: torch.nn.Module, channels: int, batch: int = 128) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x, y = torch.rand(batch, channels, 32, 32), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def reference(train, test, epochs: int, workers: int, seed: int):  # type: ignore[no-untyped-def]
    """The usual way: PNG files, ImageFolder, DataLoader, PIL transforms, float32."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from engine.models import build_model
    from engine.training import channel_stats

    root = Path(tempfile.mkdtemp(prefix="synthlab-ref-"))
    for i, (img, label) in enumerate(zip(train.images, train.labels, strict=True)):
        folder = root / f"{int(label):03d}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    mean, std = channel_stats(train.images)
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(
        ImageFolder(str(root), transform=tf),
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(seed)
    # Normalisation happens in the transforms, so the model's own buffers are identity.
    model = build_model(
        "simple_cnn", channels=3, num_classes=train.num_classes, resolution=32, mean=[0.0] * 3, std=[1.0] * 3, seed=seed
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    seen, elapsed = 0, 0.0
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
        elapsed += time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        x = (test.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        acc = (model(x).argmax(1) == test.labels).float().mean().item()
    return seen / elapsed, acc


def ours(data, train, test, epochs: int, seed: int, precision: str):  # type: ignore[no-untyped-def]
    from engine.models import build_model
    from engine.training import TrainConfig, channel_stats, predict_proba
    from engine.training import train as train_loop

    mean, std = channel_stats(train.images)
    model = build_model(
        "simple_cnn", channels=3, num_classes=train.num_classes, resolution=32, mean=mean, std=std, seed=seed
    )
    cfg = TrainConfig(
        batch_size=128, max_epochs=epochs, patience=0, flip=True, crop_padding=4, device="cpu", precision=precision
    )
    # A random validation subset: the split is sorted by class, so a prefix would hold one class only.
    val = data.val.subset(np.sort(np.random.default_rng(1).permutation(len(data.val))[:1000]))
    result = train_loop(model, train, val, cfg, seed=seed)
    acc = float((predict_proba(result.model, test.images).argmax(1) == test.labels.numpy()).mean())
    return result.images_per_second, acc, result.device, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="CIFAR-10 zip of class folders")
    parser.add_argument("--train", type=int, default=10_000, help="training images")
    parser.add_argument("--test", type=int, default=2_000, help="test images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--precision", default="auto", help="our loop's precision: auto, fp32 or bf16")
    args = parser.parse_args()
    os.environ.setdefault("SYNTHLAB_FOLDER_ROOTS", os.sep)  # a benchmark reads what its user can read
    os.environ.setdefault("SYNTHLAB_HOME", tempfile.mkdtemp(prefix="synthlab-bench-"))

    data, train, test = load_data(args.zip, args.train, args.test)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"data: {data.config.source.kind} {data.config.source.path or ''}: {len(train):,} train, {len(test):,} test, "
        f"32x32x3; simple_cnn, batch 128, {args.epochs} epochs, seed 0"
    )
    ours_ips, ours_acc, device, model = ours(data, train, test, args.epochs, 0, args.precision)
    print(f"ours ({device}):{'':14} {ours_ips:8.0f} images/s   test accuracy {ours_acc:.3f}")
    best = 0.0
    for workers in args.workers:
        ref_ips, ref_acc = reference(train, test, args.epochs, workers, 0)
        best = max(best, ref_ips)
        print(f"reference (num_workers={workers}, fp32): {ref_ips:8.0f} images/s   test accuracy {ref_acc:.3f}")
    print(f"speed-up over the best reference: {ours_ips / best:.2f}x")
    per_image = flops_per_image(model.float().to(memory_format=torch.contiguous_format), 3)
    peak = matmul_flops(torch.bfloat16 if "bf16" in device else torch.float32)
    achieved = per_image * ours_ips
    print(
        f"training FLOPs per image (fwd+bwd): {per_image / 1e6:.1f} M; achieved {achieved / 1e9:.1f} GFLOP/s "
        f"= {100 * achieved / peak:.0f}% of measured matmul peak {peak / 1e9:.0f} GFLOP/s "
        f"({'bf16' if 'bf16' in device else 'fp32'})"
    )


if __name__ == "__main__":
    main()
