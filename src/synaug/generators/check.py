"""The quality gate for synthetic data (``synaug generator check``).

Three questions about a generator on a dataset:

* **Recognisability** — does a classifier trained on balanced *real* data (the oracle)
  recognise generated images of each class (each (class, context) cell for group data)?
  Judged against the oracle's own accuracy on real test images of the same class.
* **Diversity** — mean pairwise distance between the oracle's penultimate features of the
  generated images of a class, next to the same figure for real test images.
* **Memorisation** — distance from each generated image to its nearest neighbour among
  the generator's training images (same class), next to the same distance for real
  held-out images. Generated images much closer than held-out ones would be copies.

With real exemplars (each image made from a real image of its class), closeness to the real
images and no copying of the exemplar join them (:mod:`synaug.generators.exemplar_check`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.backends.base import GenerationOutput, Generator
from synaug.generators.exemplar_check import exemplar_figures, exemplar_markdown_lines, exemplar_ratios, pick_exemplars
from synaug.outputs import check_writable_folder
from synaug.train.models import Normalizer
from synaug.train.inference import extract_features, infer


@dataclass
class Oracle:
    """A classifier trained on balanced real data, with its normaliser."""

    model: torch.nn.Module
    normalizer: Normalizer


@dataclass
class GateThresholds:
    """The gate: mean recognisability within ``mean_gap`` points of the oracle's real-test
    accuracy, no class (cell) more than ``cell_gap`` points below its own, and generated
    images no closer to the training set than ``min_memorisation_ratio`` times held-out ones.
    With exemplars: samples at most ``max_closeness_ratio`` times as far from the real test images
    as unseen real ones, and at least ``min_copy_ratio`` times as far from their exemplar as the
    exemplar is from its nearest other real image."""

    mean_gap: float = 5.0
    cell_gap: float = 15.0
    min_memorisation_ratio: float = 0.8
    max_closeness_ratio: float = 1.25
    min_copy_ratio: float = 1.0


@dataclass
class CheckReport:
    """Per-cell figures and the gate verdict."""

    cells: list[dict]
    mean_generated: float
    mean_real: float
    worst_gap: float
    memorisation_ratio: float | None
    passed: bool
    thresholds: GateThresholds
    settings: dict = field(default_factory=dict)
    closeness_ratio: float | None = None
    copy_ratio: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_generator(
    generator: Generator,
    oracle: Oracle,
    real_test: LabeledImages,
    *,
    reference: LabeledImages | None = None,
    per_cell: int = 100,
    template: str = "a photo of a {class}",
    group_template: str = "a photo of a {class} on a {context} background",
    context_oracle: Oracle | None = None,
    seed: int = 0,
    thresholds: GateThresholds | None = None,
    exemplars: LabeledImages | None = None,
) -> tuple[CheckReport, LabeledImages]:
    """Generate ``per_cell`` images per class (or (class, context) cell) and judge them.

    ``exemplars``: real images the generator never saw; each generated image then comes from one
    of its class (seeded choice) and the closeness and no-copying figures join the gate.
    Returns the report and the generated images (for the sample grid).
    """
    thresholds = thresholds or GateThresholds()
    # 1-2. Which cells, which prompts; generate.
    cells = _cells(real_test)
    output, generated, chosen = _generate_cells(generator, real_test, cells, per_cell, template, group_template, seed, exemplars)

    # 3. Recognisability of generated and real images, per cell.
    gen_pred = infer(oracle.model, generated, oracle.normalizer).argmax(1).numpy()
    real_pred = infer(oracle.model, real_test, oracle.normalizer).argmax(1).numpy()
    gen_context = real_context = None
    if context_oracle is not None and real_test.groups is not None:
        gen_context = infer(context_oracle.model, generated, context_oracle.normalizer).argmax(1).numpy()
        real_context = infer(context_oracle.model, real_test, context_oracle.normalizer).argmax(1).numpy()

    # 4. Diversity in the oracle's feature space, and nearest-neighbour distances.
    gen_features = extract_features(oracle.model, generated, oracle.normalizer)
    real_features = extract_features(oracle.model, real_test, oracle.normalizer)

    rows = []
    for class_id, group_id in cells:
        g = _mask(generated, class_id, group_id)
        r = _mask(real_test, class_id, group_id)
        row = {
            "class": real_test.class_names[class_id],
            "context": None if group_id is None else real_test.group_names[group_id],
            "ok": int(output.ok[g].sum()),
            "real_accuracy": 100.0 * float((real_pred[r] == class_id).mean()) if r.any() else float("nan"),
            "generated_accuracy": 100.0 * float((gen_pred[g] == class_id).mean()),
            "generated_diversity": _mean_pairwise(gen_features[g]),
            "real_diversity": _mean_pairwise(real_features[r]),
        }
        if gen_context is not None:
            row["generated_context_accuracy"] = 100.0 * float((gen_context[g] == group_id).mean())
            row["real_context_accuracy"] = 100.0 * float((real_context[r] == group_id).mean())
        if reference is not None:
            ref = reference.images[torch.from_numpy(reference.labels == class_id)]
            held_out = real_test.images[torch.from_numpy(r)][:per_cell]
            row["generated_nn_distance"] = _median_nn_distance(generated.images[torch.from_numpy(g)], ref)
            row["held_out_nn_distance"] = _median_nn_distance(held_out, ref)
        if exemplars is not None:
            row.update(exemplar_figures(generated.images[torch.from_numpy(g)], chosen[g], exemplars, real_test, class_id, seed))
        row["gap"] = row["real_accuracy"] - row["generated_accuracy"]
        rows.append(row)

    # 5. The verdict.
    mean_generated, mean_real, worst_gap, ratio, passed = _verdict(rows, thresholds, reference is not None)
    closeness = copying = None
    if exemplars is not None:
        closeness, copying = exemplar_ratios(rows)
        passed = passed and closeness <= thresholds.max_closeness_ratio and copying >= thresholds.min_copy_ratio
    report = CheckReport(
        cells=rows, mean_generated=mean_generated, mean_real=mean_real, worst_gap=worst_gap,
        memorisation_ratio=ratio, passed=bool(passed), thresholds=thresholds,
        settings={"generator_id": generator.generator_id, **generator.settings(), "per_cell": per_cell, "seed": seed,
                  "template": group_template if real_test.groups is not None else template, "exemplars": exemplars is not None},
        closeness_ratio=closeness, copy_ratio=copying,
    )
    return report, generated


def _generate_cells(
    generator: Generator, real_test: LabeledImages, cells: list[tuple[int, int | None]], per_cell: int,
    template: str, group_template: str, seed: int, exemplars: LabeledImages | None = None,
) -> tuple[GenerationOutput, LabeledImages, np.ndarray | None]:
    """``per_cell`` images per cell from its prompt (and a real exemplar of its class): the generator's output,
    the images as a synthetic set, and each image's exemplar position in ``exemplars`` (None without)."""
    prompts, labels, groups = [], [], []
    for class_id, group_id in cells:
        fields = {"class": real_test.class_names[class_id]}
        if group_id is not None:
            fields["context"] = real_test.group_names[group_id]
        text = (group_template if group_id is not None else template).format(**fields)
        prompts += [text] * per_cell
        labels += [class_id] * per_cell
        groups += [group_id if group_id is not None else 0] * per_cell
    seeds = [seed * 1_000_003 + i for i in range(len(prompts))]
    chosen = None if exemplars is None else pick_exemplars(exemplars, np.array(labels), seed)
    references = None if chosen is None else exemplars.images[torch.from_numpy(chosen)]
    output = generator.generate(
        prompts, seeds, class_ids=labels, output_size=real_test.size, output_channels=real_test.channels, reference_images=references
    )
    generated = LabeledImages(
        labels=np.array(labels),
        class_names=list(real_test.class_names),
        images=output.images,
        groups=np.array(groups) if real_test.groups is not None else None,
        group_names=real_test.group_names,
        is_synthetic=np.ones(len(labels), dtype=bool),
    )
    return output, generated, chosen


def _verdict(rows: list[dict], thresholds: GateThresholds, has_reference: bool) -> tuple[float, float, float, float | None, bool]:
    """Mean generated and real accuracy, the worst cell gap, the memorisation ratio and whether the gates pass."""
    mean_generated = float(np.mean([r["generated_accuracy"] for r in rows]))
    mean_real = float(np.nanmean([r["real_accuracy"] for r in rows]))
    worst_gap = float(np.nanmax([r["gap"] for r in rows]))
    ratio = None
    if has_reference:
        ratio = float(np.median([r["generated_nn_distance"] for r in rows]) / np.median([r["held_out_nn_distance"] for r in rows]))
    passed = (
        mean_real - mean_generated <= thresholds.mean_gap
        and worst_gap <= thresholds.cell_gap
        and (ratio is None or ratio >= thresholds.min_memorisation_ratio)
        and all(r.get("generated_context_accuracy", 100.0) >= r.get("real_context_accuracy", 100.0) - thresholds.cell_gap for r in rows)
    )
    return mean_generated, mean_real, worst_gap, ratio, passed


def write_check(report: CheckReport, generated: LabeledImages, real: LabeledImages, out: str | Path) -> Path:
    """Write check.json, check.md and samples.png (generated rows next to real rows) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "check.json", json.dumps(report.to_dict(), indent=2))
    _write_text(out / "check.md", check_markdown(report))
    sample_grid(generated, real, out / "samples.png")
    return out


def check_markdown(report: CheckReport) -> str:
    """The per-cell table and the verdict as Markdown."""
    has_context = any(r["context"] is not None for r in report.cells)
    has_nn = report.memorisation_ratio is not None
    head = ["class"] + (["context"] if has_context else []) + ["real acc", "generated acc", "gap", "diversity gen / real"]
    if has_context:
        head += ["context acc gen / real"]
    if has_nn:
        head += ["NN dist gen / held-out"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.cells:
        cols = [r["class"]] + ([r["context"]] if has_context else [])
        cols += [f"{r['real_accuracy']:.1f}", f"{r['generated_accuracy']:.1f}", f"{r['gap']:+.1f}",
                 f"{r['generated_diversity']:.2f} / {r['real_diversity']:.2f}"]
        if has_context:
            cols += [f"{r['generated_context_accuracy']:.1f} / {r['real_context_accuracy']:.1f}"]
        if has_nn:
            cols += [f"{r['generated_nn_distance']:.2f} / {r['held_out_nn_distance']:.2f}"]
        lines.append("| " + " | ".join(cols) + " |")
    t = report.thresholds
    verdict = "PASSED" if report.passed else "FAILED"
    lines += [
        "",
        f"Mean recognisability {report.mean_generated:.1f} % vs the oracle's real-test {report.mean_real:.1f} % "
        f"(gate: within {t.mean_gap:g} points); largest shortfall of a class (cell) below its own real accuracy "
        f"{report.worst_gap:+.1f} points (gate: at most {t.cell_gap:g}; negative means every class is above it).",
    ]
    if has_nn:
        lines.append(
            f"Memorisation: median nearest-neighbour distance to the generator's training images, generated / held-out "
            f"real = {report.memorisation_ratio:.2f} (gate: at least {t.min_memorisation_ratio:g}; near 1 means no copying)."
        )
    if report.closeness_ratio is not None:
        lines += exemplar_markdown_lines(report.cells, report.closeness_ratio, report.copy_ratio, t.max_closeness_ratio, t.min_copy_ratio)
    lines += ["", f"**Gate {verdict}.**", ""]
    return "\n".join(lines)


def sample_grid(generated: LabeledImages, real: LabeledImages, path: Path, per_row: int = 10) -> None:
    """PNG grid: for each class (cell), a row of generated images, then a row of real ones."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cells = _cells(real)
    fig = Figure(figsize=(per_row * 0.6 + 1.6, len(cells) * 1.25))
    axes = fig.subplots(len(cells), 1, squeeze=False)[:, 0]
    for ax, (class_id, group_id) in zip(axes, cells):
        rows, counts = [], []
        for data in (generated, real):
            idx = np.flatnonzero(_mask(data, class_id, group_id))[:per_row]
            counts.append(len(idx))
            images = data.images[torch.from_numpy(idx)]
            if len(images) < per_row:
                pad = torch.zeros(per_row - len(images), *images.shape[1:], dtype=torch.uint8)
                images = torch.cat([images, pad])
            rows.append(torch.cat(list(images), dim=2))
        strip = torch.cat(rows, dim=1)
        picture = strip[0] if strip.shape[0] == 1 else strip.permute(1, 2, 0)
        ax.imshow(picture.numpy(), cmap="gray" if strip.shape[0] == 1 else None, vmin=0, vmax=255)
        name = real.class_names[class_id] + ("" if group_id is None else f" / {real.group_names[group_id]}")
        label = "gen | real" if counts[0] else "(none generated)\n| real"
        ax.set_ylabel(f"{name}\n{label}", rotation=0, ha="right", va="center", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# ---- helpers ----------------------------------------------------------------------------
def _cells(data: LabeledImages) -> list[tuple[int, int | None]]:
    if data.groups is None:
        return [(c, None) for c in range(data.num_classes)]
    return [(c, g) for c in range(data.num_classes) for g in range(len(data.group_names))]


def _mask(data: LabeledImages, class_id: int, group_id: int | None) -> np.ndarray:
    mask = data.labels == class_id
    if group_id is not None:
        mask &= data.groups == group_id
    return mask


def _mean_pairwise(features: torch.Tensor) -> float:
    if len(features) < 2:
        return float("nan")
    d = torch.cdist(features, features)
    n = len(features)
    return float(d.sum() / (n * (n - 1)))


def _median_nn_distance(images: torch.Tensor, reference: torch.Tensor, chunk: int = 256) -> float:
    """Median over ``images`` of the L2 distance (pixels in [0, 1]) to the nearest ``reference`` image."""
    if not len(images) or not len(reference):
        raise SynaugError("the memorisation check needs generated and reference images of every class.")
    ref = reference.flatten(1).float() / 255.0
    best = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].flatten(1).float() / 255.0
        best.append(torch.cdist(x, ref).min(dim=1).values)
    return float(torch.cat(best).median())


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- the worlds the shipped generators belong to -----------------------------------------
@dataclass
class CheckWorld:
    """The data a generator is checked against: the oracle's training set, real test images,
    and (for the memorisation check) the generator's own training images."""

    oracle_train: LabeledImages
    real_test: LabeledImages
    reference: LabeledImages | None


def fashion_mnist_world(colored: bool = False, root: str | None = None, per_class: int = 500) -> CheckWorld:
    """Fashion-MNIST: oracle on the balanced pool half, the official test set, the reserved half as reference.

    ``colored`` renders all three on red/blue backgrounds (uniform contexts), matching the
    context-aware generator's training data.
    """
    from synaug.data.benchmarks import fashion_mnist_balanced, fashion_mnist_reserved
    from synaug.data.fashion_mnist import load_fashion_mnist

    world = CheckWorld(fashion_mnist_balanced(per_class, root), load_fashion_mnist("test", root), fashion_mnist_reserved(root))
    if colored:
        from synaug.data.spurious import uniform_contexts, with_contexts

        world = CheckWorld(
            with_contexts(world.oracle_train, uniform_contexts(len(world.oracle_train), seed=1)),
            with_contexts(world.real_test, uniform_contexts(len(world.real_test), seed=2)),
            with_contexts(world.reference, uniform_contexts(len(world.reference), seed=0)),
        )
    return world


def train_oracles(world: CheckWorld, cache: str | Path, seed: int = 0, progress: bool = True) -> tuple[Oracle, Oracle | None]:
    """The class oracle (and a context oracle for group data), trained once and cached in ``cache``."""
    from synaug.train.checkpoint import load_checkpoint, save_checkpoint
    from synaug.train.trainer import TrainConfig, train_classifier

    check_writable_folder(cache)

    def cached(name: str, data: LabeledImages, epochs: int) -> Oracle:
        folder = Path(cache) / name
        if not folder.is_dir():
            result = train_classifier(data, TrainConfig(seed=seed, epochs=epochs), progress=progress)
            save_checkpoint(result, folder)
        model, normalizer, _ = load_checkpoint(folder)
        return Oracle(model.eval(), normalizer)

    oracle = cached("oracle", world.oracle_train, 30)
    context = None
    if world.oracle_train.groups is not None:
        by_context = LabeledImages(
            labels=world.oracle_train.groups, class_names=list(world.oracle_train.group_names), images=world.oracle_train.images
        )
        context = cached("context-oracle", by_context, 3)
    return oracle, context
