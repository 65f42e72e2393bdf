"""Roofline of this machine for synaug's models: measured peaks against achieved throughput.

Prints two tables (CPU or GPU alike):

* peaks - the best GFLOP/s of the operations the models are made of, in fp32 and bf16: a
  square matmul and 3x3 convolutions at the embedded UNet's sizes (its three widths at
  their resolutions, batch 512 = 256 images with classifier-free guidance), contiguous and
  channels-last (the better of the two counts), plus the memory bandwidth of a large copy;
* work - FLOPs per image of generation with the shipped embedded generator (per UNet row,
  per sampler step, per image at the demo's sampler: DPM-Solver++ 10 steps, guidance 1.5)
  and of the demo's classifier training step (small ResNet, forward + backward, batch 128),
  counted by ``torch.utils.flop_counter`` (convolutions and matrix products only; the
  elementwise work it omits is bounded by the bandwidth row), then each one's measured
  images/s, the GFLOP/s that makes and its fraction of the matching peak.

Usage::

    python benchmarks/roofline.py                   # auto device; generation and training precision as synaug picks
    python benchmarks/roofline.py --device cuda --gen-batch 512
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from synaug.generate.backends import EmbeddedBackend
from synaug.train.models import build_model
from synaug.train.trainer import autocast_dtype, resolve_device
from train_throughput import throughput as training_throughput

UNET_CONVS = ((32, 28), (64, 14), (128, 7))  # (channels, size) of the shipped UNet's levels
CONV_BATCH = 512
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_rate(run: Callable[[], None], work: float, device: torch.device, seconds: float, repeats: int = 3) -> float:
    """Best ``work`` per second of ``run`` over ``repeats`` timed spans of about ``seconds`` each."""
    run()
    _sync(device)
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(work * calls / elapsed)
    return max(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def peak_rows(device: torch.device, seconds: float) -> list[tuple[str, dict[str, float]]]:
    """(operation, {dtype: GFLOP/s}) for a 2048² matmul and the UNet's 3x3 convolutions."""
    rows = []
    n = 2048
    rates = {}
    for name, dtype in DTYPES.items():
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        rates[name] = best_rate(lambda: torch.mm(a, b), 2 * n**3, device, seconds) / 1e9
    rows.append((f"matmul {n}x{n}x{n}", rates))
    for channels, size in UNET_CONVS:
        rates = {}
        for name, dtype in DTYPES.items():
            flops = 2 * CONV_BATCH * channels * channels * 9 * size * size
            best = 0.0
            for memory_format in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(CONV_BATCH, channels, size, size, device=device, dtype=dtype).to(memory_format=memory_format)
                w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).to(memory_format=memory_format)
                best = max(best, best_rate(lambda: F.conv2d(x, w, padding=1), flops, device, seconds) / 1e9)
            rates[name] = best
        rows.append((f"conv 3x3 {channels}->{channels} at {size}x{size}, batch {CONV_BATCH}", rates))
    return rows


@torch.no_grad()
def bandwidth(device: torch.device, seconds: float) -> float:
    """GB/s of copying a 256 MiB fp32 tensor (bytes read + written)."""
    source = torch.randn(64 << 20, device=device)
    target = torch.empty_like(source)
    return best_rate(lambda: target.copy_(source), 2 * source.numel() * 4, device, seconds) / 1e9


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (convolutions and matrix products) that ``run`` performs."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops()


def generation_row(device: torch.device, batch: int) -> dict:
    """FLOPs and measured rate of the shipped generator at its recommended (the demo's) sampler."""
    backend = EmbeddedBackend.default(device=str(device), dtype="auto", batch_size=batch)
    pipeline = backend.pipeline
    unet_rows = 2 if backend.guidance_scale != 1.0 else 1
    dtype = pipeline.precision.weight_dtype
    sample = torch.randn(4, 1, backend.height, backend.width, device=device, dtype=dtype)
    embedding = torch.randn(4, 384, device=device, dtype=dtype)
    with torch.no_grad(), pipeline.autocast():
        per_row = count_flops(lambda: pipeline.unet(sample, torch.tensor(500, device=device),
                                                    encoder_hidden_states=embedding[:, None], class_labels=embedding)) / 4
    prompts = [f"a photo of a {name}" for name in backend.spec.class_names] * (batch // 10 + 1)
    prompts = prompts[:batch]
    backend.generate(prompts, list(range(batch)))  # warm-up: text encoder, kernels, allocator
    times = []
    for repeat in range(2):
        start = time.perf_counter()
        backend.generate(prompts, list(range((repeat + 1) * batch, (repeat + 2) * batch)))
        times.append(time.perf_counter() - start)
    return {
        "name": f"generation, {backend.scheduler_name} {backend.steps} steps, guidance {backend.guidance_scale:g}, batch {batch}",
        "precision": pipeline.precision.name, "per_row": per_row, "per_step": per_row * unet_rows,
        "per_image": per_row * unet_rows * backend.steps, "images_per_second": batch / min(times),
    }


def training_row(device: torch.device, batch: int, steps: int) -> dict:
    """FLOPs (forward + backward) and measured rate of the demo's classifier training step."""
    precision = autocast_dtype("auto", device)
    model = build_model("small_resnet", 10, in_channels=1).to(device)
    images = torch.randn(batch, 1, 28, 28, device=device)
    labels = torch.arange(batch, device=device) % 10
    per_image = count_flops(lambda: F.cross_entropy(model(images), labels).backward()) / batch
    rate = training_throughput("small_resnet", batch, steps=steps, epochs=3, amp="auto", channels_last=True, device=device.type)
    return {
        "name": f"classifier training (small ResNet, 28 px), batch {batch}", "precision": "bf16" if precision else "fp32",
        "per_row": None, "per_step": None, "per_image": per_image, "images_per_second": rate,
    }


def machine(device: torch.device) -> str:
    """A one-line description of where this ran."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")] \
        if platform.system() == "Linux" else []
    return f"{names[0] if names else platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timed span of the peak measurements")
    parser.add_argument("--gen-batch", type=int, default=128, help="images per generation call")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=20, help="training steps per timed epoch (3 epochs, the first a warm-up)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    print(f"machine: {machine(device)}")
    peaks = peak_rows(device, args.seconds)
    print("\n| operation | fp32 GFLOP/s | bf16 GFLOP/s |\n|---|---:|---:|")
    for name, rates in peaks:
        print(f"| {name} | {rates['fp32']:.0f} | {rates['bf16']:.0f} |")
    print(f"| memory copy (256 MiB) | {bandwidth(device, args.seconds):.1f} GB/s | |")
    conv_peak = {name: max(rates[name] for operation, rates in peaks if operation.startswith("conv")) for name in DTYPES}
    rows = [generation_row(device, args.gen_batch), training_row(device, args.train_batch, args.train_steps)]
    print("\n| work | precision | GFLOP per UNet row / step / image | images/s | achieved GFLOP/s | conv peak GFLOP/s | of peak |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        flops = " / ".join("—" if row[key] is None else f"{row[key] / 1e9:.3g}" for key in ("per_row", "per_step", "per_image"))
        achieved = row["images_per_second"] * row["per_image"] / 1e9
        peak = conv_peak[row["precision"]]
        print(f"| {row['name']} | {row['precision']} | {flops} | {row['images_per_second']:.1f} | {achieved:.1f} "
              f"| {peak:.0f} | {100 * achieved / peak:.0f} % |")


if __name__ == "__main__":
    main()
