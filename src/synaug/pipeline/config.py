"""The run config of `synaug run`: one YAML file with one section per stage.

::

    data:       which dataset, its long-tailed draw (or an index file), the test (and validation) split
    plan:       how many synthetic images per class (or class x group cell), and their prompts
    generator:  which generator samples them, with which sampler settings
    train:      TrainConfig fields (optionally starting from a named ``recipe``)
    crt:        classifier re-training settings
    group_dro:  Group-DRO settings of the ``group_dro`` recipe
    dfr:        DFR settings of the ``dfr`` and ``synaug_dfr`` recipes
    evaluate:   many / medium / few thresholds
    runs:       the recipes to run (see :mod:`synaug.pipeline.ablations`) and the seeds
    feedback:   feedback-guided synthesis of the ``fg`` recipe: criteria, guidance, budgets, classifier
                (the budgets also make the unguided ``fill_budget`` control rows)
    output:     the output folder

**Group data.** Group-annotated kinds (``waterbirds``, ``utkface``, ``nico``,
``spurious-fashion-mnist``, or ``imagefolder`` with ``data.groups_csv``) make a *group run*:
the group recipes (``erm``, ``synaug_class``, ``synaug_group``, ``group_dro``, ``dfr``,
``synaug_dfr``) become available and every recipe is scored per (class, group) cell on the test
split (worst-group accuracy, means, fairness gaps). ``data.val_split`` names the held-out split
DFR re-trains on. ``plan.cells`` decides the cells of the plan the class recipes (``fill``,
``fill_mixup``, ``synaug``) fill: ``class`` (SYNAuG's class-level uniformization, prompts from
``plan.templates``, without a group) or ``class-group`` (every class x group cell filled to the
same count, prompts from ``plan.group_templates`` with ``{context}``); ``synaug_class`` and
``synaug_group`` fix their own cells.

Every key is checked when the file is read, before any work: an unknown key names the
nearest valid one, and out-of-range values (a negative Mixup alpha, a substitution
fraction above 1, ...) are one-line errors. Relative paths are relative to the working
directory.

``train.mixup_alpha``, ``cutmix_alpha``, ``mix_prob`` and ``domain_mixup`` describe the mixing
of the recipes that use Mixup (``fill_mixup``, ``synaug``, ``replace``, ``substitute``, ``fg``, ``fill_budget``); the
other recipes train without mixing. The training seed comes from ``runs.seeds``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from synaug.config import coerce_value, from_dict, load_yaml, to_dict
from synaug.data.groups import NICO_LAYOUTS, UTKFACE_AGE_BINS, UTKFACE_ATTRIBUTES, _check_age_bins
from synaug.data.longtail import PROFILES
from synaug.data.registry import DATASET_KINDS, GROUP_KINDS
from synaug.data.spurious import MIN_MAJORITY
from synaug.errors import SynaugError
from synaug.guidance.criteria import CRITERIA
from synaug.guidance.feedback import DEFAULT_EVERY, DEFAULT_SCALE, GRADIENT_PATHS
from synaug.pipeline.ablations import CLASS_ONLY_RECIPES, GROUP_RECIPES, PLAN_CELLS, RECIPES, SHOT_GROUP_NAMES
from synaug.plan.planner import STRATEGIES, make_plan
from synaug.plan.prompts import GROUP_FIELDS, check_templates, template_fields
from synaug.train.crt import SOURCES
from synaug.train.dfr import DFR_C_GRID, DFR_RETRAINS
from synaug.train.group_dro import DRO_STEP_SIZE, DRO_WEIGHT_DECAY
from synaug.train.trainer import RECIPES as TRAIN_RECIPES
from synaug.train.trainer import TrainConfig

FEEDBACK_CLASSIFIERS = ("ce", "ce_crt")  # the run's own models a feedback.classifier may name
GENERATOR_DTYPES = ("auto", "fp32", "fp16", "bf16")
MIXING_FIELDS = ("mixup_alpha", "cutmix_alpha", "mix_prob", "domain_mixup")


@dataclass
class LongtailSection:
    """An LDAM-style long-tailed draw (see :func:`synaug.data.longtail.make_longtail`).

    ``max_per_class`` None: the smallest class available in the pool. ``reserve``: the
    fraction never drawn (kept for generator training); None means 0.5 for Fashion-MNIST
    train (the half the embedded generator was trained on) and 0 otherwise.
    """

    imbalance_factor: float = 100.0
    max_per_class: int | None = None
    profile: str = "exp"
    step_fraction: float = 0.5
    seed: int = 0
    reserve: float | None = None


@dataclass
class SpuriousSection:
    """The spurious-correlation benchmark of kind ``spurious-fashion-mnist`` (see
    :func:`synaug.data.spurious.spurious_fashion_mnist`): its long tail over classes, the share
    of each class on its majority context, images per (class, context) cell of val and test.
    ``binary``: train and score the binary target (red-majority vs blue-majority class), the
    variant whose fairness gaps are the binary equalized-odds and demographic-parity differences;
    plans still fill the ten item classes (prompts name the item)."""

    imbalance_factor: float = 10.0
    max_per_class: int = 500
    majority: float = 0.95
    per_cell_val: int = 50
    per_cell_test: int = 500
    seed: int = 0
    binary: bool = False


@dataclass
class UtkfaceSection:
    """UTKFace labels (see :func:`synaug.data.groups.load_utkface`): the ``target`` the classifier
    predicts and the ``sensitive`` attribute that forms the groups, among age, gender and race."""

    target: str = "gender"
    sensitive: str = "race"
    age_bins: list[int] = field(default_factory=lambda: list(UTKFACE_AGE_BINS))
    skip_malformed: bool = False


@dataclass
class NicoSection:
    """NICO++ folder layout: ``context/class`` or ``class/context``."""

    layout: str = "context/class"


@dataclass
class DataSection:
    """The real data: ``kind`` as in :func:`synaug.data.load_dataset`, then a long-tailed draw
    (``longtail``), a subset stored in an index file (``index``), or the whole ``split``.

    Group data: ``val_split`` names the held-out split of DFR; ``groups_csv`` (and
    ``val_groups_csv``, ``test_groups_csv``) give ``imagefolder`` images a group (``path,group``
    rows, paths relative to the split's folder); ``spurious``, ``utkface`` and ``nico`` hold the
    options of those kinds.
    """

    kind: str = "fashion-mnist"
    root: str | None = None
    split: str = "train"
    list_file: str | None = None
    size: int | None = None
    channels: int | None = None
    longtail: LongtailSection | None = None
    index: str | None = None
    test_split: str = "test"
    test_list_file: str | None = None
    val_split: str | None = None
    groups_csv: str | None = None
    val_groups_csv: str | None = None
    test_groups_csv: str | None = None
    spurious: SpuriousSection | None = None
    utkface: UtkfaceSection | None = None
    nico: NicoSection | None = None

    @property
    def grouped(self) -> bool:
        """Whether the data carries group labels (a group run)."""
        return self.kind in GROUP_KINDS or (self.kind == "imagefolder" and self.groups_csv is not None)

    def loader_options(self) -> dict[str, Any]:
        """The keyword arguments of the kind's loader (:data:`synaug.data.registry.LOADER_OPTIONS`)."""
        if self.kind == "spurious-fashion-mnist":
            return {k: v for k, v in to_dict(self.spurious or SpuriousSection()).items() if k != "binary"}
        if self.kind == "utkface":
            return to_dict(self.utkface or UtkfaceSection())
        if self.kind == "nico":
            return to_dict(self.nico or NicoSection())
        return {}

    @property
    def binary(self) -> bool:
        """Whether the run trains and scores the spurious benchmark's binary target."""
        return self.kind == "spurious-fashion-mnist" and self.spurious is not None and self.spurious.binary


@dataclass
class PlanSection:
    """The synthesis plan (see :mod:`synaug.plan.planner`). ``class_prompt_names`` renames classes
    in prompts: a mapping ``{class name: prompt name}``, or the path of a text file with one
    prompt name per line in label order (e.g. ImageNet's class names).

    Group data: ``cells`` is ``class`` or ``class-group`` (see the module doc);
    ``group_templates`` are the prompts of class x group plans (each with ``{context}``),
    ``group_prompt_names`` renames groups in them (``{water: lake}``).
    """

    strategy: str = "fill-to-max"
    target: int | None = None
    budget: int | None = None
    templates: list[str] = field(default_factory=list)
    class_prompt_names: dict[str, str] | str | None = None
    negative_prompt: str | None = None
    cells: str = "class"
    group_templates: list[str] = field(default_factory=list)
    group_prompt_names: dict[str, str] | None = None


@dataclass
class GeneratorSection:
    """The generator and its sampler. ``spec``: "embedded", an embedded-generator folder, a
    Stable Diffusion folder or hub id, or python:MODULE:FUNCTION. None means the generator's
    own default. ``device``/``dtype`` "auto": CUDA when available; bf16 where it runs natively.
    ``seed`` is the run seed every image's seed derives from. ``store``: generate into (or reuse)
    this store folder instead of one inside the output folder. ``allow_unknown_classes``: let an
    embedded generator draw classes it was not trained on (otherwise an error)."""

    spec: str = "embedded"
    scheduler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | None = None
    seed: int = 0
    store: str | None = None
    allow_unknown_classes: bool = False


@dataclass
class TrainSection(TrainConfig):
    """:class:`~synaug.train.TrainConfig` fields, starting from the named ``recipe`` when given.

    The mixing fields describe the Mixup of the recipes that mix (default Mixup with alpha 1).
    """

    recipe: str | None = None
    mixup_alpha: float = 1.0

    def train_config(self, seed: int, mixing: bool) -> TrainConfig:
        """The TrainConfig of one run: this section with ``seed``, mixing on or off."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        values["seed"] = seed
        if not mixing:
            values.update(mixup_alpha=0.0, cutmix_alpha=0.0, domain_mixup=False)
        return TrainConfig(**values)


@dataclass
class CrtSection:
    """Classifier re-training (:func:`synaug.train.retrain_classifier`) for the recipes that use it."""

    source: str = "real"
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 128
    weight_decay: float = 5e-4


@dataclass
class GroupDroSection:
    """Group-DRO (:func:`synaug.train.group_dro.train_group_dro`) of the ``group_dro`` recipe: the
    exponentiated-gradient ``step_size``, the group ``adjustment`` C and the ``weight_decay``
    that replaces the train section's (Group-DRO needs strong regularisation)."""

    step_size: float = DRO_STEP_SIZE
    adjustment: float = 0.0
    weight_decay: float = DRO_WEIGHT_DECAY


@dataclass
class DfrSection:
    """DFR (:func:`synaug.train.dfr.dfr_retrain`) of ``dfr`` and ``synaug_dfr``: the inverse L1
    strengths tried on the validation split and the number of fits averaged for the last layer."""

    c_grid: list[float] = field(default_factory=lambda: list(DFR_C_GRID))
    retrains: int = DFR_RETRAINS


@dataclass
class EvaluateSection:
    """Shot groups by *real* long-tailed training count: many > ``many_threshold``, few < ``few_threshold``."""

    many_threshold: int = 100
    few_threshold: int = 20
    batch_size: int = 500


@dataclass
class RunsSection:
    """Which recipes to run and with which training seeds.

    ``replace_classes``: the classes the ``replace`` recipe gives synthetic images only, a shot
    group ("few", "medium", "many") or a list of class names. ``substitute_fraction``: the share
    of every class's real images the ``substitute`` recipe swaps for synthetic ones.
    """

    recipes: list[str] = field(default_factory=lambda: ["ce_crt", "synaug"])
    seeds: list[int] = field(default_factory=lambda: [0])
    replace_classes: str | list[str] = "few"
    substitute_fraction: float = 0.5


@dataclass
class FeedbackSection:
    """Feedback-guided synthesis (FG) for the ``fg`` recipe: one store per criterion and budget.

    ``criteria``: registered criteria (:data:`synaug.guidance.CRITERIA`). ``scale``, ``every``,
    ``start``, ``stop``, ``path``: the guidance step as a fraction of the latents' norm, guide
    every k-th sampling step within the window [start, stop) of the steps (as fractions), gradient
    path x0 or full (see :mod:`synaug.guidance.feedback`). ``budgets``: fractions of the fill
    plan's synthetic images. ``classifier``: ``ce`` (or null) for the CE model this run trains on
    the real long tail with the first of ``runs.seeds``, ``ce_crt`` for that model after cRT (its
    classifier re-trained class-balanced), or a checkpoint folder of `synaug train`. (``hardness``
    reads only the backbone's features, which cRT leaves unchanged: ``ce`` and ``ce_crt`` guide
    it alike.)
    """

    criteria: list[str] = field(default_factory=lambda: ["entropy"])
    scale: float = DEFAULT_SCALE
    every: int = DEFAULT_EVERY
    start: float = 0.0
    stop: float = 1.0
    path: str = "x0"
    budgets: list[float] = field(default_factory=lambda: [1.0, 0.5])
    classifier: str | None = None


@dataclass
class RunConfig:
    """A whole `synaug run` config."""

    data: DataSection = field(default_factory=DataSection)
    plan: PlanSection = field(default_factory=PlanSection)
    generator: GeneratorSection = field(default_factory=GeneratorSection)
    train: TrainSection = field(default_factory=TrainSection)
    crt: CrtSection = field(default_factory=CrtSection)
    group_dro: GroupDroSection = field(default_factory=GroupDroSection)
    dfr: DfrSection = field(default_factory=DfrSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    runs: RunsSection = field(default_factory=RunsSection)
    feedback: FeedbackSection = field(default_factory=FeedbackSection)
    output: str = "synaug-run"

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def load_run_config(path: str | Path) -> tuple[RunConfig, str]:
    """The config in YAML file ``path`` (checked) and the file's text."""
    path = Path(path)
    values = load_yaml(path)
    if not values:  # every default would start a long run on the whole of Fashion-MNIST
        raise SynaugError(f"config file {path} is empty; write a run config (the ones in configs/ are ready to copy and edit).")
    return parse_run_config(values, where=str(path)), path.read_text()


def parse_run_config(values: dict[str, Any], where: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a mapping, every key and value checked (see the module doc)."""
    values = dict(values or {})
    sections: dict[str, Any] = {}
    for name, section_type in _SECTIONS.items():
        raw = values.get(name)
        if raw is not None and not isinstance(raw, dict):
            raise SynaugError(f"{where}: '{name}' must be a mapping of keys to values, not {raw!r}.")
        if name == "train":
            raw = _with_train_recipe(dict(raw or {}), where)
        try:
            sections[name] = from_dict(section_type, raw, where=name)
        except SynaugError as exc:
            message = str(exc)
            raise SynaugError(f"{where}: {message if message.startswith('unknown key') else f'{name}: {message}'}") from None
    try:
        config = from_dict(RunConfig, {**values, **sections}, where="config")
    except SynaugError as exc:
        raise SynaugError(f"{where}: {str(exc).replace('config.', '', 1)}") from None
    _check_types(config, where)
    check_run_config(config, where)
    return config


def _with_train_recipe(train: dict[str, Any], where: str) -> dict[str, Any]:
    """The train section over its named recipe's values (all but the mixing fields and the seed)."""
    if "seed" in train:
        raise SynaugError(f"{where}: train.seed is set per run from runs.seeds; remove it and list the seeds under runs.seeds.")
    recipe = train.get("recipe")
    if recipe is None:
        return train
    if recipe not in TRAIN_RECIPES:
        raise SynaugError(f"{where}: unknown train.recipe '{recipe}'{_nearest(recipe, TRAIN_RECIPES)}; choose one of {', '.join(TRAIN_RECIPES)}.")
    base = {k: v for k, v in to_dict(TRAIN_RECIPES[recipe]).items() if k not in MIXING_FIELDS and k != "seed"}
    return {**base, **train}


def dump_run_config(config: RunConfig) -> str:
    """The config as YAML text (a file `synaug run` reads back to the same config)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def check_run_config(config: RunConfig, where: str = "config") -> None:
    """One-line errors for values out of range or inconsistent between sections."""
    data, longtail = config.data, config.data.longtail
    _choice(f"{where}: data.kind", data.kind, DATASET_KINDS)
    if data.index is not None and longtail is not None:
        raise SynaugError(f"{where}: give either data.index or data.longtail, not both; the index already names a subset.")
    if longtail is not None:
        _choice(f"{where}: data.longtail.profile", longtail.profile, PROFILES)
        if longtail.imbalance_factor < 1:
            raise SynaugError(f"{where}: data.longtail.imbalance_factor {longtail.imbalance_factor} is below 1; give the ratio of the largest to the smallest class, e.g. 100.")
        if longtail.reserve is not None and not 0 <= longtail.reserve < 1:
            raise SynaugError(f"{where}: data.longtail.reserve {longtail.reserve} must be a fraction in [0, 1).")
        if longtail.max_per_class is not None and longtail.max_per_class < 1:
            raise SynaugError(f"{where}: data.longtail.max_per_class must be at least 1.")
    if data.kind == "split-list" and data.list_file is None and data.index is None:
        raise SynaugError(f"{where}: data.kind split-list needs data.list_file (the `path label` file of the training images).")
    _check_group_data(data, where)

    plan = config.plan
    _choice(f"{where}: plan.strategy", plan.strategy, STRATEGIES)
    for key, strategy in (("target", "fill-to"), ("budget", "budget")):
        if plan.strategy == strategy and getattr(plan, key) is None:
            raise SynaugError(f"{where}: plan.strategy {strategy} needs plan.{key}; give it (e.g. {key}: 500).")
        if plan.strategy != strategy and getattr(plan, key) is not None:
            raise SynaugError(f"{where}: plan.{key} is used only by plan.strategy {strategy}; remove it or change the strategy.")
    try:  # the planner's own checks of strategy parameters and templates, on two dummy classes
        make_plan(np.array([2, 1]), ["a", "b"], plan.strategy, target=plan.target, budget=plan.budget, templates=plan.templates)
        if plan.group_templates:
            check_templates(plan.group_templates, with_groups=True)
    except SynaugError as exc:
        raise SynaugError(f"{where}: plan: {exc}") from None
    _choice(f"{where}: plan.cells", plan.cells, PLAN_CELLS)
    for template in plan.group_templates:
        if not set(template_fields(template)) & set(GROUP_FIELDS):
            raise SynaugError(
                f"{where}: plan.group_templates '{template}' names no group; class x group prompts need {{context}}, "
                "e.g. 'a photo of a {class} on a {context} background'."
            )

    generator = config.generator
    from synaug.generate.pipeline import make_scheduler

    if generator.scheduler is not None:
        try:
            make_scheduler(generator.scheduler, {})
        except SynaugError as exc:
            raise SynaugError(f"{where}: generator.scheduler: {exc}") from None
    _choice(f"{where}: generator.dtype", generator.dtype, GENERATOR_DTYPES)
    for name in ("steps", "batch_size"):
        value = getattr(generator, name)
        if value is not None and value < 1:
            raise SynaugError(f"{where}: generator.{name} must be at least 1, got {value}.")
    if generator.guidance is not None and generator.guidance < 0:
        raise SynaugError(f"{where}: generator.guidance must be 0 or more, got {generator.guidance}.")
    if generator.seed < 0:
        raise SynaugError(f"{where}: generator.seed must be a non-negative integer.")

    crt = config.crt
    _choice(f"{where}: crt.source", crt.source, SOURCES)
    if crt.epochs < 1 or crt.batch_size < 1 or crt.lr <= 0 or crt.weight_decay < 0:
        raise SynaugError(f"{where}: crt needs epochs >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0.")

    dro, dfr = config.group_dro, config.dfr
    if dro.step_size < 0 or dro.adjustment < 0 or dro.weight_decay < 0:
        raise SynaugError(f"{where}: group_dro needs step_size, adjustment and weight_decay >= 0 (the defaults are {DRO_STEP_SIZE}, 0 and {DRO_WEIGHT_DECAY}).")
    if not dfr.c_grid or min(dfr.c_grid) <= 0 or dfr.retrains < 1:
        raise SynaugError(f"{where}: dfr needs a non-empty c_grid of values > 0 and retrains >= 1, e.g. c_grid: {list(DFR_C_GRID)}.")

    evaluate = config.evaluate
    if evaluate.few_threshold > evaluate.many_threshold:
        raise SynaugError(f"{where}: evaluate.few_threshold {evaluate.few_threshold} exceeds evaluate.many_threshold {evaluate.many_threshold}; swap them.")
    if evaluate.batch_size < 1:
        raise SynaugError(f"{where}: evaluate.batch_size must be at least 1.")

    runs = config.runs
    if not runs.recipes:
        raise SynaugError(f"{where}: runs.recipes is empty; list at least one of {', '.join(RECIPES)}.")
    for name in runs.recipes:
        if name not in RECIPES:
            raise SynaugError(f"{where}: unknown recipe '{name}' in runs.recipes{_nearest(name, RECIPES)}; choose from {', '.join(RECIPES)}.")
    if len(set(runs.recipes)) != len(runs.recipes):
        raise SynaugError(f"{where}: runs.recipes lists a recipe twice; list each once.")
    _check_group_recipes(config, where)
    if not runs.seeds or len(set(runs.seeds)) != len(runs.seeds) or min(runs.seeds) < 0:
        raise SynaugError(f"{where}: runs.seeds must list distinct non-negative integers, e.g. [0, 1, 2].")
    if not 0 < runs.substitute_fraction <= 1:
        raise SynaugError(f"{where}: runs.substitute_fraction {runs.substitute_fraction:g} must be a ratio in (0, 1]; 0.5 swaps half of each class's real images.")
    if isinstance(runs.replace_classes, str) and runs.replace_classes not in SHOT_GROUP_NAMES:
        raise SynaugError(f"{where}: runs.replace_classes '{runs.replace_classes}' must be one of {', '.join(SHOT_GROUP_NAMES)} or a list of class names.")
    if isinstance(runs.replace_classes, list) and not runs.replace_classes:
        raise SynaugError(f"{where}: runs.replace_classes is empty; name at least one class or use 'few'.")

    mixing = [name for name in runs.recipes if RECIPES[name].mixup]
    if mixing and config.train.mixup_alpha == 0 and config.train.cutmix_alpha == 0:
        raise SynaugError(
            f"{where}: recipe '{mixing[0]}' uses Mixup but train.mixup_alpha and train.cutmix_alpha are 0; set one (e.g. mixup_alpha: 1.0)."
        )
    if "oracle" in runs.recipes and longtail is None and data.index is None:
        raise SynaugError(
            f"{where}: recipe 'oracle' draws a balanced real set from the pool a long tail was drawn from; "
            "give data.longtail (or data.index), or remove 'oracle' from runs.recipes."
        )
    _check_feedback(config.feedback, any(RECIPES[name].guided for name in runs.recipes), where)
    if "fill_budget" in runs.recipes and not any(budget < 1 for budget in config.feedback.budgets):
        raise SynaugError(f"{where}: recipe 'fill_budget' needs a feedback budget below 1.0 (at 1.0 it is 'synaug'); add one, e.g. feedback.budgets: [1.0, 0.5].")


def _check_group_data(data: DataSection, where: str) -> None:
    """One-line errors for the group options of the data section."""
    for key, kind in (("spurious", "spurious-fashion-mnist"), ("utkface", "utkface"), ("nico", "nico")):
        if getattr(data, key) is not None and data.kind != kind:
            raise SynaugError(f"{where}: data.{key} holds options of data.kind {kind}, not {data.kind}; remove it or set data.kind: {kind}.")
    for key in ("groups_csv", "val_groups_csv", "test_groups_csv"):
        if getattr(data, key) is not None and data.kind != "imagefolder":
            raise SynaugError(f"{where}: data.{key} gives imagefolder images a group; {data.kind} data carries its own groups, so remove it.")
    if data.groups_csv is None and (data.val_groups_csv or data.test_groups_csv):
        raise SynaugError(f"{where}: data.val_groups_csv / test_groups_csv need data.groups_csv for the training split; give it too.")
    if data.kind == "imagefolder" and data.groups_csv is not None and data.test_groups_csv is None:
        raise SynaugError(f"{where}: imagefolder data with data.groups_csv needs data.test_groups_csv (the groups of the test images).")
    if data.kind == "imagefolder" and data.groups_csv is not None and data.val_split is not None and data.val_groups_csv is None:
        raise SynaugError(f"{where}: data.val_split {data.val_split} needs data.val_groups_csv (the groups of the validation images).")
    if data.val_split is not None and not data.grouped:
        raise SynaugError(f"{where}: data.val_split is the group-balanced split of DFR; {data.kind} data has no groups, so remove it.")
    if data.kind == "spurious-fashion-mnist":
        if data.longtail is not None or data.index is not None:
            raise SynaugError(f"{where}: spurious-fashion-mnist draws its own long tail; remove data.longtail / data.index and set data.spurious.imbalance_factor and max_per_class.")
        spurious = data.spurious or SpuriousSection()
        if not MIN_MAJORITY <= spurious.majority <= 1:
            raise SynaugError(f"{where}: data.spurious.majority {spurious.majority:g} must lie in [{MIN_MAJORITY}, 1], e.g. 0.95.")
        if spurious.imbalance_factor < 1 or min(spurious.max_per_class, spurious.per_cell_val, spurious.per_cell_test) < 1:
            raise SynaugError(f"{where}: data.spurious needs imbalance_factor >= 1 and max_per_class, per_cell_val, per_cell_test >= 1.")
    if data.utkface is not None:
        for role in ("target", "sensitive"):
            _choice(f"{where}: data.utkface.{role}", getattr(data.utkface, role), UTKFACE_ATTRIBUTES)
        if data.utkface.target == data.utkface.sensitive:
            raise SynaugError(f"{where}: data.utkface.target and sensitive are both '{data.utkface.target}'; choose two different attributes.")
        try:
            _check_age_bins(data.utkface.age_bins)
        except SynaugError as exc:
            raise SynaugError(f"{where}: data.utkface: {exc}") from None
    if data.nico is not None:
        _choice(f"{where}: data.nico.layout", data.nico.layout, NICO_LAYOUTS)


def _check_group_recipes(config: RunConfig, where: str) -> None:
    """Group recipes need group data (and DFR a validation split); some class recipes need class data."""
    data, runs = config.data, config.runs
    fix = "use a group-annotated data.kind (waterbirds, utkface, nico, spurious-fashion-mnist) or imagefolder with data.groups_csv"
    if config.plan.cells == "class-group" and not data.grouped:
        raise SynaugError(f"{where}: plan.cells class-group fills class x group cells, but {data.kind} data has no groups; set plan.cells: class or {fix}.")
    for name in runs.recipes:
        if name in GROUP_RECIPES and not data.grouped:
            raise SynaugError(f"{where}: recipe '{name}' needs group labels, and {data.kind} data has none; {fix}, or remove '{name}'.")
        if name in CLASS_ONLY_RECIPES and data.grouped:
            raise SynaugError(
                f"{where}: recipe '{name}' is for class-imbalance runs, not group data; "
                f"use {', '.join(GROUP_RECIPES)} (or ce, ce_crt, fill, fill_mixup, synaug)."
            )
        if RECIPES[name].dfr and data.val_split is None:
            raise SynaugError(f"{where}: recipe '{name}' re-trains the last layer on the group-balanced validation split; set data.val_split (e.g. val).")
    cells = {RECIPES[name].cells or config.plan.cells for name in runs.recipes if RECIPES[name].uses_synthetic}
    if config.generator.store is not None and len(cells) > 1:
        raise SynaugError(
            f"{where}: generator.store holds one plan's images, and these recipes fill both classes and class x group cells; "
            "remove generator.store (each plan gets a store in the output folder)."
        )


def _check_feedback(feedback: FeedbackSection, used: bool, where: str) -> None:
    """One-line errors for the feedback section (the classifier folder only when an FG recipe runs)."""
    if not feedback.criteria or len(set(feedback.criteria)) != len(feedback.criteria):
        raise SynaugError(f"{where}: feedback.criteria must list distinct criteria, e.g. [entropy, loss, hardness].")
    for name in feedback.criteria:
        _choice(f"{where}: feedback criterion", name, sorted(CRITERIA))
    if not 0 <= feedback.scale < float("inf"):
        raise SynaugError(f"{where}: feedback.scale {feedback.scale:g} must be a non-negative number; the paper uses {DEFAULT_SCALE}.")
    if feedback.every < 1:
        raise SynaugError(f"{where}: feedback.every must be at least 1 (1 guides every sampling step), got {feedback.every}.")
    _choice(f"{where}: feedback.path", feedback.path, GRADIENT_PATHS)
    if not feedback.budgets or len(set(feedback.budgets)) != len(feedback.budgets):
        raise SynaugError(f"{where}: feedback.budgets must list distinct fractions of SYNAuG's synthetic images, e.g. [1.0, 0.5].")
    for budget in feedback.budgets:
        if not 0 < budget <= 1:
            raise SynaugError(f"{where}: feedback budget {budget:g} must be a fraction in (0, 1]; 1.0 is SYNAuG's budget, 0.5 half of it.")
    if not 0 <= feedback.start < feedback.stop <= 1:
        raise SynaugError(
            f"{where}: feedback.start {feedback.start:g} and feedback.stop {feedback.stop:g} must satisfy 0 <= start < stop <= 1 "
            "(fractions of the sampling steps; 0 and 1 guide the whole run)."
        )
    named = feedback.classifier in (None, *FEEDBACK_CLASSIFIERS)
    if used and not named and not Path(feedback.classifier).expanduser().is_dir():
        raise SynaugError(
            f"{where}: feedback.classifier {feedback.classifier} is not a folder; give the checkpoint folder `synaug train` wrote "
            f"(OUT/checkpoint), or one of {', '.join(FEEDBACK_CLASSIFIERS)} for the run's own model."
        )


# ---- helpers -------------------------------------------------------------------------------
_SECTIONS = {
    "data": DataSection, "plan": PlanSection, "generator": GeneratorSection, "train": TrainSection,
    "crt": CrtSection, "group_dro": GroupDroSection, "dfr": DfrSection, "evaluate": EvaluateSection,
    "runs": RunsSection, "feedback": FeedbackSection,
}


def _check_types(obj: Any, where: str, prefix: str = "") -> None:
    """Check (and convert, int -> float) every scalar field of a dataclass tree against its type hint."""
    hints = typing.get_type_hints(type(obj))
    for item in dataclasses.fields(obj):
        value = getattr(obj, item.name)
        name = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            _check_types(value, where, f"{name}.")
            continue
        if isinstance(obj, TrainConfig) and item.name in {f.name for f in dataclasses.fields(TrainConfig)}:
            continue  # TrainConfig checks its own fields
        setattr(obj, item.name, coerce_value(value, hints[item.name], f"{where}: {name}"))


def _choice(where: str, value: str, options: tuple[str, ...] | list[str]) -> None:
    if value not in options:
        raise SynaugError(f"{where} '{value}' is unknown{_nearest(value, options)}; choose one of {', '.join(options)}.")


def _nearest(value: Any, options) -> str:
    near = difflib.get_close_matches(str(value), list(options), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


