"""`synaug plan` and `synaug generate`: plan the synthetic images, then make them into a store.

Both read their options from a YAML file given with ``--config`` too (keys are the option
names, with ``-`` or ``_``; ``template`` and ``class_prompt_names`` take lists, the latter
also a mapping); options on the command line win over the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from synaug.cli.data import DatasetOptions
from synaug.cli.options import build_options, given_options
from synaug.config import load_yaml
from synaug.data.benchmarks import draw_longtail
from synaug.data.dataset import LabeledImages
from synaug.data.registry import DATASET_KINDS, load_dataset, load_index
from synaug.errors import SynaugError
from synaug.generate.exemplars import DEFAULT_STRENGTH, ExemplarSpec, check_exemplar_source
from synaug.generate.loading import check_vocabulary, load_generator
from synaug.generate.retry import RetryPolicy
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.guidance.feedback import DEFAULT_EVERY, DEFAULT_PATH, DEFAULT_SCALE
from synaug.plan.planner import STRATEGIES, SynthesisPlan, overgenerate, plan_for_dataset
from synaug.plan.prompts import TEMPLATE_SETS, PromptSources, parse_name_overrides

if TYPE_CHECKING:
    from synaug.generate.bench import BenchResult

DEFAULT_PLAN_FILE = "plan.json"
ESTIMATE_OPTIONS = ("plan", "rate", "estimate", "bench", "sample_store", "workers")  # all that `plan --plan FILE` takes


@dataclass
class PlanOptions(DatasetOptions, PromptSources):
    """Options of `synaug plan` (the prompt sources of :class:`~synaug.plan.prompts.PromptSources` among them)."""

    index: Optional[str] = None
    longtail: Optional[float] = None
    max_per_class: Optional[int] = None
    reserve: Optional[float] = None
    strategy: Union[str, dict] = "fill-to-max"
    target: Optional[int] = None
    budget: Optional[int] = None
    overgenerate: Optional[float] = None
    template: list = field(default_factory=list)
    negative_prompt: Optional[str] = None
    class_prompt_names: Union[list, dict] = field(default_factory=list)
    seed: int = 0
    rate: Optional[float] = None
    estimate: bool = False
    bench: Optional[str] = None
    sample_store: Optional[str] = None
    workers: int = 1
    plan: Optional[str] = None
    out: Optional[str] = None


@dataclass
class GenerateOptions:
    """Options of `synaug generate`."""

    plan: Optional[str] = None
    out: Optional[str] = None
    generator: str = "embedded"
    scheduler: Optional[str] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    guidance_steps: Optional[int] = None
    dtype: Optional[str] = None
    device: Optional[str] = None
    batch_size: Optional[int] = None
    seed: Optional[int] = None
    overwrite: bool = False
    allow_unknown_classes: bool = False
    shard_index: int = 0
    num_shards: int = 1
    ray: bool = False
    ray_address: Optional[str] = None
    workers: Optional[int] = None
    cpus_per_worker: float = 1.0
    shard_attempts: int = RetryPolicy.attempts
    shard_attempts_per_worker: int = RetryPolicy.attempts_per_worker
    progress: bool = True
    feedback: Optional[str] = None
    feedback_classifier: Optional[str] = None
    feedback_scale: float = DEFAULT_SCALE
    feedback_every: int = DEFAULT_EVERY
    feedback_window: Optional[str] = None
    feedback_path: str = DEFAULT_PATH
    feedback_data: Union[str, dict, None] = None
    reference: Optional[str] = None
    real_data: Union[str, dict, None] = None
    strength: Optional[float] = None
    ip_adapter: Optional[str] = None
    ip_adapter_scale: float = 1.0
    noise_level: int = 0


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (keys = option names).")]


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.command("plan")(plan)
    app.command("generate")(generate)
    app.command("bench")(bench)


def plan(
    config: ConfigOpt = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help=f"One of {', '.join(DATASET_KINDS)} (default: fashion-mnist).")] = None,
    root: Annotated[Optional[str], typer.Option("--root", help="Data folder (Fashion-MNIST: else $SYNAUG_FASHION_MNIST or its default).")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="train or test (default: train).")] = None,
    list_file: Annotated[Optional[str], typer.Option("--list-file", help="split-list file, one `relative/path.jpg label` per line.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Resize file-backed images (and the synthetic ones) to SIZE x SIZE.")] = None,
    channels: Annotated[Optional[int], typer.Option("--channels", help="1 or 3 channels for file-backed images (default: 3).")] = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Plan for the subset in this index file (`synaug data longtail`).")] = None,
    longtail: Annotated[Optional[float], typer.Option("--longtail", help="Plan for a long-tailed subset with this imbalance factor (LDAM draw, seed 0).")] = None,
    max_per_class: Annotated[Optional[int], typer.Option("--max-per-class", help="With --longtail: size of the largest class (default: the smallest class available).")] = None,
    reserve: Annotated[Optional[float], typer.Option("--reserve", help="With --longtail: fraction never drawn (default: 0.5 for fashion-mnist train, else 0).")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help=f"{' | '.join(STRATEGIES)} (default: fill-to-max).")] = None,
    target: Annotated[Optional[int], typer.Option("--target", help="fill-to: the count every class is filled to.")] = None,
    budget: Annotated[Optional[int], typer.Option("--budget", help="budget: total synthetic images, split by each class's shortfall.")] = None,
    overgenerate: Annotated[Optional[float], typer.Option("--overgenerate", help="Make FACTOR x the images needed; `synaug filter` keeps the best.")] = None,
    template: Annotated[Optional[list[str]], typer.Option("--template", help="Prompt template with {class} (and {context} for groups); repeat to rotate several.")] = None,
    template_set: Annotated[Optional[str], typer.Option("--template-set", help=f"Built-in templates instead of --template: {' | '.join(TEMPLATE_SETS)} (see the README).")] = None,
    descriptions: Annotated[Optional[str], typer.Option("--descriptions", help="Text file of prompts, one 'CLASS: prompt' (or 'CLASS | GROUP: prompt') per line, e.g. written by an LLM.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option("--negative-prompt", help="Negative prompt for classifier-free guidance.")] = None,
    class_prompt_names: Annotated[Optional[list[str]], typer.Option("--class-prompt-names", help="CLASS=NAME: write CLASS as NAME in prompts (repeatable).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Run seed every image's seed derives from (default: 0).")] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="Measured images per second, to estimate the generation time.")] = None,
    estimate: Annotated[Optional[bool], typer.Option("--estimate", help="Print images, device-hours and disk for the plan (rate from --rate, --bench or the last `synaug bench`).")] = None,
    bench: Annotated[Optional[str], typer.Option("--bench", help="With --estimate: the JSON file `synaug bench` wrote (default: ~/.cache/synaug/bench.json).")] = None,
    sample_store: Annotated[Optional[str], typer.Option("--sample-store", help="With --estimate: measure bytes per image on the PNGs of this store.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="With --estimate: also give the wall time on this many devices (default: 1).")] = None,
    plan_file: Annotated[Optional[str], typer.Option("--plan", help="Show (with --estimate, estimate) this plan file instead of making a new plan.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help=f"Plan file to write (default: {DEFAULT_PLAN_FILE}; with --estimate or --plan, none).")] = None,
) -> None:
    """Plan how many synthetic images each class (or class x group cell) gets, and their prompts."""
    given = given_options(
        config, dataset=dataset, root=root, split=split, list_file=list_file, size=size, channels=channels, index=index,
        longtail=longtail, max_per_class=max_per_class, reserve=reserve, strategy=strategy, target=target, budget=budget, overgenerate=overgenerate,
        template=template or None, template_set=template_set, descriptions=descriptions, negative_prompt=negative_prompt,
        class_prompt_names=class_prompt_names or None, seed=seed, rate=rate, estimate=estimate, bench=bench, sample_store=sample_store, workers=workers, plan=plan_file, out=out,
    )
    options = build_options(PlanOptions, given, config)
    if options.rate is not None and options.rate <= 0:
        raise SynaugError(f"rate {options.rate} must be positive; give the images per second you measured.")
    measured = _measured_rate(options) if options.estimate else None
    if options.plan is not None:
        shaping = [key for key in given if key not in ESTIMATE_OPTIONS]
        if shaping:
            raise SynaugError(f"--plan shows an existing plan, which --{shaping[0].replace('_', '-')} cannot change; drop it, or drop --plan to make a new plan.")
        synthesis = SynthesisPlan.load(options.plan)
    else:
        synthesis = _make_plan(options, given)
    _print_plan(synthesis)
    console = Console(highlight=False)
    if options.plan is None and (options.out is not None or not options.estimate):
        path = options.out if options.out is not None else DEFAULT_PLAN_FILE
        synthesis.save(path)
        console.print(f"wrote the plan ({synthesis.total} synthetic images, digest {synthesis.digest()}) to {path}", markup=False, soft_wrap=True)
    elif options.plan is None:
        console.print("the plan was not written (--estimate only prints it); add --out FILE to keep it, or estimate a saved plan with --plan FILE", markup=False, soft_wrap=True)
    if options.estimate:
        _print_estimate(synthesis, options, measured, console)
    elif options.rate is not None:
        console.print(f"estimated generation time: {format_duration(synthesis.total / options.rate)} at {options.rate:g} images/s", markup=False, soft_wrap=True)


def bench(
    plan: Annotated[Optional[str], typer.Option("--plan", help="Measure at this plan's prompts, size and channels (default: a neutral prompt at the generator's size).")] = None,
    generator: Annotated[str, typer.Option("--generator", help="embedded | embedded:NAME (a shipped generator) | a model folder or hub id | python:MODULE:FUNCTION.")] = "embedded",
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Sampler, e.g. ddim or dpm++ (default: the generator's).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Sampling steps (default: the generator's).")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance scale (default: the generator's).")] = None,
    guidance_steps: Annotated[Optional[int], typer.Option("--guidance-steps", help="Classifier-free guidance on the first N sampling steps only (default: the generator's; every step unless it recommends fewer).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="auto | fp32 | fp16 | bf16; auto: bf16 where the device runs it natively, else fp32 (default: auto for embedded generators, else the generator's).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ... (default: auto).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per batch (default: the generator's).")] = None,
    batches: Annotated[int, typer.Option("--batches", help="Batches timed, after one warm-up batch.")] = 2,
    out: Annotated[Optional[str], typer.Option("--out", help="JSON file for the measurement (default: ~/.cache/synaug/bench.json).")] = None,
) -> None:
    """Measure a generator's images/s and PNG bytes per image on this machine, for `synaug plan --estimate`."""
    from synaug.generate.bench import default_bench_path, format_bytes, measure_rate

    synthesis = SynthesisPlan.load(plan) if plan is not None else None
    backend = load_generator(
        generator, scheduler=scheduler, steps=steps, guidance_scale=guidance, guidance_steps=guidance_steps, dtype=dtype, device=device,
        batch_size=batch_size,
    )
    result = measure_rate(backend, synthesis, batches=batches, spec=generator)
    path = result.save(out if out is not None else default_bench_path())
    Console(highlight=False).print(
        f"{result.generator} on {result.device}: {result.images_per_second:.2f} images/s at batch {result.batch_size} "
        f"({result.images} images in {result.seconds:.1f} s), {format_bytes(result.png_bytes_per_image)} per PNG; wrote {path}",
        markup=False,
        soft_wrap=True,
    )


def generate(
    config: ConfigOpt = None,
    plan: Annotated[Optional[str], typer.Option("--plan", help="Plan file written by `synaug plan`.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Store folder: class folders of PNGs plus a Parquet manifest.")] = None,
    generator: Annotated[Optional[str], typer.Option("--generator", help="embedded | embedded:NAME (a shipped generator) | a model folder or hub id | python:MODULE:FUNCTION (default: embedded).")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Sampler, e.g. ddim or dpm++ (default: the generator's).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Sampling steps (default: the generator's).")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance scale (default: the generator's).")] = None,
    guidance_steps: Annotated[Optional[int], typer.Option("--guidance-steps", help="Classifier-free guidance on the first N sampling steps only (default: the generator's; every step unless it recommends fewer).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="auto | fp32 | fp16 | bf16; auto: bf16 where the device runs it natively, else fp32 (default: auto for embedded generators, else the generator's).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ... (default: auto).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per batch (default: the generator's).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Replace the plan's run seed.")] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="Replace an existing store made by another plan or generator.")] = None,
    allow_unknown_classes: Annotated[Optional[bool], typer.Option("--allow-unknown-classes", help="Let an embedded generator draw classes it was not trained on (otherwise an error).")] = None,
    shard_index: Annotated[Optional[int], typer.Option("--shard-index", help="Make only shard SHARD_INDEX of --num-shards (default: 0).")] = None,
    num_shards: Annotated[Optional[int], typer.Option("--num-shards", help="Split the plan into this many disjoint shards (default: 1).")] = None,
    ray: Annotated[Optional[bool], typer.Option("--ray", help="Generate on a Ray cluster: $RAY_ADDRESS when set, else a local one started here.")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Generate on the Ray cluster at this address (HEAD:6379, auto); implies --ray.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="With --ray: number of workers (default: one per GPU, else per --cpus-per-worker CPUs).")] = None,
    cpus_per_worker: Annotated[Optional[float], typer.Option("--cpus-per-worker", help="With --ray: CPUs each worker reserves, may be fractional (default: 1).")] = None,
    shard_attempts: Annotated[Optional[int], typer.Option("--shard-attempts", help=f"With --ray: tries of a shard in all (default: {RetryPolicy.attempts}).")] = None,
    shard_attempts_per_worker: Annotated[Optional[int], typer.Option("--shard-attempts-per-worker", help=f"With --ray: tries of a shard on one worker; a failed shard moves to the worker that tried it least (default: {RetryPolicy.attempts_per_worker}).")] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Show a progress bar (default: on).")] = None,
    feedback: Annotated[Optional[str], typer.Option("--feedback", help="Feedback guidance criterion: entropy | loss | hardness | a registered one.")] = None,
    feedback_classifier: Annotated[Optional[str], typer.Option("--feedback-classifier", help="Checkpoint folder of the feedback classifier (`synaug train --out`/checkpoint).")] = None,
    feedback_scale: Annotated[Optional[float], typer.Option("--feedback-scale", help=f"Guidance step as a fraction of the latents' norm (default: {DEFAULT_SCALE}).")] = None,
    feedback_every: Annotated[Optional[int], typer.Option("--feedback-every", help=f"Guide every k-th sampling step (default: {DEFAULT_EVERY}).")] = None,
    feedback_window: Annotated[Optional[str], typer.Option("--feedback-window", help="START:STOP fractions of the steps that are guided (default: 0:1).")] = None,
    feedback_path: Annotated[Optional[str], typer.Option("--feedback-path", help=f"x0 (UNet output held constant, fast) or full (through the UNet) (default: {DEFAULT_PATH}).")] = None,
    feedback_data: Annotated[Optional[str], typer.Option("--feedback-data", help="Real data for the hardness Gaussians: index file (.json) or `synaug plan` options YAML (default: --real-data).")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="real: make each image from an exemplar, a real image of its class (or cell) from --real-data, picked by a seeded rule and recorded in the manifest.")] = None,
    real_data: Annotated[Optional[str], typer.Option("--real-data", help="The plan's real data: index file (.json) of `synaug data longtail` or the options YAML given to `synaug plan`.")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", help=f"With --reference: fraction of the steps re-run from the noised exemplar, in (0, 1] (default: {DEFAULT_STRENGTH}; 1 with --ip-adapter, an unCLIP checkpoint or an exemplar-conditioned embedded generator).")] = None,
    ip_adapter: Annotated[Optional[str], typer.Option("--ip-adapter", help="With --reference and a Stable Diffusion checkpoint: condition on the exemplar's embedding with this IP-Adapter (weight file, folder, or ORG/REPO/PATH/FILE).")] = None,
    ip_adapter_scale: Annotated[Optional[float], typer.Option("--ip-adapter-scale", help="Weight of the IP-Adapter's attention (default: 1).")] = None,
    noise_level: Annotated[Optional[int], typer.Option("--noise-level", help="Stable unCLIP: noise added to the exemplar's embedding (default: 0).")] = None,
) -> None:
    """Generate a plan's images into a store; re-running resumes and skips finished images."""
    given = given_options(
        config, plan=plan, out=out, generator=generator, scheduler=scheduler, steps=steps, guidance=guidance, guidance_steps=guidance_steps, dtype=dtype,
        device=device, batch_size=batch_size, seed=seed, overwrite=overwrite, allow_unknown_classes=allow_unknown_classes, shard_index=shard_index, num_shards=num_shards,
        ray=ray, ray_address=ray_address, workers=workers, cpus_per_worker=cpus_per_worker, shard_attempts=shard_attempts,
        shard_attempts_per_worker=shard_attempts_per_worker, progress=progress,
        feedback=feedback, feedback_classifier=feedback_classifier, feedback_scale=feedback_scale, feedback_every=feedback_every,
        feedback_window=feedback_window, feedback_path=feedback_path, feedback_data=feedback_data, reference=reference, real_data=real_data,
        strength=strength, ip_adapter=ip_adapter, ip_adapter_scale=ip_adapter_scale, noise_level=noise_level,
    )
    options = build_options(GenerateOptions, given, config)
    if options.plan is None or options.out is None:
        raise SynaugError(f"generate needs --{'plan' if options.plan is None else 'out'}; e.g. `synaug generate --plan plan.json --out synthetic/`.")
    synthesis = SynthesisPlan.load(options.plan)
    if options.seed is not None:
        synthesis = dataclasses.replace(synthesis, seed=options.seed)
    check_exemplar_source(options.reference, "--reference")
    exemplars = ExemplarSpec(options.reference, options.strength, options.ip_adapter, options.ip_adapter_scale, options.noise_level)
    sampler = {
        "scheduler": options.scheduler, "steps": options.steps, "guidance_scale": options.guidance,
        "guidance_steps": options.guidance_steps, "dtype": options.dtype,
        "device": options.device, "batch_size": options.batch_size, **exemplars.generator_settings(),
    }
    check_vocabulary(synthesis, options.generator, allow_unknown_classes=options.allow_unknown_classes)
    hooks, references = _feedback_and_references(synthesis, options, given)
    if options.ray or options.ray_address is not None:
        _generate_on_ray(synthesis, options, sampler, hooks, references)
        return
    ray_only = [key for key in ("workers", "shard_attempts", "shard_attempts_per_worker") if key in given]
    if ray_only:
        raise SynaugError(f"--{ray_only[0].replace('_', '-')} is a setting of Ray workers; add --ray (or --ray-address), or drop it.")
    _generate_here(synthesis, options, sampler, hooks, references)


def _generate_here(synthesis: SynthesisPlan, options: GenerateOptions, sampler: dict[str, Any], hooks: list, references) -> None:
    """`synaug generate` in this process (one shard of the plan, or all of it), one summary line."""
    backend = load_generator(options.generator, **sampler)
    store = SyntheticStore(options.out)
    if options.overwrite:
        store.clear()
    summary = generate_plan(
        synthesis, backend, store, progress=options.progress,
        shard_index=options.shard_index, num_shards=options.num_shards, hooks=hooks, reference_images=references,
    )
    shard = f" (shard {options.shard_index} of {options.num_shards})" if options.num_shards > 1 else ""
    console = Console(highlight=False)
    console.print(
        f"{summary.generated} new images{shard} in {summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s); "
        f"{summary.already_done} were done already, {summary.retried} retried, {summary.failed} failed; store: {options.out}",
        markup=False,
        soft_wrap=True,
    )
    if summary.failed:
        console.print(f"{summary.failed} images stayed non-finite or blank after their retry; they are recorded with status 'failed' in the manifest.", markup=False, soft_wrap=True)


def _generate_on_ray(synthesis: SynthesisPlan, options: GenerateOptions, sampler: dict[str, Any], hooks: list, references) -> None:
    """`synaug generate --ray`: the plan's shards spread over Ray workers, one summary line."""
    from synaug.generate.distributed import generate_plan_on_ray

    if options.num_shards != 1 or options.shard_index != 0:
        raise SynaugError("--ray splits the plan over the cluster's workers itself; drop --shard-index and --num-shards.")
    summary = generate_plan_on_ray(
        synthesis, options.generator, options.out, address=options.ray_address, num_workers=options.workers,
        cpus_per_worker=options.cpus_per_worker, sampler=sampler, progress=options.progress, overwrite=options.overwrite,
        retry=RetryPolicy(options.shard_attempts, options.shard_attempts_per_worker), hooks=hooks, reference_images=references,
    )
    lost = f", {summary.workers_lost} lost and restarted" if summary.workers_lost else ""
    Console(highlight=False).print(
        f"{summary.generated} new images on {summary.num_workers} Ray worker{'s' if summary.num_workers != 1 else ''}{lost} in {summary.seconds:.1f} s "
        f"({summary.startup_seconds:.1f} s starting them, then {summary.images_per_second:.2f} images/s); "
        f"{summary.already_done} were done already, {summary.retried} retried, "
        f"{summary.failed} failed; store: {options.out}",
        markup=False,
        soft_wrap=True,
    )
    for line in summary.retry_report():
        Console(highlight=False).print(f"retried {line}", markup=False, soft_wrap=True)
    for error in summary.errors:
        Console(highlight=False, stderr=True).print(f"recovered from: {error}", markup=False, soft_wrap=True)


def _feedback_and_references(synthesis: SynthesisPlan, options: GenerateOptions, given: dict[str, Any]) -> tuple[list, LabeledImages | None]:
    """The feedback-guidance hook and the real reference images that the options ask for."""
    references = None
    if options.reference is not None:
        references = _real_data(options.real_data, "--reference real")
    if options.feedback is None:
        stray = sorted(k for k in given if k.startswith("feedback_"))
        if stray:
            raise SynaugError(f"--{stray[0].replace('_', '-')} sets up feedback guidance; add --feedback CRITERION or drop it.")
        return [], references
    from synaug.guidance import feedback_hook
    from synaug.guidance.criteria import NEEDS_CLASS_GAUSSIANS

    if options.feedback_classifier is None:
        raise SynaugError("--feedback needs --feedback-classifier CHECKPOINT, the folder `synaug train` wrote (OUT/checkpoint).")
    start, stop = _window(options.feedback_window)
    data_spec = options.feedback_data if options.feedback_data is not None else options.real_data
    train_data = _real_data(data_spec, "--feedback hardness") if options.feedback in NEEDS_CLASS_GAUSSIANS and data_spec is not None else None
    hook = feedback_hook(
        options.feedback, options.feedback_classifier, train_data, scale=options.feedback_scale, every=options.feedback_every,
        start=start, stop=stop, gradient_path=options.feedback_path, class_names=synthesis.class_names,
    )
    return [hook], references


def _window(text: str | None) -> tuple[float, float]:
    """``START:STOP`` fractions of the sampling steps (None: all of them)."""
    if text is None:
        return 0.0, 1.0
    start, sep, stop = str(text).partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return float(start or 0.0), float(stop or 1.0)
    except ValueError:
        raise SynaugError(f"--feedback-window {text!r} is not START:STOP; write fractions of the steps, e.g. 0:0.5.") from None


def _real_data(spec: str | dict | None, purpose: str) -> LabeledImages:
    """The plan's real data: an index file (.json), a `synaug plan` options YAML, or those options as a mapping."""
    if spec is None:
        raise SynaugError(
            f"{purpose} needs the plan's real data; pass --real-data with the index file of `synaug data longtail` "
            "or the options YAML given to `synaug plan`."
        )
    if isinstance(spec, str) and Path(spec).suffix == ".json":
        return load_index(spec).load()
    where = Path(spec) if isinstance(spec, str) else None
    values = load_yaml(spec) if isinstance(spec, str) else dict(spec)
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    return _plan_dataset(build_options(PlanOptions, values, where), values)


def format_duration(seconds: float) -> str:
    """``seconds`` as "2 h 05 min", "3 min 20 s" or "12 s"."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _make_plan(options: PlanOptions, given: dict[str, Any]) -> SynthesisPlan:
    """The plan the options describe, for the dataset they name."""
    names = options.class_prompt_names
    synthesis = plan_for_dataset(
        _plan_dataset(options, given),
        options.strategy,
        target=options.target,
        budget=options.budget,
        templates=[str(t) for t in options.template],
        template_set=options.template_set,
        descriptions=options.descriptions,
        class_prompt_names={str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else parse_name_overrides([str(n) for n in names]),
        negative_prompt=options.negative_prompt,
        seed=options.seed,
    )
    return synthesis if options.overgenerate is None else overgenerate(synthesis, options.overgenerate)


def _plan_dataset(options: PlanOptions, given: dict[str, Any]) -> LabeledImages:
    """The dataset to plan for: an indexed subset, a long-tailed draw, or the whole dataset."""
    if options.index is not None and options.longtail is not None:
        raise SynaugError("give either --index or --longtail, not both; --index already names a subset.")
    if options.index is not None:
        overrides = {k: given[k] for k in ("root", "split", "list_file", "size", "channels") if k in given}
        if "dataset" in given:
            overrides["kind"] = given["dataset"]
        return load_index(options.index).load(**overrides)
    data = load_dataset(**options.source())
    if options.longtail is None:
        if options.max_per_class is not None or options.reserve is not None:
            raise SynaugError("--max-per-class and --reserve shape a long-tailed draw; add --longtail IF.")
        return data
    indices, _ = draw_longtail(
        data, options.longtail, kind=options.dataset, split=options.split, max_per_class=options.max_per_class, reserve=options.reserve
    )
    return data.subset(indices)


def _measured_rate(options: PlanOptions) -> BenchResult | None:
    """The `synaug bench` measurement --estimate uses (None with --rate); checked before any plan is made."""
    from synaug.generate.bench import BenchResult, default_bench_path

    if options.rate is not None:
        return None
    path = Path(options.bench) if options.bench is not None else default_bench_path()
    if options.bench is None and not path.is_file():
        raise SynaugError("--estimate needs a generation rate: run `synaug bench --plan PLAN --generator GENERATOR` first, or pass --rate or --bench.")
    return BenchResult.load(path)


def _print_estimate(synthesis: SynthesisPlan, options: PlanOptions, measured: BenchResult | None, console: Console) -> None:
    """Images, hours on the measured device (``measured``, None for --rate; and on --workers of them) and disk for the plan."""
    from synaug.generate.bench import estimate_plan, format_bytes

    cost = estimate_plan(synthesis, measured, options.rate, options.sample_store, options.workers)
    hours = {"gpu": "GPU-hours", "cpu": "CPU-hours"}.get(cost.device_kind, "device-hours")
    source = "the given rate" if measured is None else f"{cost.device}, measured by synaug bench on {measured.host} at {measured.measured_at}"
    wall = format_duration(cost.wall_seconds) + (f" on {cost.workers} such devices" if cost.workers > 1 else "")
    disk = "unknown" if cost.disk_bytes is None else f"{format_bytes(cost.disk_bytes)} of PNGs"
    lines = [
        f"estimate: {cost.images} images at {cost.images_per_second:.3g} images/s ({source})",
        f"  generation: {cost.device_hours:.2f} {hours} ({wall})",
        f"  disk: {disk} ({cost.bytes_source})",
    ]
    if measured is not None and synthesis.image_size is not None and list(synthesis.image_size) != measured.image_size:
        lines.append(f"  note: the rate was measured on {measured.image_size[0]}x{measured.image_size[1]} images, the plan makes "
                     f"{synthesis.image_size[0]}x{synthesis.image_size[1]}; bench with --plan for a matching figure")
    console.print("\n".join(lines), markup=False, soft_wrap=True)


def _print_plan(synthesis: SynthesisPlan) -> None:
    """A table of class (and group), real, synthetic, final count and first prompt."""
    grouped = synthesis.group_names is not None
    title = f"plan: {synthesis.strategy}" + (f" {synthesis.target}" if synthesis.target is not None else "") + (
        f" {synthesis.budget}" if synthesis.budget is not None else ""
    )
    kept = "" if synthesis.keep_counts is None else f" (over-generated: `synaug filter` keeps the best {int(synthesis.keep_counts.sum())})"
    table = Table(title=Text(f"{title}, {synthesis.total} synthetic images{kept}"))
    table.add_column("class")
    if grouped:
        table.add_column("group")
    for name in ("real", "synthetic", "total" if synthesis.keep_counts is None else "total made"):
        table.add_column(name, justify="right")
    table.add_column("prompt")
    for class_id, class_name in enumerate(synthesis.class_names):
        cells = [(None, synthesis.real_counts[class_id], synthesis.synthetic_counts[class_id])] if not grouped else [
            (g, synthesis.real_counts[class_id, g], synthesis.synthetic_counts[class_id, g]) for g in range(len(synthesis.group_names))
        ]
        for group_id, real, synthetic in cells:
            row = [Text(class_name)] + ([Text(synthesis.group_names[group_id])] if grouped else [])
            row += [str(real), str(synthetic), str(real + synthetic), Text(synthesis.prompt(class_id, group_id, 0))]
            table.add_row(*row)
    Console(highlight=False).print(table)


