"""``synaug generator ...``: train and check the embedded generator."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synaug.config import from_dict, load_yaml
from synaug.errors import SynaugError
from synaug.generate.exemplars import check_exemplar_source, check_strength

app = typer.Typer(no_args_is_help=True, help="Train and check embedded text-to-image generators.")

RESERVED_SETS = ("fashion-mnist-reserved", "colored-fashion-mnist-reserved")


def training_data(dataset: str, root: Optional[str], size: Optional[int], channels: Optional[int]):
    """The generator's training set: a named reserved half, or any dataset the data layer loads."""
    from synaug.data.benchmarks import fashion_mnist_reserved

    if size is not None and size < 1:
        raise SynaugError(f"--size {size} must be at least 1 (pixels per side).")
    if dataset in RESERVED_SETS and (size is not None or channels is not None):
        raise SynaugError(f"{dataset} is 28 x 28 Fashion-MNIST as it is; --size and --channels apply to file-backed datasets, so drop them.")
    if dataset == "fashion-mnist-reserved":
        return fashion_mnist_reserved(root)
    if dataset == "colored-fashion-mnist-reserved":
        from synaug.data.spurious import uniform_contexts, with_contexts

        gray = fashion_mnist_reserved(root)
        return with_contexts(gray, uniform_contexts(len(gray)))
    from synaug.data.registry import DATASET_KINDS, load_dataset

    if dataset not in DATASET_KINDS:
        raise SynaugError(f"unknown dataset '{dataset}'; use one of {', '.join(RESERVED_SETS + DATASET_KINDS)}.")
    return load_dataset(dataset, root=root, size=size, channels=channels)


def _widths(blocks: str) -> list[int]:
    """``--blocks 32,64,128`` as a list of widths."""
    try:
        return [int(width) for width in blocks.split(",")]
    except ValueError:
        raise SynaugError(f"--blocks {blocks} must be whole numbers separated by commas, e.g. 32,64,128.") from None


@app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Folder for checkpoints, logs and the exported model (out/model)."),
    dataset: str = typer.Option("fashion-mnist-reserved", help=f"{' | '.join(RESERVED_SETS)} | any `synaug data` kind."),
    root: Optional[str] = typer.Option(None, help="Data folder (Fashion-MNIST defaults to its installed location)."),
    size: Optional[int] = typer.Option(None, help="Resize file-backed images to SIZE x SIZE."),
    channels: Optional[int] = typer.Option(None, help="Convert file-backed images to 1 or 3 channels."),
    template: list[str] = typer.Option([], "--template", help="Caption template (repeatable); fields {class}, {context}."),
    blocks: Optional[str] = typer.Option(None, help="UNet block widths, e.g. 32,64,128."),
    layers_per_block: Optional[int] = typer.Option(None, help="ResNet blocks per UNet level."),
    steps: Optional[int] = typer.Option(None, help="Training steps."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step."),
    lr: Optional[float] = typer.Option(None, help="AdamW learning rate."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop (and export) after this many minutes."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Save a resumable checkpoint every N steps (default: 1000); re-running the same command resumes from the last one."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda."),
    precision: Optional[str] = typer.Option(None, help="bf16 (autocast) | fp32."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the UNet."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    init_from: Optional[str] = typer.Option(None, help="Start from an exported model folder's weights."),
    warmup_steps: Optional[int] = typer.Option(None, help="Steps of linear learning-rate warm-up (default: 500)."),
    ema_decay: Optional[float] = typer.Option(None, help="Decay of the exported EMA weights (default: 0.9995; ~0.99 for a few hundred steps)."),
    exemplar_grid: Optional[int] = typer.Option(None, help="Train an exemplar-conditioned generator: a real image of the class, pooled to GRID x GRID, is a second condition (e.g. 7)."),
    exemplar_neighbours: Optional[int] = typer.Option(None, help="Each target's exemplar is one of its N nearest other images of its class (default: 25)."),
    exemplar_dropout: Optional[float] = typer.Option(None, help="Fraction of steps without an exemplar, so the model also works from text alone (default: 0.2)."),
    config: Optional[Path] = typer.Option(None, help="YAML file with GeneratorTrainConfig keys (options override it)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train a text-conditioned pixel-space diffusion model on a labelled dataset."""
    from synaug.generators.training import GeneratorTrainConfig, train_generator

    values = load_yaml(config) if config else {}
    overrides = {
        "caption_templates": list(template) or None,
        "block_out_channels": _widths(blocks) if blocks else None,
        "layers_per_block": layers_per_block,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "max_minutes": max_minutes,
        "checkpoint_every": checkpoint_every,
        "device": device,
        "precision": precision,
        "compile": compile,
        "seed": seed,
        "init_from": init_from,
        "warmup_steps": warmup_steps,
        "ema_decay": ema_decay,
        "exemplar_grid": exemplar_grid,
        "exemplar_neighbours": exemplar_neighbours,
        "exemplar_dropout": exemplar_dropout,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    data = training_data(dataset, root, size, channels)
    if data.groups is not None and "caption_templates" not in values:
        values["caption_templates"] = ["a photo of a {class} on a {context} background", "a {class} on a {context} background", "a photo of a {class}"]
    cfg = from_dict(GeneratorTrainConfig, values, "generator")
    model = train_generator(data, cfg, out, progress=not quiet)
    typer.echo(f"model written to {model}")


@app.command("check")
def check(
    out: Path = typer.Option(..., "--out", help="Folder for check.json, check.md, samples.png and the cached oracle."),
    generator: str = typer.Option("embedded", help="embedded | embedded:NAME (a shipped generator) | a generator folder | an SD checkpoint folder or hub id."),
    world: str = typer.Option("fashion-mnist", help="fashion-mnist | colored-fashion-mnist."),
    root: Optional[str] = typer.Option(None, help="Fashion-MNIST folder (defaults to its installed location)."),
    per_cell: int = typer.Option(100, help="Generated images per class (per class x context cell)."),
    scheduler: Optional[str] = typer.Option(None, help="Sampler (defaults to the generator's recommendation)."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale."),
    guidance_steps: Optional[int] = typer.Option(None, help="Classifier-free guidance on the first N sampling steps only (default: the generator's)."),
    dtype: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16 (GPU); auto: bf16 where the device runs it natively, else fp32."),
    device: str = typer.Option("cpu", help="auto (CUDA when available) | cpu | cuda | cuda:N."),
    seed: int = typer.Option(0, help="Seed of the generated images and the oracle."),
    exemplars: Optional[str] = typer.Option(None, help="real: make each image from a real image of its class the generator never saw (the oracle's training images), and add the closeness and no-copying figures (default: real for an exemplar-conditioned generator)."),
    strength: Optional[float] = typer.Option(None, help="Fraction of the sampling steps re-run from the noised exemplar, in (0, 1] (default: the generator's)."),
) -> None:
    """Quality gate: recognisability, diversity and memorisation of a generator's images (exit status 1 when it fails)."""
    from synaug.generate.loading import load_generator
    from synaug.generators.check import check_generator, check_markdown, fashion_mnist_world, train_oracles, write_check

    if per_cell < 1:
        raise SynaugError(f"--per-cell {per_cell} must be at least 1 generated image per class (per cell).")
    worlds = {"fashion-mnist": False, "colored-fashion-mnist": True}
    if world not in worlds:
        raise SynaugError(f"unknown world '{world}'; use one of {', '.join(worlds)}.")
    check_exemplar_source(exemplars, "--exemplars")
    if strength is not None:
        check_strength(strength, "--strength")
    sampler = {"scheduler": scheduler, "steps": steps, "guidance_scale": guidance, "guidance_steps": guidance_steps, "dtype": dtype, "device": device,
               "strength": strength}
    backend = load_generator(generator, **{k: v for k, v in sampler.items() if v is not None})
    if exemplars is None and getattr(backend, "exemplar_condition", None) is not None:
        exemplars = "real"
    if strength is not None and not exemplars:
        raise SynaugError("--strength shapes how exemplars enter the images, and none are given; add --exemplars real, or drop it.")
    spec = getattr(backend, "spec", None)  # an embedded generator knows whether it draws contexts
    if spec is not None and (spec.context_names is not None) != worlds[world]:
        fitting = "colored-fashion-mnist" if spec.context_names is not None else "fashion-mnist"
        raise SynaugError(f"generator {generator} draws {'class x context' if spec.context_names else 'class-only'} images; check it with --world {fitting}.")
    data = fashion_mnist_world(colored=worlds[world], root=root)
    oracle, context_oracle = train_oracles(data, out, seed=seed)
    report, generated = check_generator(
        backend, oracle, data.real_test, reference=data.reference, per_cell=per_cell,
        context_oracle=context_oracle, seed=seed, exemplars=data.oracle_train if exemplars else None,
    )
    write_check(report, generated, data.real_test, out)
    typer.echo(check_markdown(report))
    if not report.passed:
        raise typer.Exit(1)  # a failed gate fails the command, so scripts and CI can use it
