"""Training throughput (images/s) of the trainer for small_resnet (28 px) and resnet32 (32 px).

Runs :func:`synaug.train.train_classifier` on random uint8 images with the full training
step (crop, flip, normalisation, forward, backward, SGD) and reports the median epoch time
after a warm-up epoch. Usage::

    python benchmarks/train_throughput.py                      # auto device and precision
    python benchmarks/train_throughput.py --amp off --no-channels-last
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from synaug.data import LabeledImages
from synaug.train.trainer import TrainConfig, autocast_dtype, resolve_device, train_classifier

SETTINGS = {"small_resnet": (1, 28), "resnet32": (3, 32)}


def throughput(model: str, batch_size: int, steps: int, epochs: int, amp: str, channels_last: bool, device: str) -> float:
    """Training images per second of ``model``: median over the epochs after the first."""
    channels, size = SETTINGS[model]
    n = batch_size * steps
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    data = LabeledImages(labels=np.arange(n) % 10, class_names=[str(c) for c in range(10)], images=images)
    config = TrainConfig(
        model=model, epochs=epochs, batch_size=batch_size, amp=amp, channels_last=channels_last, device=device
    )
    result = train_classifier(data, config, progress=False)
    seconds = statistics.median(row["seconds"] for row in result.history[1:])
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up")
    parser.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = autocast_dtype(args.amp, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; autocast: {precision or 'off'}; channels_last: {args.channels_last}; batch {args.batch_size}")
    for model in args.models:
        rate = throughput(model, args.batch_size, args.steps, args.epochs, args.amp, args.channels_last, args.device)
        channels, size = SETTINGS[model]
        print(f"{model:>13} ({channels}x{size}x{size}): {rate:8.0f} training images/s")


if __name__ == "__main__":
    main()
