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
    exemplars:  make each synthetic image from a real training image of its class (or cell):
                :class:`~synaug.generate.exemplars.ExemplarSpec` (source, strength, ip_adapter, ...)
    filter:     keep the best synthetic images of the fill store (the recipes that fill classes or cells):
                :class:`~synaug.filters.FilterSpec` (clip, classifier, thresholds, keep_best, overgenerate)
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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synaug.config import coerce_value, from_dict, load_yaml, to_dict
from synaug.data.groups import UTKFACE_AGE_BINS
from synaug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD
from synaug.data.registry import GROUP_KINDS
from synaug.errors import SynaugError
from synaug.filters.spec import FilterSpec
from synaug.generate.exemplars import ExemplarSpec
from synaug.guidance.feedback import DEFAULT_EVERY, DEFAULT_PATH, DEFAULT_SCALE, DEFAULT_START, DEFAULT_STOP
from synaug.pipeline.checks import check_run_config, nearest
from synaug.plan.prompts import PromptSources
from synaug.train.crt import CrtSettings
from synaug.train.dfr import DFR_C_GRID, DFR_RETRAINS
from synaug.train.group_dro import DRO_STEP_SIZE, DRO_WEIGHT_DECAY
from synaug.train.trainer import RECIPES as TRAIN_RECIPES
from synaug.train.trainer import TrainConfig

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
class PlanSection(PromptSources):
    """The synthesis plan (see :mod:`synaug.plan.planner`); ``template_set`` or ``descriptions``
    (:class:`~synaug.plan.prompts.PromptSources`) replace the templates. ``class_prompt_names`` renames classes
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
    own default. ``guidance_steps``: classifier-free guidance on the first N sampling steps only
    (None: the generator's default, every step unless it recommends fewer).
    ``device``/``dtype`` "auto": CUDA when available; bf16 where it runs natively.
    ``seed`` is the run seed every image's seed derives from. ``store``: generate into (or reuse)
    this store folder instead of one inside the output folder. ``allow_unknown_classes``: let an
    embedded generator draw classes it was not trained on (otherwise an error)."""

    spec: str = "embedded"
    scheduler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_steps: int | None = None
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
class CrtSection(CrtSettings):
    """Classifier re-training (:func:`synaug.train.retrain_classifier`) for the recipes that use it."""


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

    many_threshold: int = MANY_THRESHOLD
    few_threshold: int = FEW_THRESHOLD
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
    start: float = DEFAULT_START
    stop: float = DEFAULT_STOP
    path: str = DEFAULT_PATH
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
    exemplars: ExemplarSpec = field(default_factory=ExemplarSpec)
    filter: FilterSpec = field(default_factory=FilterSpec)
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
        raise SynaugError(f"{where}: unknown train.recipe '{recipe}'{nearest(recipe, TRAIN_RECIPES)}; choose one of {', '.join(TRAIN_RECIPES)}.")
    base = {k: v for k, v in to_dict(TRAIN_RECIPES[recipe]).items() if k not in MIXING_FIELDS and k != "seed"}
    return {**base, **train}


def dump_run_config(config: RunConfig) -> str:
    """The config as YAML text (a file `synaug run` reads back to the same config)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


# ---- helpers -------------------------------------------------------------------------------
_SECTIONS = {
    "data": DataSection, "plan": PlanSection, "generator": GeneratorSection, "train": TrainSection,
    "crt": CrtSection, "group_dro": GroupDroSection, "dfr": DfrSection, "evaluate": EvaluateSection,
    "runs": RunsSection, "feedback": FeedbackSection, "exemplars": ExemplarSpec, "filter": FilterSpec,
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
