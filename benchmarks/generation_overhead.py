"""CPU overhead of synaug's sampling loop over bare UNet calls, with a small embedded-format model.

Builds an embedded-generator-shaped UNet (pixel space, 28 px, attention-free blocks, 384-d
projection condition) with random weights and times, for the same batch and step count:

* loop - ``EmbeddedBackend.generate`` (cached prompt embeddings, per-image seeded noise,
         guided loop with the scheduler, finiteness checks, uint8 post-processing);
* bare - the same number of UNet forward calls on tensors of the same shapes.

Loop and bare runs alternate, and the ratio is the median of the per-pair ratios, so a busy
machine slows both sides alike. The printed ratio loop/bare is the loop's overhead (1.00 = none).
Usage::

    python benchmarks/generation_overhead.py                    # batch 256, 20 DDIM steps, no guidance
    python benchmarks/generation_overhead.py --guidance-scale 2 --scheduler dpm++ --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from synaug.generate.backends import EmbeddedBackend, EmbeddedGeneratorSpec


def build_backend(args: argparse.Namespace) -> EmbeddedBackend:
    """A random-weight embedded backend of the shipped model's shape."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=tuple(args.channels),
        down_block_types=("DownBlock2D",) * len(args.channels), up_block_types=("UpBlock2D",) * len(args.channels),
        mid_block_type="UNetMidBlock2D", norm_num_groups=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=384, cross_attention_dim=384,
    )
    spec = EmbeddedGeneratorSpec(image_size=(28, 28), channels=1, class_names=["a", "b"], caption_templates=["{class}"])
    return EmbeddedBackend(
        name="overhead", unet=unet, scheduler_config=dict(DDPMScheduler(beta_schedule="squaredcos_cap_v2").config),
        spec=spec, weights_digest="00000000", dtype=args.dtype, scheduler=args.scheduler, steps=args.steps,
        guidance_scale=args.guidance_scale, batch_size=args.batch, channels_last=args.channels_last,
    )


def time_loop(backend: EmbeddedBackend, prompts: list[str], seed: int) -> float:
    """Seconds of one ``generate`` call of ``prompts``."""
    start = time.perf_counter()
    backend.generate(prompts, list(range(seed, seed + len(prompts))))
    return time.perf_counter() - start


@torch.no_grad()
def time_bare(backend: EmbeddedBackend, batch: int) -> float:
    """Seconds of ``steps`` bare UNet calls at the loop's batch shape."""
    pipeline = backend.pipeline
    rows = batch if backend.guidance_scale == 1.0 else 2 * batch
    sample = torch.randn(rows, 1, backend.height, backend.width)
    embedding = torch.randn(rows, 384)
    start = time.perf_counter()
    with pipeline.autocast():
        for t in torch.linspace(999, 0, backend.steps).long():
            pipeline.unet(sample, t, encoder_hidden_states=embedding[:, None], class_labels=embedding, return_dict=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--dtype", default="fp32", help="fp32 or bf16 (CPU autocast)")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128], help="UNet block widths")
    parser.add_argument("--channels-last", action="store_true", help="channels-last UNet weights")
    parser.add_argument("--repeats", type=int, default=5, help="timed (loop, bare) pairs after a warm-up")
    args = parser.parse_args(argv)

    backend = build_backend(args)
    prompts = [f"a photo of a {name}" for name in ("shirt", "bag", "coat", "sandal")] * (args.batch // 4 + 1)
    prompts = prompts[: args.batch]
    time_loop(backend, prompts, 0)  # warm-up: loads the text encoder, caches embeddings, builds kernels
    time_bare(backend, args.batch)
    pairs = [(time_loop(backend, prompts, (r + 1) * args.batch), time_bare(backend, args.batch)) for r in range(args.repeats)]
    loop, bare = (statistics.median(column) for column in zip(*pairs))
    ratio = statistics.median(loop_s / bare_s for loop_s, bare_s in pairs)
    print(f"cpu threads {torch.get_num_threads()}; batch {args.batch}, {args.steps} {args.scheduler} steps, "
          f"guidance {args.guidance_scale}, {args.dtype}, UNet {args.channels}"
          f"{', channels_last' if args.channels_last else ''}")
    rows = [("loop ms/image", 1000 * loop / args.batch), ("bare UNet ms/image", 1000 * bare / args.batch),
            ("loop / bare", ratio)]
    for name, value in rows:
        print(f"{name:>20} {value:8.3f}")
    return rows


if __name__ == "__main__":
    main()
