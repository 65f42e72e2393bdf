"""CPU cost of feedback guidance with the shipped embedded Fashion-MNIST generator.

Times end-to-end ``EmbeddedBackend.generate`` of the same prompts and seeds at the generator's
recommended sampler settings (shipped one: DPM-Solver++, 10 steps, guidance 1.5), unguided and with
:class:`~synaug.guidance.FeedbackGuidance` on both gradient paths, guiding every 5th step (the
paper's and synaug's default) and every step. The feedback classifier is a small ResNet trained
here for a few epochs on Fashion-MNIST-LT (IF 100, 1,236 images), or a checkpoint you give.

Runs alternate (every configuration once per round) and each ratio is the median over rounds
of guided / unguided within the round, so a machine busy with other work slows both alike.
Goal: guided / unguided <= 1.5 at the default settings (x0 path, every 5th step).

    python benchmarks/feedback_overhead.py                          # 128 images, 3 rounds, entropy
    python benchmarks/feedback_overhead.py --threads 1              # on a loaded machine: 2-thread OpenMP
                                                                    # barriers then dominate small ops
    python benchmarks/feedback_overhead.py --checkpoint runs/ce/checkpoint --images 256 --criterion hardness
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synaug.data.benchmarks import fashion_mnist_lt
from synaug.generate.backends import EmbeddedBackend
from synaug.guidance import feedback_hook
from synaug.guidance.criteria import NEEDS_CLASS_GAUSSIANS
from synaug.train import TrainConfig, train_classifier

CONFIGS = (("x0", 5), ("x0", 1), ("full", 5), ("full", 1))
GOAL = 1.5


def time_generate(backend: EmbeddedBackend, prompts: list[str], seeds: list[int], classes: list[int], hooks) -> float:
    start = time.perf_counter()
    output = backend.generate(prompts, seeds, class_ids=classes, hooks=hooks)
    seconds = time.perf_counter() - start
    assert len(output.images) == len(prompts)
    return seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images per generate call (one batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--criterion", default="entropy")
    parser.add_argument("--checkpoint", default=None, help="feedback classifier checkpoint (default: train one here)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the classifier trained here")
    parser.add_argument("--generator", default=None, help="embedded generator folder (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the generator's)")
    parser.add_argument("--dtype", default="bf16", help="fp32 | bf16 (default: bf16, what `synaug run` picks on a CPU with native bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's); 1 on a machine busy with other work")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    options = dict(batch_size=args.images, steps=args.steps, dtype=args.dtype)
    backend = EmbeddedBackend.default(**options) if args.generator is None else EmbeddedBackend.from_pretrained(args.generator, **options)
    needs_data = args.checkpoint is None or args.criterion in NEEDS_CLASS_GAUSSIANS
    train_data = fashion_mnist_lt()[0] if needs_data else None
    if args.checkpoint is not None:
        classifier = args.checkpoint
    else:
        started = time.perf_counter()
        classifier = train_classifier(train_data, TrainConfig(epochs=args.epochs, device="cpu", num_workers=0), progress=False)
        print(f"trained the feedback classifier (small_resnet, {args.epochs} epochs, {len(train_data)} images) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    hooks = {f"{path}, every {every}": [feedback_hook(args.criterion, classifier, train_data, gradient_path=path, every=every)]
             for path, every in CONFIGS}
    configs = {"unguided": [], **hooks}

    names = backend.spec.class_names
    classes = [i % len(names) for i in range(args.images)]
    prompts = [f"a photo of a {names[c]}" for c in classes]
    print(f"{args.images} images per call, {backend.steps} {backend.scheduler_name} steps, CFG {backend.guidance_scale:g}, "
          f"{backend.pipeline.precision.name}, criterion {args.criterion}, {torch.get_num_threads()} threads, torch {torch.__version__}",
          flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for round_index in range(args.repeats + 1):
        seeds = list(range(round_index * args.images, (round_index + 1) * args.images))
        for name, hook_list in configs.items():
            elapsed = time_generate(backend, prompts, seeds, classes, hook_list)
            if round_index:  # the first round warms up
                seconds[name].append(elapsed)
        if round_index:
            print(f"round {round_index}: " + ", ".join(f"{name} {s[-1]:.2f} s" for name, s in seconds.items()), flush=True)

    ratios = {name: statistics.median(g / u for g, u in zip(seconds[name], seconds["unguided"])) for name in configs}
    print(f"\n{'configuration':<16} {'s / call':>9} {'ms / image':>11} {'guided / unguided':>18}")
    for name in configs:
        median = statistics.median(seconds[name])
        print(f"{name:<16} {median:>9.2f} {1000 * median / args.images:>11.1f} {ratios[name]:>18.2f}")
    default = ratios["x0, every 5"]
    print(f"\ndefault settings (x0, every 5th step): {default:.2f}x unguided; goal <= {GOAL}x: {'met' if default <= GOAL else 'NOT met'}")
    return ratios


if __name__ == "__main__":
    main()
