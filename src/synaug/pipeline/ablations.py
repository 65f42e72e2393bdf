"""The recipes of the SYNAuG paper's ablation set and of group robustness, and the training sets they train on.

A recipe names a training set, whether the recipe mixes (Mixup/CutMix as set in the
config's ``train`` section) and whether the classifier is re-trained afterwards (cRT):

============ ============== ===== ===== ===================================================
recipe       training set   mix   cRT   what it shows
============ ============== ===== ===== ===================================================
ce           lt             no    no    cross-entropy on the long-tailed real data
ce_crt       lt             no    yes   the strongest recipe without synthetic data
fill         fill           no    no    uniformized with synthetic images, no Mixup
fill_mixup   fill           yes   no    ... with Mixup
synaug       fill           yes   yes   SYNAuG: fill + Mixup + cRT on the real images
replace      replace        yes   no    chosen classes' real images replaced by synthetic
substitute   substitute     yes   no    a fraction of every class's real images substituted
oracle       oracle         no    no    balanced *real* data of the uniformized size
fg           fill (guided)  yes   yes   feedback-guided synthesis (FG) + Mixup + cRT
fill_budget  fill (budget)  yes   yes   FG's control: SYNAuG on the same number of unguided images
============ ============== ===== ===== ===================================================

Group recipes (group data only, see :mod:`synaug.pipeline.config`; scored per (class,
group) cell, the last layer re-trained by cRT or by DFR on the group-balanced validation split):

============ ============== ===== ===== ===================================================
recipe       training set   mix   last  what it shows
============ ============== ===== ===== ===================================================
erm          lt             no    –     ERM: cross-entropy on the real data (= ``ce``)
synaug_class fill, classes  yes   cRT   SYNAuG's class-level fill, groups ignored
synaug_group fill, cells    yes   cRT   group-uniform SYNAuG: every class x group cell filled
group_dro    lt             no    –     Group-DRO on the real data
dfr          lt             no    DFR   ERM + DFR
synaug_dfr   fill, cells    yes   DFR   the group-uniform SYNAuG model + DFR
============ ============== ===== ===== ===================================================

``synaug_class``'s plan fills every class to the largest class with prompts that name the
class only (``plan.templates``), as SYNAuG's class-level uniformization does: the generator's
prior chooses the context and the images carry no group label. ``synaug_group``'s plan fills
every (class, group) cell to the largest cell with prompts that name the group
(``plan.group_templates``). The class recipes ``fill``, ``fill_mixup`` and ``synaug`` fill the
cells of ``plan.cells``.

``fg`` is SYNAuG's training with a feedback-guided store in place of the fill store; it
expands into one row per criterion of ``feedback.criteria`` and budget of ``feedback.budgets``
(:func:`expand_recipes`), named ``fg-<criterion>-<budget>`` and labelled e.g. "FG entropy
(budget 1.0)" or "FG loss (budget 0.5)". A budget is a fraction of the fill plan's synthetic
images, split over the classes by their shortfall (:func:`synaug.guidance.budget_plan`): at
1.0 the same images per class as SYNAuG, at 0.5 half of them. The images keep the fill plan's
prompts and seeds, so only the guidance (and the count) differs from SYNAuG's store.

``fill_budget`` is the control that separates the count from the guidance: SYNAuG's training
on *unguided* images of each budget below 1.0 (at 1.0 it is ``synaug`` itself), named
``fill_budget-<budget>``. It generates nothing: it takes the first images per class of SYNAuG's
store, as many as the budget plan gives the class — the very images that plan would make (same
prompts and seeds) — so an FG row and the control of its budget differ only by the guidance.

Training sets (all built from the long-tailed real set ``lt``, the store ``fill`` of the
fill plan and, for ``replace``/``substitute``, an ``extra`` store of further synthetic
images drawn with other seeds):

- ``fill``: lt + every synthetic image of the fill plan; every class reaches the same count.
- ``replace``: like ``fill``, but the chosen classes keep no real image; each of their
  ``n_real`` real images is replaced by one more synthetic image, so class counts equal
  ``fill``'s. Compare with ``fill_mixup``.
- ``substitute``: like ``fill``, but in every class ``round(fraction * n_real)`` real images
  (drawn with the long-tail seed) are swapped for as many extra synthetic images, so class
  counts equal ``fill``'s with a uniformly smaller real share. Compare with ``fill_mixup``.
- ``oracle``: ``max(n_real)`` real images of every class from the pool the long tail was
  drawn from (for Fashion-MNIST-LT: 500 per class from the pool half); the long-tailed set
  is nested in it.

Runs with the same training set and settings share one training: ``ce_crt`` re-trains the
classifier of the ``ce`` model, ``synaug`` that of the ``fill_mixup`` model, and the ``ce``
model of the first seed is also the default feedback classifier of the ``fg`` rows. On group
data ``erm`` is ``ce``'s training, ``dfr`` re-trains its last layer and ``synaug_dfr`` that of
``synaug_group``'s model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.data.longtail import shot_groups
from synaug.errors import SynaugError

TRAINING_SETS = ("lt", "fill", "replace", "substitute", "oracle")
SHOT_GROUP_NAMES = ("few", "medium", "many")
PLAN_CELLS = ("class", "class-group")
OBJECTIVES = ("ce", "group_dro")


@dataclass(frozen=True)
class Guidance:
    """What sets a budgeted row's synthetic store apart: its feedback criterion (None: unguided) and budget fraction."""

    criterion: str | None
    budget: float


@dataclass(frozen=True)
class Recipe:
    """One row of the results table: a training set, mixing on or off, cRT (or DFR) on or off.

    ``guided`` recipes train on feedback-guided stores; :func:`expand_recipes` makes one row
    per criterion and budget of them, each with its ``guidance``. ``budgeted`` recipes train on
    the fill store cut to each budget below 1.0 (unguided), one row per budget. ``cells``: the cells the fill
    plan fills (one of :data:`PLAN_CELLS`; None: the config's ``plan.cells``). ``objective``: the
    training loss (one of :data:`OBJECTIVES`). ``groups``: the recipe needs group data.
    """

    name: str
    label: str
    training_set: str
    mixup: bool
    crt: bool
    guided: bool = False
    budgeted: bool = False
    guidance: Guidance | None = None
    cells: str | None = None
    objective: str = "ce"
    dfr: bool = False
    groups: bool = False

    @property
    def uses_synthetic(self) -> bool:
        return self.training_set in ("fill", "replace", "substitute")

    @property
    def uses_extra(self) -> bool:
        return self.training_set in ("replace", "substitute")


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("ce", "CE", "lt", mixup=False, crt=False),
        Recipe("ce_crt", "CE + cRT", "lt", mixup=False, crt=True),
        Recipe("fill", "fill (no Mixup)", "fill", mixup=False, crt=False),
        Recipe("fill_mixup", "fill + Mixup", "fill", mixup=True, crt=False),
        Recipe("synaug", "SYNAuG (fill + Mixup + cRT)", "fill", mixup=True, crt=True),
        Recipe("replace", "replace by synthetic + Mixup", "replace", mixup=True, crt=False),
        Recipe("substitute", "substitute real by synthetic + Mixup", "substitute", mixup=True, crt=False),
        Recipe("oracle", "balanced real (oracle)", "oracle", mixup=False, crt=False),
        Recipe("fg", "FG (fill + Mixup + cRT)", "fill", mixup=True, crt=True, guided=True),
        Recipe("fill_budget", "SYNAuG, unguided budget", "fill", mixup=True, crt=True, budgeted=True),
        Recipe("erm", "ERM", "lt", mixup=False, crt=False, groups=True),
        Recipe("synaug_class", "SYNAuG class-only", "fill", mixup=True, crt=True, cells="class", groups=True),
        Recipe("synaug_group", "SYNAuG group-uniform", "fill", mixup=True, crt=True, cells="class-group", groups=True),
        Recipe("group_dro", "Group-DRO", "lt", mixup=False, crt=False, objective="group_dro", groups=True),
        Recipe("dfr", "ERM + DFR", "lt", mixup=False, crt=False, dfr=True, groups=True),
        Recipe("synaug_dfr", "SYNAuG group-uniform + DFR", "fill", mixup=True, crt=False, cells="class-group", dfr=True, groups=True),
    )
}
GROUP_RECIPES = tuple(name for name, recipe in RECIPES.items() if recipe.groups)
CLASS_ONLY_RECIPES = ("replace", "substitute", "oracle", "fg", "fill_budget")  # they need a class long tail (or FG's classifier) and no groups


def expand_recipes(names: Sequence[str], criteria: Sequence[str], budgets: Sequence[float]) -> list[Recipe]:
    """The rows of ``names``: guided recipes once per (criterion, budget), budgeted ones once per
    budget below 1.0, the others as they are."""
    rows = []
    for name in names:
        recipe = RECIPES[name]
        if recipe.budgeted:
            rows.extend(
                replace(recipe, name=f"{name}-{budget:g}", label=f"SYNAuG unguided (budget {budget_text(budget)})", guidance=Guidance(None, float(budget)))
                for budget in budgets if budget < 1.0
            )
            continue
        if not recipe.guided:
            rows.append(recipe)
            continue
        for criterion in criteria:
            for budget in budgets:
                rows.append(replace(
                    recipe, name=f"{name}-{criterion}-{budget:g}", label=f"FG {criterion} (budget {budget_text(budget)})",
                    guidance=Guidance(criterion, float(budget)),
                ))
    return rows


def budget_text(fraction: float) -> str:
    """A budget fraction as the report shows it: one decimal at least (1.0, 0.5, 0.25)."""
    return f"{fraction:.1f}" if round(fraction, 1) == fraction else f"{fraction:g}"


def replace_class_ids(
    spec: str | Sequence[str], real_counts: np.ndarray, class_names: Sequence[str], many_threshold: int, few_threshold: int
) -> list[int]:
    """Class indices the ``replace`` recipe replaces: a shot group's classes or the listed names."""
    if isinstance(spec, str):
        members = shot_groups(real_counts, many_threshold, few_threshold)[spec]
        if not len(members):
            raise SynaugError(f"runs.replace_classes '{spec}' names no class of this long tail; list class names instead.")
        return [int(c) for c in members]
    names = list(class_names)
    unknown = [name for name in spec if name not in names]
    if unknown:
        raise SynaugError(f"runs.replace_classes names '{unknown[0]}', which the dataset does not have; valid classes: {', '.join(names)}.")
    return sorted(names.index(name) for name in dict.fromkeys(spec))


def substitution_counts(real_counts: np.ndarray, fraction: float) -> np.ndarray:
    """Real images per class the ``substitute`` recipe swaps: ``fraction * n``, halves rounded up."""
    return np.floor(fraction * np.asarray(real_counts, dtype=np.float64) + 0.5).astype(np.int64)


def extra_counts(
    recipes: Sequence[Recipe], real_counts: np.ndarray, replace_ids: Sequence[int], fraction: float
) -> np.ndarray:
    """Extra synthetic images per class that the selected recipes need beyond the fill plan."""
    real_counts = np.asarray(real_counts, dtype=np.int64)
    counts = np.zeros_like(real_counts)
    names = {recipe.training_set for recipe in recipes}
    if "replace" in names:
        counts[list(replace_ids)] = real_counts[list(replace_ids)]
    if "substitute" in names:
        counts = np.maximum(counts, substitution_counts(real_counts, fraction))
    return counts


def build_training_set(
    kind: str,
    real: LabeledImages,
    synthetic: LabeledImages | None = None,
    extra: LabeledImages | None = None,
    oracle: LabeledImages | None = None,
    replace_ids: Sequence[int] = (),
    fraction: float = 0.5,
    seed: int = 0,
) -> LabeledImages:
    """The training set ``kind`` (one of :data:`TRAINING_SETS`, see the module doc).

    ``real`` is the long-tailed real set, ``synthetic`` the fill store's images, ``extra`` the
    extra store's (in class order, lowest index first), ``oracle`` the balanced real set.
    """
    if kind == "lt":
        return real
    if kind == "oracle":
        if oracle is None:
            raise SynaugError("the oracle recipe needs the balanced real set; give data.longtail or data.index.")
        return oracle
    if kind not in TRAINING_SETS:
        raise SynaugError(f"unknown training set '{kind}'; use one of {', '.join(TRAINING_SETS)}.")
    if synthetic is None:
        raise SynaugError(f"training set '{kind}' needs the synthetic store of the fill plan; run the generate stage first.")
    if kind == "fill":
        return join(real, synthetic)
    real_counts = real.class_counts()
    if kind == "replace":
        wanted = np.zeros_like(real_counts)
        wanted[list(replace_ids)] = real_counts[list(replace_ids)]
        keep = ~np.isin(real.labels, list(replace_ids))
    else:
        wanted = substitution_counts(real_counts, fraction)
        keep = np.ones(len(real), dtype=bool)
        rng = np.random.default_rng(seed)
        for class_id, count in enumerate(wanted):
            members = np.flatnonzero(real.labels == class_id)
            keep[rng.choice(members, size=int(count), replace=False)] = False
    if extra is None and wanted.any():
        raise SynaugError(f"training set '{kind}' needs the extra synthetic store; run the generate stage first.")
    kept = join(real.subset(np.flatnonzero(keep)), synthetic)
    return kept if extra is None else join(kept, extra.subset(first_per_class(extra.labels, wanted)))


def join(first: LabeledImages, second: LabeledImages) -> LabeledImages:
    """``first`` followed by ``second``; an empty ``second`` (e.g. a store with no image) adds nothing.

    When only one of them has groups (class-only synthetic images on group data) the result
    has none: the synthetic images' groups are unknown.
    """
    if len(second) == 0:
        return first
    if (first.groups is None) != (second.groups is None):
        first, second = (replace(data, groups=None, group_names=None) for data in (first, second))
    return first.concat(second)


def first_per_class(labels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indices of the first ``wanted[c]`` items of each class ``c`` (fewer when fewer exist), in order."""
    labels = np.asarray(labels)
    chosen = [np.flatnonzero(labels == class_id)[: int(count)] for class_id, count in enumerate(wanted) if count > 0]
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
