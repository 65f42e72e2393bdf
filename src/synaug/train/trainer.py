"""Train an image classifier on a :class:`~synaug.data.LabeledImages` set, airbench style.

Reading order: the configuration (:class:`TrainConfig`, :data:`RECIPES`), the device and
precision helpers, the learning-rate schedule and :func:`train_classifier`. Batches come from
:mod:`synaug.train.batches`; running a trained model (:func:`~synaug.train.inference.infer`,
:func:`~synaug.train.inference.extract_features`) is :mod:`synaug.train.inference`.

The training loop does little per step: in-memory data goes to the device once as uint8
and each batch is cropped, flipped, normalised and mixed there; file-backed data streams
through a ``DataLoader`` with workers. Loss and accuracy are accumulated on the device and
read once per epoch, separately for real and synthetic samples, so a report can say how much
each contributed. The same seed on the same data gives identical weights on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.devices import resolve_device
from synaug.errors import SynaugError
from synaug.train.augment import BatchAugment, check_mixing
from synaug.train.batches import Batch, BatchSource
from synaug.train.backbones import is_backbone_name, parameter_groups
from synaug.train.distributed import all_reduce_sum, broadcast_buffers, init_distributed, wrap_model
from synaug.train.models import Normalizer, build_model, check_model_name
from synaug.train.tensorboard import EpochLog, check_tensorboard

SCHEDULES = ("onecycle", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "off", "bf16", "fp16")
NORMALIZATIONS = ("dataset", "fixed")


# ---- configuration ----------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that decides a training run. The defaults are the Fashion-MNIST recipe.

    Parameters
    ----------
    model : one of :data:`synaug.train.models.MODELS`, or ``hf:<hub id or folder>`` for a pretrained
        ``transformers`` backbone with a fresh linear head (:mod:`synaug.train.backbones`).
    epochs, batch_size : passes over the data and images per SGD step.
    lr, momentum, weight_decay, nesterov : SGD settings; ``lr`` is the peak learning rate.
    backbone_lr : peak learning rate of every parameter but the final ``classifier`` (None: ``lr``),
        e.g. a small rate to fine-tune a pretrained backbone under a fresh head.
    resolution : side (pixels) images are resized to inside an ``hf:`` backbone (None: the data's size).
    schedule : ``"onecycle"`` (linear rise over the warm-up, then linear decay to 0),
        ``"cosine"`` (linear warm-up, then cosine decay to 0) or ``"step"`` (linear warm-up,
        then ``lr * gamma**k`` after the k-th of ``milestones``, in epochs).
    warmup_epochs : length of the warm-up; None means 20 % of the epochs for ``onecycle``
        and no warm-up for the other schedules.
    crop_padding, flip : random crop after zero padding (pixels) and left-right flips.
    mixup_alpha, cutmix_alpha, mix_prob, domain_mixup : see :class:`BatchAugment`.
    label_smoothing : passed to the cross-entropy.
    normalize : ``"dataset"`` (per-channel mean/std of the training images) or ``"fixed"`` (0.5/0.5).
    seed : seeds the weights, the batch order and the augmentation.
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    amp : autocast precision: ``"auto"`` (bf16 on a GPU that supports it, else fp16; bf16 on a
        CPU with native bf16 instructions, else off), ``"off"``, ``"bf16"`` or ``"fp16"`` (GPU only).
    channels_last : NHWC memory layout for the model and its inputs.
    num_workers : DataLoader workers for file-backed data.
    compile : run the model through ``torch.compile`` (a one-off compile time; fewer, fused
        kernels per step, which pays off for long GPU runs).
    tensorboard : folder for TensorBoard event files of the per-epoch history (needs the
        ``tensorboard`` extra; see :mod:`synaug.train.tensorboard`); None writes none. It
        never changes the weights.

    Under ``torchrun`` (see :mod:`synaug.train.distributed`) ``batch_size`` is the global batch,
    split evenly between the processes, so it must be a multiple of their number.
    """

    model: str = "small_resnet"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.2
    backbone_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "onecycle"
    warmup_epochs: float | None = None
    milestones: list[int] = field(default_factory=lambda: [160, 180])
    gamma: float = 0.01
    crop_padding: int = 2
    flip: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    domain_mixup: bool = False
    label_smoothing: float = 0.0
    normalize: str = "dataset"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    num_workers: int = 2
    compile: bool = False
    resolution: int | None = None
    tensorboard: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # YAML may give "1e-3" as text or 2 for 2.0
            value, kind = getattr(self, f.name), f.type.removesuffix(" | None")
            if value is None and f.type.endswith(" | None"):
                continue
            if kind in ("float", "int"):
                setattr(self, f.name, _number(f.name, value, float if kind == "float" else int))
            elif kind == "bool" and not isinstance(value, bool):
                raise SynaugError(f"{f.name} must be true or false, got {value!r}.")
        check_model_name(self.model)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("amp", self.amp, PRECISIONS)
        _choice("normalize", self.normalize, NORMALIZATIONS)
        if self.epochs < 1 or self.batch_size < 1:
            raise SynaugError(f"epochs and batch_size must be at least 1 (got {self.epochs} and {self.batch_size}).")
        if self.lr <= 0 or (self.backbone_lr is not None and self.backbone_lr < 0) or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise SynaugError("need lr > 0, backbone_lr >= 0, weight_decay >= 0 and momentum in [0, 1); fix the optimiser settings.")
        if self.resolution is not None and (self.resolution < 1 or not is_backbone_name(self.model)):
            raise SynaugError(f"resolution {self.resolution} needs an hf: backbone model and a positive size; drop it or set model: hf:<id>.")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise SynaugError(f"warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}.")
        if not 0 <= self.label_smoothing < 1:
            raise SynaugError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}.")
        if self.schedule == "step" and (self.gamma <= 0 or any(m < 1 for m in self.milestones)):
            raise SynaugError("the step schedule needs gamma > 0 and milestones given as epochs >= 1, e.g. [160, 180].")
        check_mixing(self.mixup_alpha, self.cutmix_alpha, self.mix_prob, self.domain_mixup)
        if self.tensorboard is not None:
            if isinstance(self.tensorboard, bool) or not isinstance(self.tensorboard, (str, os.PathLike)) or not str(self.tensorboard).strip():
                raise SynaugError(f"tensorboard must be a folder for the event files, e.g. runs/tensorboard; got {self.tensorboard!r}.")
            self.tensorboard = str(self.tensorboard)
            check_tensorboard()

    @property
    def warmup(self) -> float:
        """The warm-up length in epochs, with the default resolved."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return 0.2 * self.epochs if self.schedule == "onecycle" else 0.0


def _number(name: str, value, kind: type):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SynaugError(f"{name} must be a number, got {value!r}.")
    try:
        number = float(value)
    except ValueError:
        raise SynaugError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise SynaugError(f"{name} is {value}; give a finite number.")
    if kind is int and number != int(number):
        raise SynaugError(f"{name} must be a whole number, got {value!r}.")
    return kind(number)


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise SynaugError(f"unknown {name} '{value}'; choose one of {', '.join(options)}.")


RECIPES: dict[str, TrainConfig] = {
    # Small ResNet, SGD + one-cycle, 30 epochs, crop + flip (the Fashion-MNIST anchors).
    "fashion-mnist": TrainConfig(),
    # LDAM-DRW's CIFAR-LT recipe for the CE baseline.
    "cifar-lt": TrainConfig(
        model="resnet32", epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=2e-4, nesterov=False,
        schedule="step", warmup_epochs=5, milestones=[160, 180], gamma=0.01, crop_padding=4, flip=True,
    ),
}


def recipe(name: str, **overrides) -> TrainConfig:
    """A copy of the recipe called ``name`` with ``overrides`` applied."""
    if name not in RECIPES:
        raise SynaugError(f"unknown recipe '{name}'; choose one of {', '.join(RECIPES)}.")
    return dataclasses.replace(RECIPES[name], **overrides)


# ---- precision ---------------------------------------------------------------------------
def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision."""
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16":
        raise SynaugError("fp16 autocast needs a GPU; use amp 'bf16' or 'off' on the CPU.")
    if amp == "auto":
        return torch.bfloat16 if _cpu_has_native_bf16() else None
    return torch.bfloat16


def _cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast is faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


# ---- learning-rate schedule --------------------------------------------------------------
def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at optimiser step ``step`` (0-based)."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "onecycle":
        return (total - step) / (total - warmup)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    epoch = step / steps_per_epoch
    return config.gamma ** sum(epoch >= milestone for milestone in config.milestones)


# ---- training ----------------------------------------------------------------------------
@dataclass
class TrainResult:
    """A trained model with what is needed to use, save and report it.

    ``history`` holds one dict per epoch: lr, loss, accuracy (against each sample's own
    label), seconds, and for real and synthetic samples separately: seen, loss, accuracy.
    ``train_counts`` are the *real* training images per class (they define the many /
    medium / few groups), ``synthetic_counts`` the synthetic ones, and ``sample_counts``
    the real and synthetic totals.
    """

    model: nn.Module
    history: list[dict]
    normalizer: Normalizer
    config: TrainConfig
    class_names: list[str]
    train_counts: np.ndarray
    synthetic_counts: np.ndarray
    sample_counts: dict[str, int]
    image_shape: tuple[int, int, int]
    seconds: float


def make_normalizer(data: LabeledImages, how: str, sample_size: int = 2000) -> Normalizer:
    """Per-channel statistics of the training images (a sample when file-backed), or fixed 0.5/0.5."""
    if how == "fixed":
        return Normalizer.fixed(data.channels)
    if data.in_memory:
        return Normalizer.from_images(data.images)
    return Normalizer.from_images(data.stack(np.random.default_rng(0).permutation(len(data))[:sample_size]))


Objective = Callable[[torch.Tensor, Batch], torch.Tensor]
"""Turns a batch's per-sample losses into the loss to minimise; the default is their mean."""


def train_classifier(
    train: LabeledImages, config: TrainConfig | None = None, progress: bool = True, objective: Objective | None = None
) -> TrainResult:
    """Train ``config.model`` from scratch on ``train`` and return the model in eval mode.

    ``objective(losses, batch)`` replaces the mean of the per-sample cross-entropies (after
    Mixup/CutMix, against the mixed targets); Group-DRO (:mod:`synaug.train.group_dro`) plugs in here.
    Under ``torchrun`` every process runs this function and gets the same model back
    (DistributedDataParallel, see :mod:`synaug.train.distributed`).
    """
    config = config or TrainConfig()
    # 1. Check inputs
    if len(train) < 2:
        raise SynaugError(f"training needs at least 2 images, got {len(train)}; check the dataset and split.")
    context = init_distributed(resolve_device(config.device))  # one process, or one of torchrun's
    device = context.device
    if context.distributed and objective is not None:
        raise SynaugError("a custom objective (Group-DRO) keeps per-process state and runs in one process only; start it without torchrun.")
    dtype = autocast_dtype(config.amp, device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    # 2. Model, optimiser, normalisation, augmentation and data, all seeded
    torch.manual_seed(config.seed)
    image_shape = (train.channels, *train.size) if train.size else (train.channels, *train.load(0).shape[1:])
    model = build_model(
        config.model, train.num_classes, train.channels, image_size=image_shape[1:], resolution=config.resolution
    ).to(device, memory_format=memory_format)
    trained = wrap_model(model, context)  # DistributedDataParallel under torchrun
    trained = torch.compile(trained) if config.compile else trained
    optimizer = _sgd(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    normalizer = make_normalizer(train, config.normalize)
    augment = BatchAugment(
        train.num_classes, config.crop_padding, config.flip, config.mixup_alpha, config.cutmix_alpha,
        config.mix_prob, config.domain_mixup, config.seed + context.rank, device,
    )
    batches = BatchSource(
        train, config.batch_size, device, shuffle=True, seed=config.seed, num_workers=config.num_workers,
        rank=context.rank, world_size=context.world_size,
    )
    steps_per_epoch = len(batches)

    # 3. Epochs: augment, forward, backward, step; statistics stay on the device
    history: list[dict] = []
    started = time.perf_counter()
    trained.train()
    log = EpochLog(config.tensorboard) if config.tensorboard is not None and context.is_main else contextlib.nullcontext()
    with _progress_bar(progress and context.is_main) as bar, log:
        task = bar.add_task("training", total=config.epochs * steps_per_epoch, stats="")
        for epoch in range(config.epochs):
            epoch_start = time.perf_counter()
            totals = torch.zeros(3, 2, device=device)  # rows: seen, loss sum, correct; columns: real, synthetic
            for step, batch in enumerate(batches):
                factor = lr_factor(epoch * steps_per_epoch + step, steps_per_epoch, config)
                _scale_lr(optimizer, factor)
                images = normalizer(augment.geometric(batch.images)).contiguous(memory_format=memory_format)
                images, targets = augment.mix(images, batch.labels, batch.is_synthetic)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = trained(images)
                losses = F.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=config.label_smoothing)
                loss = losses.mean() if objective is None else objective(losses, batch)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                _count(totals, batch, logits, losses)
                bar.advance(task)
            totals = all_reduce_sum(totals, context)  # every process's images
            record = _epoch_record(epoch, config.lr * factor, totals.cpu().numpy(), time.perf_counter() - epoch_start)
            history.append(record)
            if isinstance(log, EpochLog):
                log.write(record)
            bar.update(task, stats=f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.3f}  acc {record['accuracy']:.1%}")
    broadcast_buffers(model, context)  # rank 0's BatchNorm statistics everywhere
    model.eval()
    return _train_result(model, history, normalizer, config, train, image_shape, time.perf_counter() - started)


def _sgd(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.SGD:
    """SGD over the model's parameter groups (``backbone_lr`` for all but the classifier), fused on a GPU."""
    return torch.optim.SGD(
        parameter_groups(model, config.lr, config.backbone_lr), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.nesterov and config.momentum > 0, fused=device.type == "cuda",
    )


def _scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every parameter group's learning rate to ``factor`` times its peak rate."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def _count(totals: torch.Tensor, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
    """Add the batch's images, loss sum and correct predictions to ``totals``' real and synthetic columns."""
    with torch.no_grad():
        domain = batch.is_synthetic.long()
        correct = (logits.argmax(1) == batch.labels).float()
        totals.index_add_(1, domain, torch.stack([torch.ones_like(correct), losses.detach(), correct]))


def _train_result(
    model: nn.Module, history: list[dict], normalizer: Normalizer, config: TrainConfig, train: LabeledImages,
    image_shape: tuple[int, int, int], seconds: float,
) -> TrainResult:
    """The trained model with its history and the real and synthetic image counts of ``train``."""
    return TrainResult(
        model=model,
        history=history,
        normalizer=normalizer,
        config=config,
        class_names=list(train.class_names),
        train_counts=np.bincount(train.labels[~train.is_synthetic], minlength=train.num_classes),
        synthetic_counts=np.bincount(train.labels[train.is_synthetic], minlength=train.num_classes),
        sample_counts={"real": int((~train.is_synthetic).sum()), "synthetic": int(train.is_synthetic.sum())},
        image_shape=image_shape,
        seconds=seconds,
    )


def _epoch_record(epoch: int, lr: float, totals: np.ndarray, seconds: float) -> dict:
    """One history row from the (seen, loss sum, correct) x (real, synthetic) totals."""
    seen, loss_sum, correct = totals
    record = {
        "epoch": epoch + 1,
        "lr": lr,
        "loss": float(loss_sum.sum() / max(seen.sum(), 1)),
        "accuracy": float(correct.sum() / max(seen.sum(), 1)),
        "seconds": seconds,
    }
    for column, name in enumerate(("real", "synthetic")):
        record[f"{name}_seen"] = int(seen[column])
        record[f"{name}_loss"] = float(loss_sum[column] / seen[column]) if seen[column] else None
        record[f"{name}_accuracy"] = float(correct[column] / seen[column]) if seen[column] else None
    return record


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
