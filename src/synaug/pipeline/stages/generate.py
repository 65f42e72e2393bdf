"""The generate stages: one synthetic store per plan (and per feedback guidance).

``generate``: the fill plan's store (one per cells kind). ``generate-extra``: the extra images of
``replace`` / ``substitute``. ``generate-feedback``: one feedback-guided store per (criterion,
budget), all guided by the feedback classifier (see :mod:`synaug.pipeline.stages.feedback`).
The key holds the plan's digest, what identifies the generator's weights, the sampler settings
and (guided) the feedback settings with the classifier's weights digest; with ``exemplars``, their
settings and the digest of the real training images they are picked from (each image's exemplar
is in the store's manifest). Stores are written
in place and resume when a killed run is re-run; the generator is loaded only when images are
missing. Guided stores never replace the unguided one, whose key holds no feedback setting.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.devices import resolve_device
from synaug.errors import StoreMismatch, SynaugError
from synaug.generate import loading
from synaug.generate.backends.base import resolve_dtype
from synaug.generate.store import SyntheticStore
from synaug.guidance.criteria import NEEDS_CLASS_GAUSSIANS
from synaug.pipeline.ablations import Guidance, budget_text
from synaug.pipeline.cache import code_digest, stage_digest
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput, absolute
from synaug.pipeline.stages.plan import PlanOutput
from synaug.plan.planner import SynthesisPlan

if TYPE_CHECKING:  # the feedback stage trains through the train stage, which reads stores
    from synaug.pipeline.stages.feedback import FeedbackClassifierOutput

CODE = ("synaug.generate", "synaug.generators", "synaug.plan", "synaug.pipeline.stages.generate")
FEEDBACK_CODE = (*CODE, "synaug.guidance", "synaug.train")  # the hooks run the feedback classifier
SAMPLER_KEYS = ("scheduler", "steps", "guidance_scale", "guidance_steps", "dtype")


@dataclass
class StoreOutput:
    """A finished synthetic store (``root`` None when its plan has no image); ``feedback``: its guidance;
    ``per_class``: only the first this many images of each class are used (None: all); ``decisions``:
    the filter table whose kept images are used (None: every image)."""

    digest: str
    root: Path | None
    generator_id: str | None
    settings: dict[str, Any]
    feedback: dict[str, Any] | None = None
    per_class: list[int] | None = None
    decisions: Path | None = None


def generate_stage(
    ctx: RunContext, stage: str, planned: PlanOutput, data: DataOutput, feedback: dict[str, Any] | None = None,
    make_hooks: Callable[[], list] | None = None,
) -> StoreOutput:
    """The store of ``planned``; guided by the hooks of ``make_hooks`` (described by ``feedback``) when given;
    with the config's exemplars, each image made from a real image of ``data.train``."""
    section = ctx.config.generator
    plan = planned.plan
    sampler = sampler_settings(ctx)
    external = absolute(section.store) if stage == "generate" else None
    inputs = {
        "plan": plan.digest(),
        "generator": generator_fingerprint(section.spec),
        "sampler": {k: sampler[k] for k in SAMPLER_KEYS if k in sampler},  # guidance_steps only when set: older keys stay
        "store": external,
    }
    if feedback is not None:
        inputs["feedback"] = feedback
    exemplars = ctx.config.exemplars
    if exemplars.source is not None:  # only when set, so text-only stores keep their keys
        inputs["exemplars"] = {"source": exemplars.source, **exemplars.generator_settings(), "data": data.digest}
    code = code_digest(FEEDBACK_CODE if feedback is not None else CODE)
    digest = stage_digest(stage, inputs, code)
    label = f"{plan.total:,} images with {section.spec}" + (" (class x group cells)" if plan.group_names else "")
    if exemplars.source is not None:
        label += f", from {exemplars.source} exemplars"
    if feedback is not None:
        label += f", feedback {feedback['criterion']} (budget {budget_text(feedback['budget'])})"
    record = ctx.cache.record(stage, digest)
    if record is None and not ctx.may_compute(stage):
        if feedback is not None:
            ctx.missing(stage, label)
        _missing_store(ctx, stage, inputs)
    if record is None:
        folder = ctx.cache.resumable(stage, digest)
        root = Path(external) if external else folder / "store"
        started = time.perf_counter()
        facts: dict[str, Any] = {"store": None if plan.total == 0 else str(root), "planned": plan.total, "code": code}
        if plan.total:
            real = data.train if exemplars.source is not None else None
            facts.update(_generate(ctx, stage, plan, root, external is not None, label, make_hooks, real))
        record = ctx.cache.finish(stage, digest, inputs, facts, time.perf_counter() - started)
        ctx.note(stage, label, record, cached=False)
    else:
        ctx.note(stage, label, record, cached=True)
    root = Path(record["store"]) if record.get("store") else None
    return StoreOutput(digest, root, record.get("generator_id"), record.get("settings") or {}, feedback)


def guided_stores(
    ctx: RunContext,
    guided: Sequence[Guidance],
    plans: dict[float, PlanOutput],
    data: DataOutput,
    fill: StoreOutput | None,
    classifier: FeedbackClassifierOutput | None,
) -> dict[Guidance, StoreOutput]:
    """One store per (criterion, budget): feedback-guided, all by ``classifier``, or for criterion None
    the fill store cut to the budget plan's counts (its images have the same prompts and seeds)."""
    stores = {
        guidance: replace(fill, per_class=plans[guidance.budget].plan.class_totals()[1].tolist())
        for guidance in guided if guidance.criterion is None
    }
    section = ctx.config.feedback
    for guidance in guided:
        if guidance.criterion is None:
            continue
        plan = plans[guidance.budget].plan
        feedback = {
            "criterion": guidance.criterion, "budget": guidance.budget, "scale": section.scale, "every": section.every,
            "path": section.path, "classifier": classifier.digest, "classifier_source": classifier.source,
        }
        if (section.start, section.stop) != (0.0, 1.0):
            feedback.update(start=section.start, stop=section.stop)  # only when set, so earlier stores keep their keys
        if guidance.criterion in NEEDS_CLASS_GAUSSIANS:
            feedback["gaussians_data"] = data.digest  # the real images its class Gaussians are fitted on
        hooks = functools.partial(_feedback_hooks, ctx, guidance.criterion, classifier, data, plan.class_names)
        stores[guidance] = generate_stage(ctx, "generate-feedback", plans[guidance.budget], data, feedback, hooks)
    return stores


def store_images(store: StoreOutput | None, data: DataOutput, in_memory: bool) -> LabeledImages:
    """The store's finished images, labelled like the real data (an empty set when there are none)."""
    if store is None or store.root is None:
        return data.train.subset(np.zeros(0, dtype=np.int64))
    images = SyntheticStore(store.root).load(
        class_names=data.train.class_names, group_names=data.train.group_names, in_memory=in_memory, per_class=store.per_class,
        decisions=store.decisions,
    )
    return images if len(images) else data.train.subset(np.zeros(0, dtype=np.int64))


def sampler_settings(ctx: RunContext) -> dict[str, Any]:
    """The generator's sampler settings, with device and dtype "auto" resolved for this machine."""
    section = ctx.config.generator
    device = str(resolve_device(section.device))
    return {
        "scheduler": section.scheduler, "steps": section.steps, "guidance_scale": section.guidance,
        **({} if section.guidance_steps is None else {"guidance_steps": section.guidance_steps}),
        "dtype": resolve_dtype(section.dtype, torch.device(device)),
        "device": device, "batch_size": section.batch_size, **ctx.config.exemplars.generator_settings(),
    }


def generator_fingerprint(spec: str) -> dict[str, Any]:
    """What identifies a generator's weights without loading them (part of the generate key).

    Embedded generators (shipped ones too): the SHA-256 of the UNet weights and any exemplar projection (as in
    their generator id). Other
    model folders: names, sizes and modification times of their files. Hub ids and
    python: factories: the spec itself.
    """
    from synaug.generate.backends.embedded import SPEC_FILE, shipped_folder, weights_digest
    from synaug.generators.exemplar_model import PROJECTION_FOLDER

    if spec.startswith("python:"):
        return {"spec": spec}
    folder = shipped_folder(spec) or Path(spec).expanduser()
    if (folder / SPEC_FILE).is_file() and (folder / "unet").is_dir():
        parts = [folder / name for name in ("unet", PROJECTION_FOLDER) if (folder / name).is_dir()]
        return {"spec": spec, "weights": weights_digest(*parts)}
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        listing = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return {"spec": str(folder.resolve()), "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]}
    return {"spec": spec}


def _generate(
    ctx: RunContext, stage: str, plan: SynthesisPlan, root: Path, external: bool, label: str, make_hooks: Callable[[], list] | None,
    exemplars: LabeledImages | None,
) -> dict[str, Any]:
    """Generate the images of ``plan`` that the store at ``root`` lacks; returns the facts to record."""
    from synaug.generate.runner import generate_plan

    generator = _generator(ctx)
    loading.check_vocabulary(plan, ctx.config.generator.spec, allow_unknown_classes=ctx.config.generator.allow_unknown_classes)
    hooks = make_hooks() if make_hooks is not None else []
    ctx.say(stage, f"{label}: {generator.generator_id} ({_settings_text(generator.settings())}), into {root}")
    try:
        summary = generate_plan(plan, generator, SyntheticStore(root), progress=ctx.progress, hooks=hooks, reference_images=exemplars)
    except StoreMismatch as exc:
        where = f"store {root}" + (f" (generator.store in {ctx.config_name})" if external else "")
        fix = ("remove generator.store to generate a matching store in the output folder, or use a new output folder (--out)"
               if external else f"delete {root} or use a new output folder (--out)")
        raise SynaugError(f"{where} {exc.reason}, not as {ctx.config_name} asks; {fix}.") from None
    return {
        "generator_id": generator.generator_id, "settings": generator.settings(), "generated": summary.generated,
        "already_done": summary.already_done, "failed": summary.failed, "images_per_second": summary.images_per_second,
    }


def _generator(ctx: RunContext):
    """The generator of generator.spec with the sampler settings, loaded once per run."""
    if ctx.generator is None:
        ctx.generator = loading.load_generator(ctx.config.generator.spec, **sampler_settings(ctx))
    return ctx.generator


def _feedback_hooks(ctx: RunContext, criterion: str, classifier: FeedbackClassifierOutput, data: DataOutput, class_names: list[str]) -> list:
    """The feedback-guidance hook of ``criterion`` (loads the classifier; fits class Gaussians for hardness)."""
    from synaug.guidance import feedback_hook

    section = ctx.config.feedback
    return [feedback_hook(
        criterion, classifier.checkpoint, data.train, scale=section.scale, every=section.every, start=section.start,
        stop=section.stop, gradient_path=section.path, class_names=class_names, device=sampler_settings(ctx)["device"],
    )]


def _missing_store(ctx: RunContext, stage: str, inputs: dict[str, Any]) -> NoReturn:
    """Refuse a --stage run whose store is missing, naming a store of another plan or generator when there is one."""
    others = [r for r in ctx.cache.finished(stage) if r.get("store")]
    if not others:
        ctx.missing(stage, "synthetic images")
    other = others[0]
    how = f"run `{ctx.rerun_command('generate')}`" if ctx.rerun_command else "run the 'generate' stage"
    raise SynaugError(
        f"the synthetic store in {ctx.cache.root / (stage + '-' + other['digest'])} was made by a different plan or generator "
        f"(plan {other['inputs'].get('plan')}, {other.get('generator_id')}) than {ctx.config_name} asks for "
        f"(plan {inputs['plan']}, {ctx.config.generator.spec} {_settings_text(inputs['sampler'])}); "
        f"{how} to make a matching store, or use a new output folder (--out)."
    )


def _settings_text(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if k in SAMPLER_KEYS and v is not None}
    return ", ".join(f"{k} {v}" for k, v in shown.items()) or "default settings"
