"""Throughput of synaug's sampling loop on an SD-1.5-size pipeline vs the UNet+VAE bound.

Builds a Stable Diffusion 1.5-size pipeline with random weights in memory (UNet 320/640/1280/1280,
cross-attention 768, SD's VAE, a 12-layer 768-wide CLIP text encoder, a character-level
tokenizer padded to 77 tokens) and, for each batch size, times:

* ours  - ``StableDiffusionBackend.generate`` (text encoding, per-image seeded noise, the
          guided denoising loop, VAE decode, uint8 post-processing);
* bound - the same number of bare guided UNet calls (batch 2B) plus one batched VAE decode.

Cost does not depend on weight values, so random weights give real timings. Only torch,
diffusers, transformers and synaug are needed (no download).

    python benchmarks/gpu_generation.py                       # 512 px, 25 steps, fp16, batch 8 and 32
    python benchmarks/gpu_generation.py --channels-last --compile
    python benchmarks/gpu_generation.py --tiny                # CPU smoke test with a tiny model
"""

from __future__ import annotations

import argparse
import json
import string
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synaug.generate.backends import StableDiffusionBackend

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu")
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32, norm_num_groups=4,
    block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77)


def character_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer over single characters, padded to 77 tokens; built offline."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + "-'.,/!?":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_backend(args: argparse.Namespace, tokenizer: CLIPTokenizer) -> StableDiffusionBackend:
    """Random-weight SD components wrapped in synaug's Stable Diffusion backend."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if args.tiny else SD15_UNET))
    vae = AutoencoderKL(**(TINY_VAE if args.tiny else SD15_VAE))
    text_config = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                 **(TINY_TEXT if args.tiny else SD15_TEXT))
    backend = StableDiffusionBackend(
        name="sd15-random", tokenizer=tokenizer, text_encoder=CLIPTextModel(text_config), unet=unet, vae=vae,
        scheduler_config=SD15_SCHEDULER, device=args.device, dtype=args.dtype, scheduler=args.scheduler,
        steps=args.steps, guidance_scale=args.guidance_scale, decode_batch_size=args.decode_batch_size,
        channels_last=args.channels_last,
    )
    pipeline = backend.pipeline
    if args.compile:
        pipeline.unet = torch.compile(pipeline.unet, fullgraph=True)
    return backend


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(backend: StableDiffusionBackend, batch: int, repeats: int) -> float:
    """Median seconds of one ``generate`` call of ``batch`` images (after one warm-up)."""
    prompts = [f"a photo of a {name}" for name in ("cat", "dog", "bird", "frog")] * batch
    backend.batch_size = batch
    times = []
    for repeat in range(repeats + 1):
        seeds = list(range(repeat * batch, (repeat + 1) * batch))
        synchronize(backend.pipeline.device)
        start = time.perf_counter()
        output = backend.generate(prompts[:batch], seeds)
        synchronize(backend.pipeline.device)
        times.append(time.perf_counter() - start)
        assert output.images.shape[0] == batch
    return sorted(times[1:])[len(times[1:]) // 2]


@torch.no_grad()
def time_bound(backend: StableDiffusionBackend, batch: int, repeats: int) -> float:
    """Median seconds of the bare work: ``steps`` UNet calls (batch 2B with guidance) + one VAE decode."""
    pipeline = backend.pipeline
    dtype = pipeline.precision.weight_dtype
    factor = pipeline.vae_scale_factor
    rows = batch if backend.guidance_scale == 1.0 else 2 * batch
    latents = torch.randn(rows, 4, backend.height // factor, backend.width // factor, device=pipeline.device, dtype=dtype)
    context = torch.randn(rows, backend.tokenizer.model_max_length, backend.text_encoder.config.hidden_size,
                          device=pipeline.device, dtype=dtype)
    timesteps = torch.linspace(999, 1, backend.steps, device=pipeline.device).long()
    times = []
    for _ in range(repeats + 1):
        synchronize(pipeline.device)
        start = time.perf_counter()
        with pipeline.autocast():
            for t in timesteps:
                pipeline.unet(latents, t, encoder_hidden_states=context, return_dict=False)
            pipeline.vae.decode(latents[:batch] / pipeline.vae.config.scaling_factor, return_dict=False)
        synchronize(pipeline.device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main(argv: list[str] | None = None) -> list[tuple[int, float, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="batch sizes to time")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--dtype", default=None, help="fp16 (CUDA default), bf16 or fp32 (CPU default)")
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (median reported)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format for UNet and VAE")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--decode-batch-size", type=int, default=None, help="VAE decode chunk (default: whole batch)")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU, 2 steps: a smoke test")
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.steps, args.repeats = args.device or "cpu", min(args.steps, 2), min(args.repeats, 1)
        args.batch = sorted({min(b, 2) for b in args.batch})
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = character_tokenizer(Path(folder))
    backend = build_backend(args, tokenizer)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    options = ", ".join(name for name in ("channels_last", "compile") if getattr(args, name)) or "eager"
    print(f"device {device_name}; {backend.height} px, {args.steps} steps, CFG {args.guidance_scale}, {args.dtype}, "
          f"scheduler {args.scheduler}, {options}, decode batch {args.decode_batch_size or 'all'}, torch {torch.__version__}")
    rows = []
    for batch in args.batch:
        ours = time_ours(backend, batch, args.repeats)
        bound = time_bound(backend, batch, args.repeats)
        rows.append((batch, batch / ours, batch / bound, bound / ours))
        print(f"batch {batch}: ours {ours:.3f} s, bound {bound:.3f} s", flush=True)
    print(f"\n{'batch':>5} {'ours img/s':>11} {'bound img/s':>12} {'ours/bound':>11}")
    for batch, ours_rate, bound_rate, ratio in rows:
        print(f"{batch:>5} {ours_rate:>11.2f} {bound_rate:>12.2f} {ratio:>10.1%}")
    return rows


if __name__ == "__main__":
    main()
