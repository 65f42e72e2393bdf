"""Quality gate and speed of an embedded generator at several sampler settings, in one process.

Each setting is ``SCHEDULER:STEPS:GUIDANCE[:GUIDANCE_STEPS]`` (guidance steps omitted: every
step). For each, the script runs the gate of ``synaug generator check`` (the same oracle,
cached in ``--cache``, the same seeded prompts) at ``--per-cell`` images per class and prints
one table row: UNet rows per image (the work; time it with ``synaug bench``), mean recognisability, the worst class's gap to its real test images, the memorisation ratio, the
mean diversity of generated relative to real images, and the verdict. Usage::

    python benchmarks/sampler_sweep.py --cache runs/check --per-cell 100 \\
        dpm++:10:1.5 dpm++:10:1.5:3 dpm++:8:1.5:3 dpm++:6:1.5
"""

from __future__ import annotations

import argparse
import numpy as np

from synaug.generate.loading import load_generator
from synaug.generators.check import check_generator, fashion_mnist_world, train_oracles


def parse_setting(text: str) -> dict:
    """``SCHEDULER:STEPS:GUIDANCE[:GUIDANCE_STEPS]`` as load_generator's sampler keywords."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"setting {text!r}: write SCHEDULER:STEPS:GUIDANCE[:GUIDANCE_STEPS], e.g. dpm++:10:1.5:3")
    setting = {"scheduler": parts[0], "steps": int(parts[1]), "guidance_scale": float(parts[2])}
    if len(parts) == 4:
        setting["guidance_steps"] = int(parts[3])
    return setting


def unet_rows(steps: int, guidance_scale: float, guidance_steps: int | None) -> int:
    """UNet rows per image: two on every guided step, one on the others."""
    guided = 0 if guidance_scale == 1.0 else min(guidance_steps or steps, steps)
    return steps + guided


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help="SCHEDULER:STEPS:GUIDANCE[:GUIDANCE_STEPS]")
    parser.add_argument("--cache", required=True, help="folder of the cached oracle (as `synaug generator check --out`)")
    parser.add_argument("--per-cell", type=int, default=100, help="generated images per class")
    parser.add_argument("--generator", default="embedded")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = [parse_setting(text) for text in args.settings]
    world = fashion_mnist_world()
    oracle, _ = train_oracles(world, args.cache, seed=args.seed, progress=False)
    print(f"generator {args.generator}, {args.per_cell} images per class, seed {args.seed}, dtype {args.dtype}")
    print("| setting | UNet rows / image | mean recognisability % | worst class gap | memorisation ratio | diversity gen / real | gate |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for text, setting in zip(args.settings, settings):
        generator = load_generator(args.generator, device="cpu", dtype=args.dtype, batch_size=args.batch_size, **setting)
        report, _ = check_generator(generator, oracle, world.real_test, reference=world.reference, per_cell=args.per_cell, seed=args.seed)
        rows = unet_rows(generator.steps, generator.guidance_scale, generator.guidance_steps)
        diversity = np.mean([cell["generated_diversity"] / cell["real_diversity"] for cell in report.cells])
        print(f"| {text} | {rows} | {report.mean_generated:.1f} | {report.worst_gap:.1f} | "
              f"{report.memorisation_ratio:.2f} | {diversity:.2f} | {'passed' if report.passed else 'FAILED'} |", flush=True)


if __name__ == "__main__":
    main()
