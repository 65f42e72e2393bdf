"""Training the embedded text-to-image generator (``synaug generator train``).

A small pixel-space diffusers ``UNet2DConditionModel`` without attention learns epsilon
prediction under a DDPM noise schedule, conditioned on the pooled all-MiniLM-L6-v2
embedding of a caption built from templates ("a photo of a {class}", and for group data
"... on a {context} background"). The embedding enters through the UNet's projection
class embedding (added to the timestep embedding, so every ResNet block is modulated by
it). Captions are dropped (zero embedding) with probability ``caption_dropout`` so the
model also learns the unconditional score for classifier-free guidance.

The whole training set lives on the device as uint8; each step draws a random batch,
flips it, noises it and takes one AdamW step; EMA weights are what gets exported.
Checkpoints let a killed run resume; ``max_minutes`` stops a run on a wall-clock budget.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from synaug.config import to_dict
from synaug.data.dataset import LabeledImages
from synaug.devices import resolve_device
from synaug.errors import SynaugError
from synaug.generators.exemplar_model import (
    ENCODER_KIND,
    PROJECTION_FOLDER,
    ExemplarConditionedUNet,
    ExemplarProjection,
    exemplar_pairs,
)
from synaug.generators.text import EMBEDDING_DIM, encode_caption_table
from synaug.outputs import check_writable_folder

GENERATOR_FILE = "synaug_generator.json"
CAPTION_CACHE = "captions.safetensors"


@dataclass
class GeneratorTrainConfig:
    """Everything that determines a trained embedded generator."""

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    norm_num_groups: int = 8
    caption_templates: list[str] = field(
        default_factory=lambda: ["a photo of a {class}", "a {class}", "a picture of a {class}"]
    )
    caption_dropout: float = 0.1
    beta_schedule: str = "linear"
    num_train_timesteps: int = 1000
    steps: int = 20000
    batch_size: int = 256
    lr: float = 5e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    flip: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"
    compile: bool = False
    checkpoint_every: int = 1000
    max_minutes: float | None = None
    init_from: str | None = None
    exemplar_grid: int | None = None
    exemplar_neighbours: int = 25
    exemplar_dropout: float = 0.2
    exemplar_hidden: int = 256
    sampler: dict = field(default_factory=lambda: {"scheduler": "ddim", "steps": 20, "guidance_scale": 1.0})

    def __post_init__(self) -> None:
        widths, groups = self.block_out_channels, self.norm_num_groups
        if not widths or any(not isinstance(w, int) or w < 1 for w in widths) or groups < 1 or any(w % groups for w in widths):
            raise SynaugError(f"block widths {widths} must be whole numbers, each a multiple of norm_num_groups={groups}; e.g. --blocks 32,64,128.")
        if self.layers_per_block < 1 or self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise SynaugError("layers_per_block, steps, batch_size and checkpoint_every must each be at least 1.")
        if not self.lr > 0 or self.warmup_steps < 0 or not 0 <= self.ema_decay < 1 or not 0 <= self.caption_dropout < 1:
            raise SynaugError("need lr > 0, warmup_steps >= 0, and ema_decay and caption_dropout in [0, 1); fix the training settings.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise SynaugError(f"max_minutes {self.max_minutes} must be positive (or left out for no time limit).")
        if self.exemplar_grid is not None and (self.exemplar_grid < 1 or self.exemplar_neighbours < 1 or self.exemplar_hidden < 1
                                               or not 0 <= self.exemplar_dropout < 1):
            raise SynaugError("exemplar_grid, exemplar_neighbours and exemplar_hidden must each be at least 1 and exemplar_dropout in [0, 1); e.g. --exemplar-grid 7.")
        missing = [t for t in self.caption_templates if "{class}" not in t]
        if not self.caption_templates or missing:
            raise SynaugError(f"caption template '{missing[0] if missing else ''}' lacks {{class}}: the model would learn no class; write e.g. \"a photo of a {{class}}\".")


def build_unet(config: GeneratorTrainConfig, channels: int, size: int) -> UNet2DConditionModel:
    """The attention-free conditional UNet the embedded generator uses."""
    levels = len(config.block_out_channels)
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        mid_block_type="UNetMidBlock2D",
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=EMBEDDING_DIM,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=EMBEDDING_DIM,
    )


def caption_fields(data: LabeledImages) -> dict[str, list[str]]:
    """Template fields and their values: classes, and contexts for group data."""
    names = {"class": list(data.class_names)}
    if data.groups is not None:
        names["context"] = list(data.group_names)
    return names


def caption_table(config: GeneratorTrainConfig, data: LabeledImages, out: Path) -> torch.Tensor:
    """Embeddings of every training caption, computed once and cached in ``out``."""
    fields = caption_fields(data)
    for template in config.caption_templates:
        try:
            template.format(**{f: "x" for f in fields})
        except KeyError as exc:
            raise SynaugError(f"caption template '{template}' uses unknown field {exc}; valid fields: {', '.join(fields)}.") from None
    key = json.dumps({"templates": config.caption_templates, "fields": fields}, sort_keys=True)
    cache = out / CAPTION_CACHE
    if cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return f.get_tensor("table")
    table = encode_caption_table(config.caption_templates, fields)
    _atomic_save({"table": table.contiguous()}, cache, metadata={"key": key})
    return table


def train_generator(data: LabeledImages, config: GeneratorTrainConfig, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) a generator on ``data``; returns the exported model folder ``out/model``."""
    # 1. Check inputs and settle the output folder.
    out = check_writable_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    if not data.in_memory:
        data = data.materialize()
    if data.size[0] != data.size[1] or data.size[0] % 4:
        raise SynaugError(f"generator training needs square images with a side divisible by 4, got {data.size}; resize the data.")
    if config.precision not in ("fp32", "bf16"):
        raise SynaugError(f"precision '{config.precision}' is not supported; use fp32 or bf16.")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    # 2. Conditioning: one cached embedding per (template, class[, context]).
    table = caption_table(config, data, out).to(device)

    # 3. Data on the device, once.
    images = data.images.to(device)
    labels = torch.as_tensor(data.labels, device=device)
    groups = torch.as_tensor(data.groups, device=device) if data.groups is not None else None
    pairs = None if config.exemplar_grid is None else exemplar_pairs(images, labels, config.exemplar_grid, config.exemplar_neighbours)

    # 4. Model, noise schedule, optimiser, EMA; resume when a checkpoint exists.
    unet = build_unet(config, data.channels, data.size[0]).to(device)
    model = unet if pairs is None else ExemplarConditionedUNet(
        unet, ExemplarProjection(pairs.embeddings.shape[1], config.exemplar_hidden)
    ).to(device)
    noise_schedule = DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule, prediction_type="epsilon"
    )
    alphas_cumprod = noise_schedule.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, foreach=True)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    step = _resume(out, config, model, optimizer, ema, generator)
    if step == 0 and config.init_from:
        _warm_start(unet, model, ema, Path(config.init_from))
    forward = torch.compile(model) if config.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    # 5. The training loop.
    started = time.time()
    log_losses = torch.zeros((), device=device)
    log_count = 0
    bar = _progress(progress, config.steps, step)
    while step < config.steps:
        x_t, t, cond, noise, idx, flip = _noised_batch(images, labels, groups, table, alphas_cumprod, config, generator)
        extra = {} if pairs is None else {"exemplar_embeds": pairs.batch(idx, flip, config.exemplar_dropout, generator)}
        with autocast:
            pred = forward(x_t, t, encoder_hidden_states=cond[:, None, :], class_labels=cond, **extra).sample
        loss = F.mse_loss(pred.float(), noise)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        ema.step(model.parameters())
        step += 1
        log_losses += loss.detach()
        log_count += 1
        out_of_time = config.max_minutes is not None and time.time() - started > 60 * config.max_minutes
        if step % 100 == 0 or step == config.steps or out_of_time:
            mean_loss = (log_losses / log_count).item()
            log_losses.zero_()
            log_count = 0
            _log(out, {"step": step, "loss": mean_loss, "seconds": round(time.time() - started, 1)})
            if bar is not None:
                bar.update(step, mean_loss)
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            _save_checkpoint(out, config, model, optimizer, ema, generator, step)
        if out_of_time:
            break
    if bar is not None:
        bar.close()

    # 6. Export the EMA weights in the embedded-generator folder format.
    return export_model(out, config, data, model, ema, noise_schedule, step, time.time() - started, device)


def _noised_batch(
    images: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None, table: torch.Tensor,
    alphas_cumprod: torch.Tensor, config: GeneratorTrainConfig, generator: torch.Generator,
) -> tuple[torch.Tensor, ...]:
    """One random training batch, flipped, captioned (dropped with ``caption_dropout``) and noised at random timesteps.

    Returns the noised images, their timesteps, the caption embeddings, the noise to predict,
    the images' positions and which were flipped (None without flips).
    """
    device = images.device
    idx = torch.randint(0, len(images), (config.batch_size,), device=device, generator=generator)
    x0 = images[idx].float().div_(127.5).sub_(1.0)
    flip = None
    if config.flip:
        flip = torch.rand(config.batch_size, device=device, generator=generator) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    template = torch.randint(0, table.shape[0], (config.batch_size,), device=device, generator=generator)
    cond = table[template, labels[idx]] if groups is None else table[template, labels[idx], groups[idx]]
    keep = torch.rand(config.batch_size, device=device, generator=generator) >= config.caption_dropout
    cond = cond * keep[:, None]
    t = torch.randint(0, config.num_train_timesteps, (config.batch_size,), device=device, generator=generator)
    noise = torch.randn(x0.shape, device=device, generator=generator)
    abar = alphas_cumprod[t][:, None, None, None]
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return x_t, t, cond, noise, idx, flip


def export_model(out, config, data, model, ema, noise_schedule, step, seconds, device) -> Path:
    """Write ``out/model``: unet/ (EMA weights), scheduler/, synaug_generator.json (and exemplar_projection/)."""
    ema.copy_to(model.parameters())
    model = model.to("cpu").float()
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    exemplar = isinstance(model, ExemplarConditionedUNet)
    (model.unet if exemplar else model).save_pretrained(tmp / "unet")
    if exemplar:
        model.projection.save_pretrained(tmp / PROJECTION_FOLDER)
    noise_schedule.save_pretrained(tmp / "scheduler")
    fields = caption_fields(data)
    meta = {
        "image_size": list(data.size),
        "channels": data.channels,
        "class_names": fields["class"],
        "context_names": fields.get("context"),
        "caption_templates": config.caption_templates,
        "sampler": config.sampler,
        **({"exemplar": {"encoder": ENCODER_KIND, "grid": config.exemplar_grid}} if exemplar else {}),
        "training": {
            "steps": step,
            "seconds": round(seconds, 1),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "images": len(data),
            "config": to_dict(config),
        },
    }
    (tmp / GENERATOR_FILE).write_text(json.dumps(meta, indent=2))
    final = out / "model"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


# ---- checkpoints -------------------------------------------------------------------
def _save_checkpoint(out: Path, config, model, optimizer, ema, generator, step: int) -> None:
    tmp = out / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "unet.safetensors"))
    ema_state = ema.state_dict()
    shadow = ema_state.pop("shadow_params")
    save_file({f"{i}": p.contiguous() for i, p in enumerate(shadow)}, str(tmp / "ema.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "ema": ema_state, "rng": generator.get_state()}, tmp / "state.pt")
    (tmp / "progress.json").write_text(json.dumps({"step": step, "config": to_dict(config)}))
    final = out / "checkpoint"
    old = out / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _resume(out: Path, config, model, optimizer, ema, generator) -> int:
    folder = out / "checkpoint"
    if not (folder / "progress.json").is_file():
        return 0
    saved = json.loads((folder / "progress.json").read_text())
    same = {k: v for k, v in saved["config"].items() if k not in ("steps", "max_minutes", "device", "checkpoint_every")}
    mine = {k: v for k, v in to_dict(config).items() if k in same}
    if same != mine:
        changed = sorted(k for k in same if same[k] != mine.get(k))
        raise SynaugError(f"{out} holds a checkpoint trained with other settings ({', '.join(changed)}); use a new --out folder.")
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(folder / "unet.safetensors"), device=str(device)))
    state = torch.load(folder / "state.pt", map_location=device, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    shadow = load_file(str(folder / "ema.safetensors"), device=str(device))
    ema.load_state_dict({**state["ema"], "shadow_params": [shadow[str(i)] for i in range(len(shadow))]})
    generator.set_state(state["rng"].cpu())
    return int(saved["step"])


def _warm_start(unet: UNet2DConditionModel, model: torch.nn.Module, ema: EMAModel, folder: Path) -> None:
    """Start ``unet`` (inside ``model``) from the weights of an exported generator (same architecture) instead
    of random ones; an exemplar pathway keeps its zero start, so ``model`` begins as exactly that generator."""
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise SynaugError(f"--init-from {folder} holds no unet/diffusion_pytorch_model.safetensors; give an exported model folder.")
    state = load_file(str(weights), device=str(next(unet.parameters()).device))
    try:
        unet.load_state_dict(state)
    except RuntimeError:
        raise SynaugError(f"--init-from {folder} has another architecture; use the same --blocks and --layers-per-block.") from None
    ema.shadow_params = [p.detach().clone() for p in model.parameters()]


def _atomic_save(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _log(out: Path, record: dict) -> None:
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


class _Bar:
    """A rich progress bar showing step, loss and ETA."""

    def __init__(self, total: int, done: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("generator training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=total, completed=done, loss="-")
        self.progress.start()

    def update(self, step: int, loss: float) -> None:
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}")

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int, done: int) -> _Bar | None:
    return _Bar(total, done) if enabled else None

