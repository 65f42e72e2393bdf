"""Cost of feedback guidance on an SD-1.5-size pipeline with a ResNet-50-size feedback classifier.

Builds the random-weight Stable Diffusion 1.5-size backend of ``gpu_generation.py`` (UNet
320/640/1280/1280, SD's VAE, a 12-layer CLIP text encoder; 512 px) and synaug's ResNet-50
(``synaug.train.models.resnet50``, 1000 classes, 224 px input; run under fp16 autocast on a
GPU), and times one ``generate`` call per batch size:

* unguided - the plain classifier-free-guided loop (30 DDIM steps, CFG 5, as the official code);
* guided   - :class:`~synaug.guidance.FeedbackGuidance` (entropy) on the ``x0`` and ``full``
  gradient paths, guiding every 5th step (the default) and every step.

For each guided run it prints the end-to-end ratio guided / unguided and the cost of one
guided step in plain steps, ``1 + (guided - unguided) / (guided steps · unguided / steps)``,
to compare with the naive feedback step measured at 5.7x a plain step (ANCHORS.md: gradient
through the VAE decode and a ResNet-50, batch 1). Runs alternate between configurations and
ratios are medians over rounds. Cost does not depend on weight values, so random weights
give real timings. A run that exhausts GPU memory is reported as OOM.

    python benchmarks/gpu_feedback.py                     # 512 px, 30 steps, fp16, batch 8 and 32
    python benchmarks/gpu_feedback.py --every 1 2 5 10    # how the guided-step frequency moves it
    python benchmarks/gpu_feedback.py --tiny              # CPU smoke test with tiny models
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from synaug.guidance import FeedbackGuidance
from synaug.train.models import Normalizer, resnet50, small_resnet

NAIVE_STEP_COST = 5.7


def _generation_benchmark():
    """The sibling ``gpu_generation.py`` (its SD-1.5-size backend builder), loaded by path."""
    spec = importlib.util.spec_from_file_location("gpu_generation", Path(__file__).with_name("gpu_generation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(backend, batch: int, seeds: list[int], hooks) -> float:
    """Seconds of one ``generate`` call of ``batch`` images (class ids cycle over 1000 classes)."""
    prompts = [f"a photo of a {name}" for name in ("cat", "dog", "bird", "frog")] * batch
    synchronize(backend.pipeline.device)
    start = time.perf_counter()
    output = backend.generate(prompts[:batch], seeds, class_ids=[i % 1000 for i in range(batch)], hooks=hooks)
    synchronize(backend.pipeline.device)
    assert len(output.images) == batch
    return time.perf_counter() - start


def guided_steps(steps: int, every: int) -> int:
    return len(range(0, steps, every))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="batch sizes to time")
    parser.add_argument("--every", type=int, nargs="+", default=[5, 1], help="guide every k-th step (one row per k)")
    parser.add_argument("--paths", nargs="+", default=["x0", "full"], choices=["x0", "full"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--dtype", default=None, help="fp16 (CUDA default) or fp32 (CPU default)")
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--classifier-size", type=int, default=224, help="input size of the feedback classifier")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds after one warm-up round")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU, 3 steps: a smoke test")
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.steps, args.repeats = args.device or "cpu", min(args.steps, 3), min(args.repeats, 1)
        args.batch, args.classifier_size = sorted({min(b, 2) for b in args.batch}), 32
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    # 1. The SD-1.5-size backend and the ResNet-50 feedback classifier, random weights
    generation = _generation_benchmark()
    settings = argparse.Namespace(tiny=args.tiny, device=args.device, dtype=args.dtype, scheduler=args.scheduler, steps=args.steps,
                                  guidance_scale=args.guidance_scale, decode_batch_size=None, channels_last=False, compile=False)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = generation.character_tokenizer(Path(folder))
    backend = generation.build_backend(settings, tokenizer)
    device = backend.pipeline.device
    torch.manual_seed(0)
    classifier = (small_resnet(1000, 3) if args.tiny else resnet50(1000, 3)).to(device).eval()
    autocast = torch.float16 if device.type == "cuda" and args.dtype == "fp16" else None
    configs = {(path, every): [FeedbackGuidance(classifier, Normalizer.fixed(3), criterion="entropy", every=every, gradient_path=path,
                                                input_size=(args.classifier_size, args.classifier_size), autocast_dtype=autocast)]
               for path in args.paths for every in args.every}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device_name}; {backend.height} px, {args.steps} {args.scheduler} steps, CFG {args.guidance_scale:g}, {args.dtype}; "
          f"classifier {'small_resnet' if args.tiny else 'resnet50'} at {args.classifier_size} px"
          f"{' (fp16 autocast)' if autocast else ''}; torch {torch.__version__}", flush=True)

    # 2. Alternating rounds per batch size: unguided, then every guided configuration
    rows = []
    for batch in args.batch:
        backend.batch_size = batch
        seconds: dict = {"unguided": [], **{key: [] for key in configs}}
        for round_index in range(args.repeats + 1):
            seeds = list(range(round_index * batch, (round_index + 1) * batch))
            for key in seconds:
                if seconds[key] is None:
                    continue
                try:
                    elapsed = time_call(backend, batch, seeds, [] if key == "unguided" else configs[key])
                except torch.OutOfMemoryError:
                    seconds[key] = None
                    torch.cuda.empty_cache()
                    continue
                if round_index:
                    seconds[key].append(elapsed)
        unguided = seconds["unguided"]
        for key, times in seconds.items():
            if key == "unguided":
                continue
            path, every = key
            row = {"batch": batch, "path": path, "every": every, "guided_steps": guided_steps(args.steps, every),
                   "unguided_s": statistics.median(unguided)}
            if times is None:
                rows.append({**row, "guided_s": None, "ratio": None, "guided_step_cost": None})
                continue
            ratio = statistics.median(g / u for g, u in zip(times, unguided))
            step_cost = 1 + (ratio - 1) * args.steps / row["guided_steps"]
            rows.append({**row, "guided_s": statistics.median(times), "ratio": ratio, "guided_step_cost": step_cost})
        print(f"batch {batch} done: unguided {statistics.median(unguided):.2f} s", flush=True)

    # 3. The table
    print(f"\n{'batch':>5} {'path':>5} {'every':>5} {'unguided s':>11} {'guided s':>9} {'guided/unguided':>16} "
          f"{'guided step (plain steps)':>26}")
    for row in rows:
        if row["ratio"] is None:
            print(f"{row['batch']:>5} {row['path']:>5} {row['every']:>5} {row['unguided_s']:>11.2f} {'OOM':>9}")
            continue
        print(f"{row['batch']:>5} {row['path']:>5} {row['every']:>5} {row['unguided_s']:>11.2f} {row['guided_s']:>9.2f} "
              f"{row['ratio']:>16.2f} {row['guided_step_cost']:>26.2f}")
    print(f"\nnaive feedback step (ANCHORS.md, batch 1): {NAIVE_STEP_COST}x a plain step")
    if args.out is not None:
        Path(args.out).write_text(json.dumps({"device": device_name, "args": vars(args), "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
