"""Synthesis plans: how many synthetic images each class (or class x group cell) gets.

A plan is made from the real counts of a dataset and a strategy:

``fill-to-max``
    SYNAuG's "uniformize": every class (every cell, for group data) is filled up to the
    largest one.
``fill-to`` (with ``target=N``)
    The feedback-guidance paper's rule: every class is filled to N; classes already at or
    above N get nothing.
``budget`` (with ``budget=B``)
    A total of B images split in proportion to each class's shortfall from the largest.
    Integer counts come from the largest-remainder rule: every class first gets the floor
    of its exact share, then the images left over go one each to the classes with the
    largest fractional parts (ties to the lower class index), so the counts sum to B.
``class-only``
    For group data: fill the classes to the largest class, ignoring groups. Prompts carry
    no group and the images have no group label (the group-unaware variant of SYNAuG).

Over-generation (:func:`overgenerate`) makes ``factor`` times the images each class (cell)
needs and records the needed counts as ``keep_counts``, for a filter
(:mod:`synaug.filters`) to keep the best of them.

A mapping of *final* counts (``{"Sandal": 500, ...}``, or ``{(class, group): n}`` for group
data) is accepted too, as imbalanced-learn's ``sampling_strategy`` dicts are: unlisted
classes get nothing and a target below the real count is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.data.registry import write_atomic
from synaug.errors import SynaugError
from synaug.plan.descriptions import check_descriptions, description_key, read_descriptions
from synaug.plan.prompts import DEFAULT_GROUP_TEMPLATES, DEFAULT_TEMPLATES, check_templates, prompt_names, render_prompt, template_set

STRATEGIES = ("fill-to-max", "fill-to", "budget", "class-only")
FINAL_COUNTS = "final-counts"
PLAN_FORMAT = 1


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One synthetic image to make: image ``index`` of a class (and group) with its prompt."""

    class_id: int
    class_name: str
    group_id: int | None
    group_name: str | None
    index: int
    prompt: str

    @property
    def key(self) -> tuple[int, int, int]:
        """(class_id, group_id or -1, index): unique within a plan."""
        return (self.class_id, -1 if self.group_id is None else self.group_id, self.index)


@dataclass
class SynthesisPlan:
    """How many synthetic images each class or (class, group) cell gets, and their prompts.

    Parameters
    ----------
    strategy : the strategy that made the plan (one of ``STRATEGIES`` or "final-counts").
    class_names : dataset class names, in label order.
    real_counts : real images per class, shape (C,), or per cell, shape (C, G).
    synthetic_counts : synthetic images per class or cell, same shape as ``real_counts``.
    group_names : group names for a cell plan, else None.
    templates : prompt templates, rotating by image index.
    descriptions : prompts per class ("Sandal") or cell ("Sandal | beach"), used word for word
        instead of the templates, rotating by image index (see :mod:`synaug.plan.descriptions`).
    prompt_names : class names as written in prompts (default: ``class_names``).
    group_prompt_names : group names as written in prompts (default: ``group_names``).
    negative_prompt : negative prompt for classifier-free guidance, or None.
    seed : run seed every image's seed derives from.
    image_size : (H, W) images are resized to (the dataset's resolution), or None.
    channels : channels images are converted to (1 or 3), or None.
    target, budget : the strategy's parameter, when it has one.
    keep_counts : images to keep per class or cell after filtering an over-generated plan
        (see :func:`overgenerate`), else None (keep what a filter passes).
    """

    strategy: str
    class_names: list[str]
    real_counts: np.ndarray
    synthetic_counts: np.ndarray
    group_names: list[str] | None = None
    templates: list[str] = field(default_factory=list)
    prompt_names: list[str] | None = None
    negative_prompt: str | None = None
    seed: int = 0
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    target: int | None = None
    budget: int | None = None
    group_prompt_names: list[str] | None = None
    keep_counts: np.ndarray | None = None
    descriptions: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        self.class_names = [str(n) for n in self.class_names]
        self.real_counts = np.asarray(self.real_counts, dtype=np.int64)
        self.synthetic_counts = np.asarray(self.synthetic_counts, dtype=np.int64)
        expected = (len(self.class_names),) if self.group_names is None else (len(self.class_names), len(self.group_names))
        for name, counts in (("real_counts", self.real_counts), ("synthetic_counts", self.synthetic_counts)):
            if counts.shape != expected:
                raise SynaugError(f"plan {name} has shape {counts.shape}, expected {expected} (classes x groups); rebuild the plan with `synaug plan`.")
            if (counts < 0).any():
                raise SynaugError(f"plan {name} holds a negative count; rebuild the plan with `synaug plan`.")
        with_groups = self.group_names is not None
        self.templates = check_templates(self.templates or (DEFAULT_GROUP_TEMPLATES if with_groups else DEFAULT_TEMPLATES), with_groups)
        self.prompt_names = list(self.class_names) if self.prompt_names is None else [str(n) for n in self.prompt_names]
        if len(self.prompt_names) != len(self.class_names):
            raise SynaugError(f"plan has {len(self.prompt_names)} prompt names for {len(self.class_names)} classes; give one per class.")
        if self.group_prompt_names is not None:
            self.group_prompt_names = [str(n) for n in self.group_prompt_names]
            if self.group_names is None or len(self.group_prompt_names) != len(self.group_names):
                raise SynaugError("plan group_prompt_names need a plan with groups and one name per group; rebuild the plan with `synaug plan`.")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise SynaugError(f"seed {self.seed} must be a non-negative integer.")
        self.seed = int(self.seed)
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.keep_counts is not None:
            self.keep_counts = np.asarray(self.keep_counts, dtype=np.int64)
            if self.keep_counts.shape != expected or (self.keep_counts < 0).any() or (self.keep_counts > self.synthetic_counts).any():
                raise SynaugError("plan keep_counts must have one count per class (cell), between 0 and its synthetic count; rebuild the plan.")
        if self.channels not in (None, 1, 3):
            raise SynaugError(f"plan channels must be 1 or 3, not {self.channels}.")
        if self.descriptions is not None:
            self.descriptions = check_descriptions(self.descriptions, self.class_names, self.group_names, where="plan descriptions")

    # ---- facts ---------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Number of synthetic images in the plan."""
        return int(self.synthetic_counts.sum())

    def class_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(real, synthetic) images per class, summed over groups."""
        if self.group_names is None:
            return self.real_counts, self.synthetic_counts
        return self.real_counts.sum(axis=1), self.synthetic_counts.sum(axis=1)

    def prompt(self, class_id: int, group_id: int | None, index: int) -> str:
        """Prompt of image ``index`` of a class (and group): its descriptions, else the templates, rotate by index."""
        if self.descriptions is not None:
            group_name = None if group_id is None else self.group_names[group_id]
            prompts = self.descriptions[description_key(self.class_names[class_id], group_name)]
            return prompts[index % len(prompts)]
        template = self.templates[index % len(self.templates)]
        group = None if group_id is None else (self.group_prompt_names or self.group_names)[group_id]
        return render_prompt(template, self.prompt_names[class_id], group)

    def prompt_count(self, class_id: int, group_id: int | None = None) -> int:
        """How many different prompts a class (or cell) rotates through."""
        if self.descriptions is None:
            return len(self.templates)
        group_name = None if group_id is None else self.group_names[group_id]
        return len(self.descriptions[description_key(self.class_names[class_id], group_name)])

    def rows(self) -> Iterator[PlanItem]:
        """One item per synthetic image, class by class (then group by group), index ascending."""
        for class_id, class_name in enumerate(self.class_names):
            cells = [(None, None, int(self.synthetic_counts[class_id]))] if self.group_names is None else [
                (g, name, int(self.synthetic_counts[class_id, g])) for g, name in enumerate(self.group_names)
            ]
            for group_id, group_name, count in cells:
                for index in range(count):
                    yield PlanItem(class_id, class_name, group_id, group_name, index, self.prompt(class_id, group_id, index))

    def seed_for(self, item: PlanItem, attempt: int = 0) -> int:
        """The seed of ``item``'s ``attempt``-th try (0 first, 1 the retry)."""
        return derive_seed(self.seed, item.class_id, item.group_id, item.index, attempt)

    def check_dataset(self, class_names: Sequence[str], group_names: Sequence[str] | None = None) -> None:
        """Raise a one-line error when the plan names a class (or group) ``class_names`` lacks."""
        _check_known("class", self.class_names, class_names)
        if self.group_names is not None and group_names is not None:
            _check_known("group", self.group_names, group_names)

    # ---- identity and files --------------------------------------------------------
    def digest(self) -> str:
        """A stable hash of everything that determines the images (not the real counts)."""
        determining = {
            "class_names": self.class_names,
            "group_names": self.group_names,
            "synthetic_counts": self.synthetic_counts.tolist(),
            "templates": self.templates,
            "prompt_names": self.prompt_names,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "image_size": list(self.image_size) if self.image_size else None,
            "channels": self.channels,
        }
        if self.group_prompt_names is not None:  # only when set, so plans without them keep their digest
            determining["group_prompt_names"] = self.group_prompt_names
        if self.keep_counts is not None:  # likewise
            determining["keep_counts"] = self.keep_counts.tolist()
        if self.descriptions is not None:  # likewise
            determining["descriptions"] = self.descriptions
        text = json.dumps(determining, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """A JSON-safe mapping of the plan."""
        return {
            "synaug_plan": PLAN_FORMAT,
            "strategy": self.strategy,
            "target": self.target,
            "budget": self.budget,
            "class_names": self.class_names,
            "group_names": self.group_names,
            "prompt_names": self.prompt_names,
            "group_prompt_names": self.group_prompt_names,
            "real_counts": self.real_counts.tolist(),
            "synthetic_counts": self.synthetic_counts.tolist(),
            "templates": self.templates,
            "descriptions": self.descriptions,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "image_size": list(self.image_size) if self.image_size else None,
            "channels": self.channels,
            "keep_counts": None if self.keep_counts is None else self.keep_counts.tolist(),
            "digest": self.digest(),
        }

    def to_json(self) -> str:
        """The plan as JSON text: one top-level key per line, each value on its line."""
        lines = (f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in self.to_dict().items())
        return "{\n" + ",\n".join(lines) + "\n}\n"

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "plan") -> "SynthesisPlan":
        """The plan stored in ``data`` (as written by :meth:`to_dict`)."""
        if not isinstance(data, Mapping) or data.get("synaug_plan") != PLAN_FORMAT:
            raise SynaugError(f"{where} is not a synaug plan (format {PLAN_FORMAT}); write one with `synaug plan --out`.")
        keys = ("strategy", "class_names", "real_counts", "synthetic_counts", "group_names", "templates", "prompt_names",
                "negative_prompt", "seed", "image_size", "channels", "target", "budget", "group_prompt_names", "keep_counts",
                "descriptions")
        missing = [k for k in keys[:4] if k not in data]
        if missing:
            raise SynaugError(f"{where} lacks '{missing[0]}'; write the plan again with `synaug plan --out`.")
        try:
            return cls(**{k: data[k] for k in keys if k in data})
        except (TypeError, ValueError) as exc:
            raise SynaugError(f"{where} holds an invalid value ({exc}); write the plan again with `synaug plan --out`.") from None

    @classmethod
    def from_json(cls, text: str, where: str = "plan") -> "SynthesisPlan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SynaugError(f"{where} is not valid JSON (line {exc.lineno}); write the plan again with `synaug plan --out`.") from None
        return cls.from_dict(data, where)

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON to ``path`` atomically (temp file + rename)."""
        path = Path(path)
        try:
            write_atomic(path, self.to_json())
        except OSError as exc:
            raise SynaugError(f"cannot write plan file {path} ({exc.strerror or exc}); choose a writable location for --out.") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SynthesisPlan":
        path = Path(path)
        if not path.is_file():
            raise SynaugError(f"plan file {path} does not exist; make one with `synaug plan --out {path}`.")
        return cls.from_json(path.read_text(encoding="utf-8"), where=f"plan file {path}")


def make_plan(
    counts: np.ndarray | Sequence,
    class_names: Sequence[str],
    strategy: str | Mapping = "fill-to-max",
    *,
    target: int | None = None,
    budget: int | None = None,
    group_names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    template_set: str | None = None,
    descriptions: str | Path | Mapping | None = None,
    class_prompt_names: Mapping[str, str] | None = None,
    group_prompt_names: Mapping[str, str] | None = None,
    negative_prompt: str | None = None,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> SynthesisPlan:
    """A plan from real ``counts`` per class (shape (C,)) or per cell (shape (C, G) with ``group_names``).

    ``strategy`` is one of ``STRATEGIES`` (see the module doc) or a mapping of final counts.
    Prompts come from ``templates``, or the built-in ``template_set`` ("plain" or "modifier",
    see :mod:`synaug.plan.prompts`), or ``descriptions``: a descriptions file or a mapping of
    prompts per class or cell (see :mod:`synaug.plan.descriptions`); give at most one of the three.
    ``class_prompt_names`` renames classes in prompts ("T-shirt/top" -> "t-shirt"), ``group_prompt_names``
    groups ("water" -> "lake"); the latter applies to plans with groups only.
    """
    real = np.asarray(counts, dtype=np.int64)
    class_names = [str(n) for n in class_names]
    group_names = None if group_names is None else [str(g) for g in group_names]
    expected_ndim = 1 if group_names is None else 2
    if real.ndim != expected_ndim or real.shape[0] != len(class_names) or (group_names is not None and real.shape[1] != len(group_names)):
        raise SynaugError(f"counts of shape {real.shape} do not match {len(class_names)} classes" + ("" if group_names is None else f" x {len(group_names)} groups") + "; pass one count per class (or cell).")
    if isinstance(strategy, Mapping):
        synthetic = _from_final_counts(real, class_names, group_names, strategy)
        name = FINAL_COUNTS
    else:
        name = str(strategy)
        if name not in STRATEGIES:
            raise SynaugError(f"unknown strategy '{name}'; use one of {', '.join(STRATEGIES)}, or a mapping of final counts per class.")
        _check_parameters(name, target, budget)
        if name == "class-only":
            real = real.sum(axis=1) if real.ndim == 2 else real
            group_names = None
            synthetic = real.max() - real
        elif name == "fill-to-max":
            synthetic = real.max() - real
        elif name == "fill-to":
            synthetic = np.maximum(int(target) - real, 0)
        else:
            synthetic = split_budget(int(budget), real.max() - real)
    templates, described = _prompt_sources(templates, template_set, descriptions, class_names, group_names)
    return SynthesisPlan(
        strategy=name,
        class_names=class_names,
        real_counts=real,
        synthetic_counts=synthetic,
        group_names=group_names,
        templates=templates,
        descriptions=described,
        prompt_names=prompt_names(class_names, class_prompt_names),
        group_prompt_names=None if group_names is None or not group_prompt_names else prompt_names(group_names, group_prompt_names, "group"),
        negative_prompt=negative_prompt,
        seed=seed,
        image_size=image_size,
        channels=channels,
        target=target,
        budget=budget,
    )


def plan_for_dataset(data: LabeledImages, strategy: str | Mapping = "fill-to-max", **options) -> SynthesisPlan:
    """A plan from a dataset's counts: per cell when it has groups (unless ``class-only``), else per class.

    The dataset's resolution and channels become the plan's output size unless given in
    ``options``; the other options are those of :func:`make_plan`.
    """
    grouped = data.groups is not None
    options.setdefault("image_size", data.size)
    options.setdefault("channels", data.channels)
    counts = data.cell_counts() if grouped else data.class_counts()
    return make_plan(counts, data.class_names, strategy, group_names=data.group_names if grouped else None, **options)


def overgenerate(plan: SynthesisPlan, factor: float) -> SynthesisPlan:
    """``plan`` making ``ceil(factor x n)`` images where it needed ``n``, with ``keep_counts = n``.

    Seeds derive from each image's index, so the first ``n`` images of every class (cell) are
    those ``plan`` would make; a filter then keeps the best ``n`` (:mod:`synaug.filters`).
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 100:
        raise SynaugError(f"over-generation factor {factor!r} must be a number from 1 to 100 (e.g. 2 makes twice the images needed).")
    if plan.keep_counts is not None:
        raise SynaugError("this plan is over-generated already; over-generate the original plan instead.")
    needed = plan.synthetic_counts
    return dataclasses.replace(plan, synthetic_counts=np.ceil(needed * float(factor) - 1e-9).astype(np.int64), keep_counts=needed.copy())


def split_budget(budget: int, deficits: np.ndarray) -> np.ndarray:
    """``budget`` images split in proportion to ``deficits`` by the largest-remainder rule.

    Each entry gets ``floor(budget * d / sum(d))``; the images left over go one each to the
    entries with the largest fractional parts, ties to the lower index. Sums exactly to ``budget``.
    """
    deficits = np.asarray(deficits, dtype=np.int64)
    total = int(deficits.sum())
    if budget < 0:
        raise SynaugError(f"budget {budget} is negative; give the total number of synthetic images to make.")
    if total == 0:
        if budget == 0:
            return np.zeros_like(deficits)
        raise SynaugError("every class is already as large as the largest, so there is no shortfall to split the budget by; use --strategy fill-to N instead.")
    # integer arithmetic: floor shares and remainders exactly, so ties are real ties
    shares = (budget * deficits) // total
    remainders = (budget * deficits) % total
    left = budget - int(shares.sum())
    order = np.lexsort((np.arange(deficits.size), -remainders.ravel()))
    shares.ravel()[order[:left]] += 1
    return shares


def derive_seed(run_seed: int, class_id: int, group_id: int | None, index: int, attempt: int = 0) -> int:
    """The seed of one image: numpy SeedSequence of (run seed, class, group, index, attempt), below 2**63."""
    entropy = [int(run_seed), int(class_id), 0 if group_id is None else int(group_id) + 1, int(index), int(attempt)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _prompt_sources(
    templates: Sequence[str] | None, set_name: str | None, descriptions: str | Path | Mapping | None,
    class_names: list[str], group_names: list[str] | None,
) -> tuple[list[str], dict[str, list[str]] | None]:
    """(templates, descriptions) of a plan from the one prompt source given (none: the default templates)."""
    given = [name for name, value in (("templates", templates), ("template_set", set_name), ("descriptions", descriptions)) if value]
    if len(given) > 1:
        raise SynaugError(f"give one source of prompts, not both {given[0]} and {given[1]}; drop one of them.")
    if set_name:
        return template_set(set_name, with_groups=group_names is not None), None
    if descriptions is None:
        return list(templates or []), None
    if isinstance(descriptions, Mapping):
        return [], check_descriptions(descriptions, class_names, group_names)
    return [], read_descriptions(descriptions, class_names, group_names)


def _check_parameters(strategy: str, target: int | None, budget: int | None) -> None:
    """The strategy's parameter is given (and only it)."""
    if strategy == "fill-to":
        if target is None:
            raise SynaugError("strategy fill-to needs a target count; pass --target N (e.g. 500).")
        if int(target) < 0:
            raise SynaugError(f"target {target} is negative; give the count every class is filled to.")
    elif target is not None:
        raise SynaugError(f"a target count is used only by strategy fill-to, not {strategy}; drop --target or use --strategy fill-to.")
    if strategy == "budget":
        if budget is None:
            raise SynaugError("strategy budget needs a total; pass --budget B (e.g. 3000).")
    elif budget is not None:
        raise SynaugError(f"a budget is used only by strategy budget, not {strategy}; drop --budget or use --strategy budget.")


def _from_final_counts(real: np.ndarray, class_names: list[str], group_names: list[str] | None, finals: Mapping) -> np.ndarray:
    """Synthetic counts = final count - real count for each listed class (or cell); 0 elsewhere."""
    synthetic = np.zeros_like(real)
    for key, final in finals.items():
        if group_names is None:
            position = (_position("class", key, class_names),)
            label = f"class '{class_names[position[0]]}'"
        else:
            if not isinstance(key, (tuple, list)) or len(key) != 2:
                raise SynaugError(f"final count key {key!r} must be a (class, group) pair for group data.")
            position = (_position("class", key[0], class_names), _position("group", key[1], group_names))
            label = f"cell ('{class_names[position[0]]}', '{group_names[position[1]]}')"
        have = int(real[position])
        if int(final) < have:
            raise SynaugError(f"{label} has {have} real images, above its target {int(final)}; over-sampling cannot remove images, so raise the target to at least {have}.")
        synthetic[position] = int(final) - have
    return synthetic


def _position(kind: str, key, names: list[str]) -> int:
    """Index of a class/group given by name (or by index)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= key < len(names):
            return int(key)
    elif str(key) in names:
        return names.index(str(key))
    plural = "classes" if kind == "class" else "groups"
    raise SynaugError(f"the plan names {kind} '{key}', which the dataset does not have; valid {plural}: {', '.join(names)}.")


def _check_known(kind: str, planned: Sequence[str], available: Sequence[str]) -> None:
    missing = [name for name in planned if name not in set(available)]
    if missing:
        plural = "classes" if kind == "class" else "groups"
        raise SynaugError(f"the plan names {kind} '{missing[0]}', which the dataset does not have (its {plural}: {', '.join(available)}); make the plan from this dataset.")
