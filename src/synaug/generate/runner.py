"""Running a synthesis plan into a store: batches, one retry per bad image, resumable.

:func:`generate_plan` skips every image the store has recorded already, so re-running a
finished plan does nothing and re-running an interrupted one finishes it. Image files are
written by a background thread while the generator works on the next batch, and a batch's
manifest rows are appended as soon as its files are in place. A run that stops early (Ctrl-C,
an error, SIGKILL) thus keeps every batch it finished writing: a re-run generates only the
batch that was being generated, and the one being written if it was cut short.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.exemplars import ExemplarPicker
from synaug.generate.store import ImageRecord, SyntheticStore
from synaug.plan.planner import PlanItem, SynthesisPlan

if TYPE_CHECKING:
    from synaug.generate.backends.base import Generator
    from synaug.generate.hooks import StepHook

COMPACT_EVERY_BATCHES = 500


@dataclass
class GenerationSummary:
    """What one run did: counts of this shard's items and the time it took."""

    planned: int
    already_done: int
    generated: int
    retried: int
    failed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def check_some_succeeded(self) -> None:
        """Raise when every new image of the run failed: the sampler settings, not chance, are at fault."""
        if self.failed and not self.generated:
            raise SynaugError(
                f"all {self.failed} new images stayed non-finite or blank after their retry; check the sampler settings "
                "(guidance, feedback scale, dtype) and generate again into an emptied store (--overwrite)."
            )


def generate_plan(
    plan: SynthesisPlan,
    generator: "Generator",
    store: SyntheticStore,
    *,
    batch_size: int | None = None,
    progress: bool = True,
    hooks: Sequence["StepHook"] = (),
    reference_images: LabeledImages | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    fail_if_all_failed: bool = True,
) -> GenerationSummary:
    """Generate every image of ``plan`` (or of one shard of it) that ``store`` lacks.

    ``batch_size`` items go to each ``generator.generate`` call (default: the generator's
    own batch size); their manifest rows form one part file. Items are sharded by position
    (item ``i`` belongs to shard ``i % num_shards``), so shards are disjoint and stable
    across re-runs. Images come out at the plan's resolution and channels. With ``reference_images`` (the real
    training images), each item gets an exemplar of its class (or cell) by the seeded rule of
    :mod:`synaug.generate.exemplars`, recorded in the manifest's ``exemplar`` column.
    Hooks and the exemplar set are part of the store's generator settings.

    Raises :class:`SynaugError` before any work when a hook's window and frequency act on none of
    the generator's ``steps``, and after the run when every new image failed (unless
    ``fail_if_all_failed`` is False: a shard of a larger run leaves that check to its caller).
    """
    # 1. Check inputs
    batch_size = generator.batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise SynaugError(f"batch size {batch_size} must be at least 1.")
    if num_shards < 1:
        raise SynaugError(f"number of shards {num_shards} must be at least 1.")
    if not 0 <= shard_index < num_shards:
        raise SynaugError(f"shard index {shard_index} must lie in [0, {num_shards}); shards are numbered from 0.")
    references = ExemplarPicker(plan, reference_images) if reference_images is not None else None

    # 2. Open the store for this plan and generator
    store.open(plan, generator.generator_id, run_settings(plan, generator, hooks, references))

    try:
        summary = _generate_pending(plan, generator, store, batch_size, progress, hooks, references, shard_index, num_shards)
    finally:
        store.close()
    if fail_if_all_failed:
        summary.check_some_succeeded()
    return summary


def run_settings(plan: SynthesisPlan, generator: "Generator", hooks: Sequence["StepHook"], references: "ExemplarPicker | LabeledImages | None") -> dict:
    """The generator settings a store records for a run: the generator's, its hooks' and its exemplar set's.

    Raises :class:`SynaugError` when a hook's window and frequency act on none of the generator's steps.
    """
    if isinstance(references, LabeledImages):
        references = ExemplarPicker(plan, references)
    steps_run = getattr(generator, "steps_run", None)
    check_hooks_act(hooks, steps_run(references is not None) if steps_run else getattr(generator, "steps", None))
    settings = dict(generator.settings())
    if hooks:
        settings["hooks"] = [_describe_hook(hook) for hook in hooks]
    if references is not None:
        settings["reference_images"] = references.fingerprint
    return settings


def _generate_pending(
    plan: SynthesisPlan, generator: "Generator", store: SyntheticStore, batch_size: int, progress: bool, hooks: Sequence,
    references: ExemplarPicker | None, shard_index: int, num_shards: int,
) -> GenerationSummary:
    """Steps 3 to 5 of :func:`generate_plan`, on an open store."""
    # 3. Find this shard's pending items and clear what killed runs left of them
    started = time.perf_counter()
    items = [item for position, item in enumerate(plan.rows()) if position % num_shards == shard_index]
    done = store.finished_keys()
    pending = [item for item in items if item.key not in done]
    store.discard_unfinished(pending)

    # 4. Generate batch by batch; a background thread writes each batch's files, then its rows
    counts = {"generated": 0, "retried": 0, "failed": 0}
    with _progress_bar(progress) as bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="synaug-png") as writer:
        task = bar.add_task("generating", total=len(items), completed=len(items) - len(pending))
        writing: list[Future] = []  # batches being written and recorded, oldest first
        for number, start in enumerate(range(0, len(pending), batch_size)):
            batch = pending[start : start + batch_size]
            records, images, retried = _generate_batch(plan, generator, batch, hooks, references)
            counts["retried"] += retried
            writing.append(writer.submit(_write_and_record, store, records, images))
            if len(writing) > 1:
                _count(writing.pop(0).result(), counts, bar, task)
            if number and number % COMPACT_EVERY_BATCHES == 0:
                store.compact()
        while writing:
            _count(writing.pop(0).result(), counts, bar, task)

    # 5. Merge this run's manifest parts
    store.compact()
    return GenerationSummary(len(items), len(items) - len(pending), seconds=time.perf_counter() - started, **counts)


def check_hooks_act(hooks: Sequence["StepHook"], num_steps: int | None) -> None:
    """A one-line error when a step hook's window and frequency leave none of the sampler's ``num_steps`` to act on."""
    for hook in hooks if num_steps else []:
        if not any(hook.is_active(step, num_steps) for step in range(num_steps)):
            raise SynaugError(
                f"feedback guidance on the window {hook.start:g}:{hook.stop:g} of the steps, every {hook.every} steps, guides none "
                f"of the generator's {num_steps} steps, so the images would be unguided; widen the window (--feedback-window, "
                "feedback.start/stop) or guide more often (--feedback-every, feedback.every)."
            )


def _generate_batch(
    plan: SynthesisPlan, generator: "Generator", batch: list[PlanItem], hooks: Sequence, references: ExemplarPicker | None
) -> tuple[list[ImageRecord], list[torch.Tensor | None], int]:
    """Records and images of ``batch``: a non-ok image is retried once with its attempt-1 seed."""
    seeds = [plan.seed_for(item, 0) for item in batch]
    output = _call(plan, generator, batch, seeds, hooks, references)
    exemplars = [None if references is None else references.describe(item) for item in batch]
    records = [ImageRecord(item, seed, 0, None, _scores(output, i), exemplars[i]) for i, (item, seed) in enumerate(zip(batch, seeds))]
    images: list[torch.Tensor | None] = [output.images[i] if output.ok[i] else None for i in range(len(batch))]
    bad = [i for i in range(len(batch)) if not output.ok[i]]
    if bad:
        retry_items = [batch[i] for i in bad]
        retry_seeds = [plan.seed_for(item, 1) for item in retry_items]
        second = _call(plan, generator, retry_items, retry_seeds, hooks, references)
        for j, i in enumerate(bad):
            records[i] = ImageRecord(batch[i], retry_seeds[j], 1, None, _scores(second, j), exemplars[i])
            images[i] = second.images[j] if second.ok[j] else None
    return records, images, len(bad)


def _call(plan: SynthesisPlan, generator: "Generator", items: list[PlanItem], seeds: list[int], hooks: Sequence, references):
    """One ``generator.generate`` call for ``items``, checked against the interface."""
    output = generator.generate(
        [item.prompt for item in items],
        seeds,
        negative_prompt=plan.negative_prompt,
        reference_images=None if references is None else references.images(items),
        class_ids=[item.class_id for item in items],
        hooks=tuple(hooks),
        output_size=plan.image_size,
        output_channels=plan.channels,
    )
    if len(output.images) != len(items) or len(output.ok) != len(items):
        raise RuntimeError(f"generator {generator.generator_id} returned {len(output.images)} images and {len(output.ok)} flags for {len(items)} prompts")
    return output


def _scores(output, position: int) -> dict[str, float]:
    return {name: float(values[position]) for name, values in output.scores.items()}


def _write_and_record(store: SyntheticStore, records: list[ImageRecord], images: list[torch.Tensor | None]) -> list[ImageRecord]:
    """Write a batch's files, then append rows for every image written and every failure.

    Runs in the writer thread as soon as the batch is generated, so a batch is recorded while
    the next one is generated, and a killed run loses at most the batches not yet written.
    When a write fails, the rows of the images that did get written are still appended (no
    finished file is left without its row) before the first error is raised.
    """
    written, error = [], None
    for record, image in zip(records, images):
        try:
            if image is None:
                store.discard_file(record.item)  # left by an earlier run whose image came out fine
            else:
                record.file = store.write_image(record.item, image)
            written.append(record)
        except Exception as exc:
            error = error or exc
    store.append(written)
    if error is not None:
        raise error
    return written


def _count(written: list[ImageRecord], counts: dict, bar: Progress, task) -> None:
    """Add a recorded batch to the counts and the progress bar."""
    failed = sum(record.file is None for record in written)
    counts["failed"] += failed
    counts["generated"] += len(written) - failed
    bar.advance(task, len(written))


def _describe_hook(hook) -> dict | str:
    """A hook's settings (its ``settings()`` when it has one, else its class name), recorded in the store."""
    settings = getattr(hook, "settings", None)
    return settings() if callable(settings) else f"{type(hook).__module__}.{type(hook).__qualname__}"


class _RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.2f} img/s", style="progress.data.speed")


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
