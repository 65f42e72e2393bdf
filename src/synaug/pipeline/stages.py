"""The pipeline of `synaug run`: data → long-tail split → plan → generate → train → cRT → evaluate → report.

Every stage's output lives in ``OUT/stages/<stage>-<digest>/`` (see :mod:`synaug.pipeline.cache`);
the digest covers the stage's own config section and the digests of its inputs:

================= ========================================= =========================================
stage             inputs hashed                             output
================= ========================================= =========================================
data              dataset source, long-tail draw or index   ``train-index.json`` (the long tail)
plan              data, plan section and cells, generator   ``plan.json`` (group runs: one per cells
                  seed                                      kind the recipes fill, class / class-group)
plan-extra        plan, extra images per class              ``plan.json`` (replace / substitute)
plan-feedback     plan, budget fraction                     ``plan.json`` (one per ``fg`` budget)
generate          plan, generator weights, sampler          ``store/`` (resumable in place)
generate-extra    plan-extra, generator weights, sampler    ``store/``
generate-feedback plan-feedback, generator weights, sampler ``store/`` (one per ``fg`` criterion and
                  feedback settings, the feedback           budget; the manifest's ``criterion``
                  classifier's weights                      column holds each image's score)
train             training set (data, stores), TrainConfig, ``checkpoint/``
                  Group-DRO settings (``group_dro``)
crt               train, crt section, seed                  ``checkpoint/``
crt-dfr           train, dfr section, seed, data            ``checkpoint/`` (DFR's last layer)
evaluate          model, data, evaluate section             ``metrics.json`` (group runs: with the
                                                            group report, ``group_report``)
report            (always rewritten)                        ``OUT/report/``
================= ========================================= =========================================

So a re-run after changing only the training settings reuses the data, the plan and the
synthetic store; runs that differ only in cRT share their training (``ce`` / ``ce_crt``).
The default feedback classifier of the ``fg`` rows is the ``ce`` training of the first seed
(trained during the generate stage when no ``ce`` row asked for it first; with
``feedback.classifier: ce_crt`` also its cRT, shared with the ``ce_crt`` row); guided stores
never replace the unguided one, whose digest does not depend on the feedback section.
``run(stage=...)`` runs one stage: the stages before it must be cached already (``--stage crt``
also runs DFR).

Group runs (group-annotated data, see :mod:`synaug.pipeline.config`) load the validation split
with the training and test splits, fill the cells each recipe asks for, and score every model
with :func:`synaug.evaluate.groups.group_report` over the (class, group) cells of the test split,
the groups being the sensitive attribute of the fairness gaps. With the spurious benchmark's
binary target, plans and stores keep the ten item classes and every set is relabelled before
training and scoring.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import numpy as np
import torch
from rich.console import Console
from rich.text import Text

from synaug.config import to_dict
from synaug.data.benchmarks import GENERATOR_RESERVE, longtail_indices, pool_indices
from synaug.data.dataset import LabeledImages
from synaug.data.fashion_mnist import find_fashion_mnist
from synaug.data.longtail import balanced_subset
from synaug.data.registry import FOLDER_KINDS, load_dataset, load_index, save_index, split_folder
from synaug.data.spurious import binary_target
from synaug.errors import SynaugError
from synaug.evaluate import evaluate
from synaug.evaluate.groups import cell_report
from synaug.generate.backends.base import resolve_dtype
from synaug.generate.store import INFO_FILE, SyntheticStore
from synaug.guidance.criteria import NEEDS_CLASS_GAUSSIANS
from synaug.pipeline.ablations import (
    RECIPES,
    Guidance,
    Recipe,
    budget_text,
    build_training_set,
    expand_recipes,
    extra_counts,
    first_per_class,
    replace_class_ids,
)
from synaug.pipeline.cache import StageCache, stage_digest
from synaug.pipeline.config import RunConfig
from synaug.plan.planner import SynthesisPlan, make_plan, plan_for_dataset
from synaug.report import GroupFacts, ReportInputs, RunResult, StageTiming, aggregate, write_report
from synaug.report.results import RecipeSummary

STAGES = ("data", "plan", "generate", "train", "crt", "evaluate", "report")
INDEX_FILE = "train-index.json"
PLAN_FILE = "plan.json"
CHECKPOINT = "checkpoint"
METRICS_FILE = "metrics.json"
EXTRA_SEED_OFFSET = 1_000_003  # the extra plan's run seed: the fill plan's plus this, so its images differ
GRID_PER_CLASS = 10
GROUP_PLAN_KEYS = ("cells", "group_templates", "group_prompt_names")


@dataclass
class StageOutput:
    """A finished stage folder and its record."""

    digest: str
    folder: Path
    record: dict[str, Any]


@dataclass
class DataOutput:
    """The real data: the long-tailed training set, the test set and where they come from.

    ``val`` is the validation split of group runs (None without ``data.val_split``). ``train``
    keeps the classes plans fill; ``test`` and ``val`` carry the target the models predict
    (the binary one of the spurious benchmark's binary variant).
    """

    digest: str
    train: LabeledImages
    test: LabeledImages
    source: dict[str, Any]
    oracle_draw: dict[str, Any] | None
    description: str
    val: LabeledImages | None = None


@dataclass
class PlanOutput:
    digest: str
    plan: SynthesisPlan


@dataclass
class StoreOutput:
    """A finished synthetic store (``root`` None when its plan has no image); ``feedback``: its guidance;
    ``per_class``: only the first this many images of each class are used (None: all)."""

    digest: str
    root: Path | None
    generator_id: str | None
    settings: dict[str, Any]
    feedback: dict[str, Any] | None = None
    per_class: list[int] | None = None


@dataclass
class FeedbackClassifierOutput:
    """The feedback classifier's checkpoint, the digest of its weights file and where it comes from."""

    checkpoint: Path
    digest: str
    source: str


@dataclass
class ModelOutput:
    """A trained (or re-trained) classifier checkpoint and the facts of its training."""

    stage: str
    digest: str
    checkpoint: Path
    record: dict[str, Any]


@dataclass
class PipelineResult:
    """What `synaug run` did: per-run results, per-recipe summaries, stage timings and the report."""

    runs: list[RunResult]
    summaries: list[RecipeSummary]
    timings: list[StageTiming]
    wall_seconds: float
    report: Path | None = None
    environment: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """One `synaug run`: a checked :class:`RunConfig` and how it was given (for the report).

    Parameters
    ----------
    config : the run config.
    config_name, config_text : the config file's name and verbatim text.
    command : the command line that reproduces the run.
    overrides : what the command changed in the config file (e.g. "runs.seeds = [0, 1, 2]").
    progress : show progress bars.
    title : the report's title.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        config_name: str,
        config_text: str,
        command: str,
        overrides: Sequence[str] = (),
        progress: bool = True,
        title: str | None = None,
    ):
        self.config = config
        self.config_name = config_name
        self.config_text = config_text
        self.command = command
        self.overrides = list(overrides)
        self.progress = progress
        self.title = title
        self.out = Path(config.output)
        self.cache = StageCache(self.out / "stages")
        self.console = Console(stderr=True, highlight=False)
        self.timings: list[StageTiming] = []
        self.target: str | None = None
        self._datasets: dict[str, LabeledImages] = {}
        self._training_sets: dict[str, LabeledImages] = {}
        self._backend = None

    # ---- the run ---------------------------------------------------------------------------
    def run(self, stage: str | None = None) -> PipelineResult:
        """Run every stage (or only ``stage``, its inputs taken from the cache) and return the results."""
        # 1. Check inputs
        if stage is not None and stage not in STAGES:
            raise SynaugError(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)}.")
        self.target = stage
        self.timings = []
        started = time.perf_counter()
        environment = self._environment()
        feedback = self.config.feedback
        recipes = expand_recipes(self.config.runs.recipes, feedback.criteria, feedback.budgets)
        guided = [recipe.guidance for recipe in recipes if recipe.guidance is not None]

        # 2. Data: the long-tailed training set and the test set
        data = self._data_stage()
        if stage == "data":
            return self._result([], started, environment)

        # 3. Plans: one fill plan per cells kind, extra images for replace / substitute, one budget plan per FG budget
        plans = {cells: self._plan_stage(data, cells) for cells in dict.fromkeys(self._cells(r) for r in recipes if r.uses_synthetic)}
        fill_plan = plans.get(self.config.plan.cells)
        extra_plan = self._extra_plan_stage(data, fill_plan, recipes) if any(r.uses_extra for r in recipes) else None
        budget_plans = {budget: self._feedback_plan_stage(fill_plan, budget) for budget in dict.fromkeys(g.budget for g in guided)}
        if stage == "plan":
            return self._result([], started, environment)

        # 4. Generate: one store per plan and guidance (the generator is loaded only when images are missing)
        unguided = dict.fromkeys(self._cells(r) for r in recipes if r.uses_synthetic and (r.guidance is None or r.guidance.criterion is None))
        stores = {cells: self._generate_stage("generate", plans[cells]) for cells in unguided}
        extra_store = self._generate_stage("generate-extra", extra_plan) if extra_plan is not None else None
        guided_stores = self._guided_stores(guided, budget_plans, data, stores.get(self.config.plan.cells)) if guided else {}
        if stage == "generate":
            return self._result([], started, environment)

        # 5. Train, re-train the last layer (cRT or DFR), evaluate: every recipe at every seed
        runs = []
        for recipe in recipes:
            synthetic = guided_stores.get(recipe.guidance) if recipe.guidance else stores.get(self._cells(recipe))
            for seed in self.config.runs.seeds:
                model = self._train_stage(recipe, seed, data, synthetic, extra_store)
                if stage == "train":
                    continue
                if recipe.crt:
                    model = self._crt_stage(recipe, seed, model, data, synthetic, extra_store)
                if recipe.dfr:
                    model = self._dfr_stage(recipe, seed, model, data)
                if stage == "crt":
                    continue
                metrics = self._evaluate_stage(recipe, seed, model, data)
                runs.append(self._run_result(recipe, seed, model, metrics, synthetic))
        if stage in ("train", "crt", "evaluate"):
            return self._result(runs, started, environment)

        # 6. Report
        return self._report_stage(runs, data, stores, list(guided_stores.values()), started, environment)

    def _cells(self, recipe: Recipe) -> str:
        """The cells the recipe's fill plan fills: its own, else plan.cells."""
        return recipe.cells or self.config.plan.cells

    # ---- data --------------------------------------------------------------------------------
    def _data_stage(self) -> DataOutput:
        section = self.config.data
        index = load_index(section.index) if section.index is not None else None
        source = self._source(index)
        test_source = self._test_source(source)
        val_source = self._split_source(source, section.val_split, section.val_groups_csv, "val_split") if section.val_split else None
        inputs: dict[str, Any] = {"source": source, "test": test_source}
        if val_source is not None:
            inputs["val"] = val_source
        inputs["files"] = [_files_fingerprint(s) for s in (source, test_source, val_source) if s is not None]
        if section.binary:
            inputs["target"] = "binary"
        if index is not None:
            inputs["index"] = hashlib.sha256(Path(section.index).read_bytes()).hexdigest()[:16]
        elif section.longtail is not None:
            inputs["longtail"] = {**to_dict(section.longtail), "reserve": self._reserve(source)}

        def build(folder: Path, facts: dict[str, Any]) -> None:
            full = self._load(source)
            indices, settings = self._draw(full, source, index)
            save_index(folder / INDEX_FILE, indices, full, source, settings)
            counts = np.bincount(full.labels[indices], minlength=full.num_classes)
            facts.update(images=int(len(indices)), class_counts=counts.tolist(), settings=settings)

        output = self._stage("data", "real training and test sets", inputs, build)
        train = load_index(output.folder / INDEX_FILE).apply(self._load(source))
        test = self._load(test_source)
        val = self._load(val_source) if val_source is not None else None
        for name, split in (("test", test), ("validation", val)):
            if split is not None and list(split.class_names) != list(train.class_names):
                raise SynaugError(f"the {name} set's classes differ from the training set's; check data.test_split / data.val_split and their files in {self.config_name}.")
            if split is not None and section.grouped and list(split.group_names or []) != list(train.group_names or []):
                raise SynaugError(f"the {name} set's groups differ from the training set's ({split.group_names} vs {train.group_names}); give every split the same groups in {self.config_name}.")
        settings = output.record.get("settings", {})
        oracle = None
        if index is not None or section.longtail is not None:
            oracle = {"reserve": float(settings.get("reserve", 0.0)), "seed": int(settings.get("seed", 0))}
        description = self._describe_data(source, train, test, settings, val)
        self._say("data", f"{description}")
        return DataOutput(output.digest, train, self._target(test), source, oracle, description, None if val is None else self._target(val))

    def _target(self, data: LabeledImages) -> LabeledImages:
        """``data`` with the labels the models predict: the binary target of the spurious benchmark's binary variant."""
        return binary_target(data) if self.config.data.binary else data

    def _source(self, index) -> dict[str, Any]:
        """``load_dataset`` arguments of the full training dataset, paths made absolute."""
        section = self.config.data
        if index is not None:
            overrides = {k: _absolute(v) for k, v in {"root": section.root, "list_file": section.list_file}.items() if v is not None}
            return {**index.source, **overrides}
        root = section.root
        if section.kind in ("fashion-mnist", "spurious-fashion-mnist"):
            root = str(find_fashion_mnist(root).resolve())
        source = {
            "kind": section.kind, "root": _absolute(root), "split": section.split, "list_file": _absolute(section.list_file),
            "size": section.size, "channels": section.channels,
        }
        if section.groups_csv is not None:
            source["groups_csv"] = _absolute(section.groups_csv)
        if section.loader_options():
            source["options"] = section.loader_options()
        return source

    def _test_source(self, source: dict[str, Any]) -> dict[str, Any]:
        section = self.config.data
        test = self._split_source(source, section.test_split, section.test_groups_csv, "test_split")
        if section.test_list_file is not None:
            test["list_file"] = _absolute(section.test_list_file)
        elif source["kind"] == "split-list":
            raise SynaugError(f"{self.config_name}: split-list data needs data.test_list_file (the `path label` file of the test images).")
        return test

    def _split_source(self, source: dict[str, Any], split: str, groups_csv: str | None, key: str) -> dict[str, Any]:
        """``source`` for another split (the test or validation images), its folder checked."""
        other = {**source, "split": split}
        if groups_csv is not None:
            other["groups_csv"] = _absolute(groups_csv)
        if source["kind"] in FOLDER_KINDS and not Path(source["root"]).is_dir():
            raise SynaugError(f"{self.config_name}: data.root {source['root']} does not exist; fix the path (a relative one starts in the working directory).")
        if source["kind"] in FOLDER_KINDS and not (Path(source["root"]) / split).is_dir():
            raise SynaugError(
                f"{self.config_name}: data.root {source['root']} has no '{split}' folder for the data.{key} images; "
                f"put them there or set data.{key} to their folder's name."
            )
        return other

    def _reserve(self, source: dict[str, Any]) -> float:
        reserve = self.config.data.longtail.reserve
        if reserve is None:
            return GENERATOR_RESERVE if (source["kind"], source["split"]) == ("fashion-mnist", "train") else 0.0
        return float(reserve)

    def _draw(self, full: LabeledImages, source: dict[str, Any], index) -> tuple[np.ndarray, dict[str, Any]]:
        """Indices of the training subset and the settings that drew it."""
        longtail = self.config.data.longtail
        if index is not None:
            index.apply(full)  # checks the dataset is the one the index was built from
            return index.indices, dict(index.settings)
        if longtail is None:
            return np.arange(len(full)), {}
        reserve = self._reserve(source)
        largest = longtail.max_per_class
        if largest is None:
            largest = int(np.bincount(full.labels[pool_indices(len(full), reserve)], minlength=full.num_classes).min())
        indices = longtail_indices(
            full.labels, longtail.imbalance_factor, largest, longtail.profile, longtail.seed, reserve, full.num_classes, longtail.step_fraction,
            class_names=full.class_names,
        )
        settings = {
            "imbalance_factor": longtail.imbalance_factor, "max_per_class": largest, "profile": longtail.profile,
            "seed": longtail.seed, "reserve": reserve,
        }
        return indices, settings

    def _oracle(self, data: DataOutput) -> LabeledImages:
        """The balanced real set: max(long-tail count) images of every class from the same pool."""
        if data.oracle_draw is None:
            raise SynaugError("the oracle recipe needs data.longtail or data.index; add one or remove 'oracle' from runs.recipes.")
        full = self._load(data.source)
        pool = pool_indices(len(full), data.oracle_draw["reserve"])
        per_class = int(data.train.class_counts().max())
        try:
            chosen = balanced_subset(full.labels[pool], per_class, data.oracle_draw["seed"], full.num_classes)
        except SynaugError as exc:
            raise SynaugError(f"the oracle needs {per_class} real images of every class in the pool: {exc}") from None
        return full.subset(pool[chosen])

    def _load(self, source: dict[str, Any]) -> LabeledImages:
        key = json.dumps(source, sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(**source)
        return self._datasets[key]

    # ---- plans -------------------------------------------------------------------------------
    def _plan_stage(self, data: DataOutput, cells: str) -> PlanOutput:
        """The fill plan over ``cells``: classes, or the (class, group) cells of group data."""
        section = self.config.plan
        names = self._prompt_names(data.train.class_names)
        if not data.train.in_memory and data.train.size is None:
            height, width = data.train.load(0).shape[1:]
            raise SynaugError(
                f"{self.config_name}: synthetic images must match the real ones' size; set data.size for file-backed data "
                f"(its first image is {width} x {height}: data.size {max(height, width)} keeps that resolution)."
            )
        settings = {**to_dict(section), "class_prompt_names": names}
        if data.train.groups is None:  # the group keys count only on group data, so class runs keep their digests
            settings = {k: v for k, v in settings.items() if k not in GROUP_PLAN_KEYS}
        inputs = {"data": data.digest, "plan": settings, "seed": self.config.generator.seed}
        if data.train.groups is not None:
            inputs["cells"] = cells
        train = data.train if cells == "class-group" else replace(data.train, groups=None, group_names=None)
        grouped = train.groups is not None

        def build(folder: Path, facts: dict[str, Any]) -> None:
            plan = plan_for_dataset(
                train, section.strategy, target=section.target, budget=section.budget,
                templates=section.group_templates if grouped else section.templates, class_prompt_names=names,
                group_prompt_names=section.group_prompt_names if grouped else None, negative_prompt=section.negative_prompt,
                seed=self.config.generator.seed,
            )
            plan.save(folder / PLAN_FILE)
            facts.update(images=plan.total, plan_digest=plan.digest())

        label = "synthesis plan" + (" per class x group cell" if grouped else " per class" if data.train.groups is not None else "")
        output = self._stage("plan", label, inputs, build)
        plan = SynthesisPlan.load(output.folder / PLAN_FILE)
        self._say("plan", f"{plan.strategy}: {plan.total:,} synthetic images (plan digest {plan.digest()})")
        return PlanOutput(output.digest, plan)

    def _extra_plan_stage(self, data: DataOutput, fill: PlanOutput, recipes: Sequence[Recipe]) -> PlanOutput | None:
        counts = extra_counts(recipes, data.train.class_counts(), self._replace_ids(data), self.config.runs.substitute_fraction)
        if not counts.any():
            return None
        inputs = {"plan": fill.digest, "counts": counts.tolist()}
        plan = fill.plan

        def build(folder: Path, facts: dict[str, Any]) -> None:
            extra = make_plan(
                np.zeros(len(plan.class_names), dtype=np.int64), plan.class_names,
                {name: int(n) for name, n in zip(plan.class_names, counts) if n > 0},
                templates=plan.templates, class_prompt_names=dict(zip(plan.class_names, plan.prompt_names)),
                negative_prompt=plan.negative_prompt, seed=plan.seed + EXTRA_SEED_OFFSET,
                image_size=plan.image_size, channels=plan.channels,
            )
            extra.save(folder / PLAN_FILE)
            facts.update(images=extra.total, plan_digest=extra.digest())

        output = self._stage("plan-extra", "extra images for replace / substitute", inputs, build)
        return PlanOutput(output.digest, SynthesisPlan.load(output.folder / PLAN_FILE))

    def _feedback_plan_stage(self, fill: PlanOutput, budget: float) -> PlanOutput:
        """The FG plan of ``budget``: that fraction of the fill plan's images, split by shortfall."""
        inputs = {"plan": fill.digest, "budget": budget}

        def build(folder: Path, facts: dict[str, Any]) -> None:
            from synaug.guidance import budget_plan

            plan = budget_plan(fill.plan, budget)
            plan.save(folder / PLAN_FILE)
            facts.update(images=plan.total, plan_digest=plan.digest())

        output = self._stage("plan-feedback", f"FG plan, budget {budget_text(budget)} of the fill plan", inputs, build)
        return PlanOutput(output.digest, SynthesisPlan.load(output.folder / PLAN_FILE))

    def _prompt_names(self, class_names: Sequence[str]) -> dict[str, str] | None:
        """plan.class_prompt_names as a mapping (read from its file when it names one)."""
        value = self.config.plan.class_prompt_names
        if value is None or isinstance(value, dict):
            return value
        path = Path(value)
        if not path.is_file():
            raise SynaugError(f"{self.config_name}: plan.class_prompt_names file {path} does not exist; give a file with one prompt name per class, in label order.")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) != len(class_names):
            raise SynaugError(f"plan.class_prompt_names file {path} has {len(lines)} names for {len(class_names)} classes; give one name per class, in label order.")
        return dict(zip(class_names, lines))

    def _replace_ids(self, data: DataOutput) -> list[int]:
        thresholds = self.config.evaluate
        return replace_class_ids(
            self.config.runs.replace_classes, data.train.class_counts(), data.train.class_names,
            thresholds.many_threshold, thresholds.few_threshold,
        )

    # ---- generation --------------------------------------------------------------------------
    def _generate_stage(
        self, stage: str, planned: PlanOutput, feedback: dict[str, Any] | None = None, make_hooks: Callable[[], list] | None = None
    ) -> StoreOutput:
        """The store of ``planned``; guided by the hooks of ``make_hooks`` (described by ``feedback``) when given."""
        section = self.config.generator
        plan = planned.plan
        sampler = self._sampler()
        external = _absolute(section.store) if stage == "generate" else None
        inputs = {
            "plan": plan.digest(),
            "generator": generator_fingerprint(section.spec),
            "sampler": {k: sampler[k] for k in ("scheduler", "steps", "guidance_scale", "dtype")},
            "store": external,
        }
        if feedback is not None:
            inputs["feedback"] = feedback
        digest = stage_digest(stage, inputs)
        label = f"{plan.total:,} images with {section.spec}" + (" (class x group cells)" if plan.group_names else "")
        if feedback is not None:
            label += f", feedback {feedback['criterion']} (budget {budget_text(feedback['budget'])})"
        record = self.cache.record(stage, digest)
        if record is None and not self._may_compute(stage):
            if feedback is not None:
                self._missing(stage, label)
            self._missing_store(stage, inputs)
        if record is None:
            folder = self.cache.resumable(stage, digest)
            root = Path(external) if external else folder / "store"
            started = time.perf_counter()
            facts: dict[str, Any] = {"store": None if plan.total == 0 else str(root), "planned": plan.total}
            if plan.total:
                backend = self._load_backend()
                from synaug.generate.loading import check_vocabulary

                check_vocabulary(plan, section.spec, allow_unknown_classes=section.allow_unknown_classes)
                hooks = make_hooks() if make_hooks is not None else []
                self._check_store(root, plan, backend, external is not None, hooks)
                self._say(stage, f"{label}: {backend.generator_id} ({_settings_text(backend.settings())}), into {root}")
                from synaug.generate.runner import generate_plan

                summary = generate_plan(plan, backend, SyntheticStore(root), progress=self.progress, hooks=hooks)
                facts.update(
                    generator_id=backend.generator_id, settings=backend.settings(), generated=summary.generated,
                    already_done=summary.already_done, failed=summary.failed, images_per_second=summary.images_per_second,
                )
            record = self.cache.finish(stage, digest, inputs, facts, time.perf_counter() - started)
            self._note(stage, label, record, cached=False)
        else:
            self._note(stage, label, record, cached=True)
        root = Path(record["store"]) if record.get("store") else None
        return StoreOutput(digest, root, record.get("generator_id"), record.get("settings") or {}, feedback)

    def _guided_stores(
        self, guided: Sequence[Guidance], plans: dict[float, PlanOutput], data: DataOutput, fill: StoreOutput | None
    ) -> dict[Guidance, StoreOutput]:
        """One store per (criterion, budget): feedback-guided, all by the same feedback classifier, or for
        criterion None the fill store cut to the budget plan's counts (its images have the same prompts and seeds)."""
        stores = {
            guidance: replace(fill, per_class=plans[guidance.budget].plan.class_totals()[1].tolist())
            for guidance in guided if guidance.criterion is None
        }
        if all(guidance.criterion is None for guidance in guided):
            return stores
        classifier = self._feedback_classifier(data)
        section = self.config.feedback
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
            hooks = functools.partial(self._feedback_hooks, guidance.criterion, classifier, data, plan.class_names)
            stores[guidance] = self._generate_stage("generate-feedback", plans[guidance.budget], feedback, hooks)
        return stores

    def _feedback_hooks(self, criterion: str, classifier: FeedbackClassifierOutput, data: DataOutput, class_names: list[str]) -> list:
        """The feedback-guidance hook of ``criterion`` (loads the classifier; fits class Gaussians for hardness)."""
        from synaug.guidance import feedback_hook

        section = self.config.feedback
        return [feedback_hook(
            criterion, classifier.checkpoint, data.train, scale=section.scale, every=section.every,
            start=section.start, stop=section.stop, gradient_path=section.path, class_names=class_names, device=self._sampler()["device"],
        )]

    def _feedback_classifier(self, data: DataOutput) -> FeedbackClassifierOutput:
        """feedback.classifier: this run's CE model of the first seed (its cached ``ce`` training; the default),
        that model after cRT (``ce_crt``), or a checkpoint folder."""
        path = self.config.feedback.classifier
        if path in (None, "ce", "ce_crt"):
            seed = self.config.runs.seeds[0]
            model = self._train_stage(RECIPES["ce"], seed, data, None, None, group="generate")
            folder, source = model.checkpoint, f"CE on the real long tail, seed {seed}"
            if path == "ce_crt":
                model = self._crt_stage(RECIPES["ce_crt"], seed, model, data, None, None, group="generate")
                folder, source = model.checkpoint, f"CE + cRT on the real long tail, seed {seed}"
        else:
            folder = Path(_absolute(path))
            source = str(folder)
        from synaug.train.checkpoint import WEIGHTS_FILE

        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise SynaugError(
                f"{self.config_name}: feedback.classifier {folder} holds no {WEIGHTS_FILE}; "
                "give the checkpoint folder `synaug train` wrote (OUT/checkpoint), or null for the run's CE model."
            )
        return FeedbackClassifierOutput(folder, hashlib.sha256(weights.read_bytes()).hexdigest()[:16], source)

    def _sampler(self) -> dict[str, Any]:
        """The generator's sampler settings, with device and dtype "auto" resolved for this machine."""
        section = self.config.generator
        device = section.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return {
            "scheduler": section.scheduler, "steps": section.steps, "guidance_scale": section.guidance,
            "dtype": resolve_dtype(section.dtype, torch.device(device)),
            "device": device, "batch_size": section.batch_size,
        }

    def _load_backend(self):
        if self._backend is None:
            from synaug.generate.loading import load_generator

            self._backend = load_generator(self.config.generator.spec, **self._sampler())
        return self._backend

    def _check_store(self, root: Path, plan: SynthesisPlan, backend, external: bool, hooks: Sequence = ()) -> None:
        """Refuse a store made by another plan, generator or guidance, naming the config and the fix."""
        path = root / INFO_FILE
        if not path.is_file():
            return
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SynaugError(f"{path} is corrupt; delete the store {root} or use a new output folder (--out).") from None
        where = f"store {root}" + (f" (generator.store in {self.config_name})" if external else "")
        fix = ("remove generator.store to generate a matching store in the output folder, or use a new output folder (--out)"
               if external else f"delete {root} or use a new output folder (--out)")
        if info.get("plan_digest") != plan.digest():
            raise SynaugError(f"{where} was made by a different plan (digest {info.get('plan_digest')}) than {self.config_name} asks for (digest {plan.digest()}); {fix}.")
        settings = {**backend.settings(), **({"hooks": [hook.settings() for hook in hooks]} if hooks else {})}
        if info.get("generator_id") != backend.generator_id or json.dumps(info.get("settings"), sort_keys=True) != json.dumps(settings, sort_keys=True):
            raise SynaugError(
                f"{where} was made by generator {info.get('generator_id')} ({_settings_text(info.get('settings') or {})}), not by "
                f"{backend.generator_id} ({_settings_text(settings)}) as {self.config_name} asks; {fix}."
            )

    def _missing_store(self, stage: str, inputs: dict[str, Any]) -> NoReturn:
        others = [r for r in self.cache.finished(stage) if r.get("store")]
        if others:
            other = others[0]
            raise SynaugError(
                f"the synthetic store in {self.cache.root / (stage + '-' + other['digest'])} was made by a different plan or generator "
                f"(plan {other['inputs'].get('plan')}, {other.get('generator_id')}) than {self.config_name} asks for "
                f"(plan {inputs['plan']}, {self.config.generator.spec} {_settings_text(inputs['sampler'])}); "
                f"run `{self._stage_command('generate')}` to make a matching store, or use a new output folder (--out)."
            )
        self._missing(stage, "synthetic images")

    # ---- training, cRT, evaluation -------------------------------------------------------------
    def _train_stage(
        self, recipe: Recipe, seed: int, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None, group: str = "train"
    ) -> ModelOutput:
        """The trained model of ``recipe`` at ``seed``; ``group``: the stage (of --stage) that may compute it."""
        config = self.config.train.train_config(seed, recipe.mixup)
        dro = self.config.group_dro
        if recipe.objective == "group_dro":
            config = replace(config, weight_decay=dro.weight_decay)
        if config.tensorboard is not None:  # one TensorBoard run per training; where it goes never changes the model
            config = replace(config, tensorboard=str(Path(config.tensorboard) / f"{recipe.name}-seed{seed}"))
        inputs = self._training_set_inputs(recipe, data, fill, extra)
        inputs["train"] = {k: v for k, v in to_dict(config).items() if k != "tensorboard"}
        if recipe.objective == "group_dro":  # only then, so the other trainings keep their digests
            inputs["group_dro"] = {"step_size": dro.step_size, "adjustment": dro.adjustment}
        label = f"{config.model} on the '{recipe.training_set}' set{' with Mixup' if recipe.mixup else ''}, seed {seed}"
        if data.train.groups is not None and recipe.uses_synthetic:
            label = label.replace("' set", f"' set ({self._cells(recipe)} cells)")
        if recipe.objective == "group_dro":
            label += ", Group-DRO"
        if group == "generate":
            label = f"the feedback classifier: {label}"

        def build(folder: Path, facts: dict[str, Any]) -> None:
            from synaug.train import save_checkpoint, train_classifier
            from synaug.train.group_dro import train_group_dro

            train_set = self._training_set(recipe, seed, data, fill, extra)
            real, synthetic = int((~train_set.is_synthetic).sum()), int(train_set.is_synthetic.sum())
            self._say("train", f"{recipe.name}: {real:,} real + {synthetic:,} synthetic images, {config.epochs} epoch{'s' if config.epochs != 1 else ''}")
            if recipe.objective == "group_dro":
                result, objective = train_group_dro(
                    train_set, config, step_size=dro.step_size, adjustment=dro.adjustment, weight_decay=None, progress=self.progress
                )
                facts["group_dro_weights"] = dict(zip(objective.group_names, np.round(objective.weights, 4).tolist()))
            else:
                result = train_classifier(train_set, config, progress=self.progress)
            save_checkpoint(result, folder / CHECKPOINT, extra={"data": data.source, "training_set": recipe.training_set})
            facts.update(
                sample_counts=result.sample_counts, real_per_class=result.train_counts.tolist(),
                synthetic_per_class=result.synthetic_counts.tolist(), train_seconds=result.seconds, last_epoch=result.history[-1],
            )

        output = self._stage("train", label, inputs, build, group)
        return ModelOutput("train", output.digest, output.folder / CHECKPOINT, output.record)

    def _crt_stage(
        self, recipe: Recipe, seed: int, trained: ModelOutput, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None,
        group: str = "crt",
    ) -> ModelOutput:
        """``trained`` with its classifier re-trained class-balanced; ``group``: the stage (of --stage) that may compute it."""
        section = self.config.crt
        inputs = {"model": trained.digest, "crt": to_dict(section), "seed": seed}
        label = f"re-train the classifier of {recipe.name} on {section.source} images (class-balanced), seed {seed}"

        def build(folder: Path, facts: dict[str, Any]) -> None:
            from synaug.train import load_checkpoint, retrain_classifier, save_checkpoint

            model, normalizer, meta = load_checkpoint(trained.checkpoint, self._device())
            train_set = self._training_set(recipe, seed, data, fill, extra)
            retrained = retrain_classifier(
                model, train_set, normalizer, epochs=section.epochs, batch_size=section.batch_size, lr=section.lr,
                weight_decay=section.weight_decay, seed=seed, source=section.source,
            )
            save_checkpoint(_result_from_checkpoint(retrained, normalizer, meta), folder / CHECKPOINT, extra={"crt": to_dict(section)})

        output = self._stage("crt", label, inputs, build, group)
        record = {**trained.record, "crt_seconds": output.record["seconds"]}
        return ModelOutput("crt", output.digest, output.folder / CHECKPOINT, record)

    def _dfr_stage(self, recipe: Recipe, seed: int, trained: ModelOutput, data: DataOutput) -> ModelOutput:
        """DFR: the last layer of ``trained`` re-fitted on the group-balanced validation split."""
        section = self.config.dfr
        inputs = {"model": trained.digest, "dfr": to_dict(section), "seed": seed, "data": data.digest}
        label = f"DFR: re-fit the last layer of {recipe.name} on {len(data.val):,} validation images (group-balanced), seed {seed}"

        def build(folder: Path, facts: dict[str, Any]) -> None:
            from synaug.train import load_checkpoint, save_checkpoint
            from synaug.train.dfr import dfr_retrain

            model, normalizer, meta = load_checkpoint(trained.checkpoint, self._device())
            retrained, report = dfr_retrain(model, data.val, normalizer, c_grid=section.c_grid, retrains=section.retrains, seed=seed)
            save_checkpoint(_result_from_checkpoint(retrained, normalizer, meta), folder / CHECKPOINT, extra={"dfr": {**to_dict(section), **report}})
            facts.update(dfr=report)

        output = self._stage("crt-dfr", label, inputs, build)
        record = {**trained.record, "dfr_seconds": output.record["seconds"], "dfr": output.record.get("dfr")}
        return ModelOutput("crt-dfr", output.digest, output.folder / CHECKPOINT, record)

    def _evaluate_stage(self, recipe: Recipe, seed: int, model: ModelOutput, data: DataOutput) -> dict[str, Any]:
        section = self.config.evaluate
        inputs = {"model": {"stage": model.stage, "digest": model.digest}, "data": data.digest, "evaluate": to_dict(section)}
        label = f"{recipe.name}, seed {seed}, on {len(data.test):,} test images"

        def build(folder: Path, facts: dict[str, Any]) -> None:
            from synaug.train import infer, load_checkpoint

            classifier, normalizer, _ = load_checkpoint(model.checkpoint, self._device())
            logits = infer(classifier, data.test, normalizer, batch_size=section.batch_size, num_workers=0 if data.test.in_memory else self.config.train.num_workers)
            train = self._target(data.train)
            metrics = evaluate(logits, data.test.labels, train.class_counts(), train.class_names, section.many_threshold, section.few_threshold)
            if data.test.groups is not None:
                metrics["group_report"] = cell_report(logits, data.test, train)
                facts.update(worst_group=metrics["group_report"]["worst_group_accuracy"])
            (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
            facts.update(top1=metrics["top1"], few=metrics["few"])

        output = self._stage("evaluate", label, inputs, build)
        return json.loads((output.folder / METRICS_FILE).read_text())

    def _training_set_inputs(self, recipe: Recipe, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None) -> dict[str, Any]:
        """What decides a recipe's training set, for the train stage's digest."""
        inputs: dict[str, Any] = {"training_set": recipe.training_set, "data": data.digest}
        if recipe.uses_synthetic:
            inputs["synthetic"] = fill.digest if fill else None
            if fill is not None and fill.per_class is not None:
                inputs["per_class"] = fill.per_class
        if recipe.training_set == "replace":
            inputs.update(extra=extra.digest if extra else None, replace=self._replace_ids(data))
        if recipe.training_set == "substitute":
            inputs.update(extra=extra.digest if extra else None, fraction=self.config.runs.substitute_fraction)
        return inputs

    def _training_set(self, recipe: Recipe, seed: int, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None) -> LabeledImages:
        key = json.dumps(self._training_set_inputs(recipe, data, fill, extra), sort_keys=True)
        if key not in self._training_sets:
            in_memory = data.train.in_memory
            self._training_sets[key] = self._target(build_training_set(
                recipe.training_set,
                data.train,
                synthetic=self._store_images(fill, data, in_memory) if recipe.uses_synthetic else None,
                extra=self._store_images(extra, data, in_memory) if recipe.uses_extra and extra is not None else None,
                oracle=self._oracle(data) if recipe.training_set == "oracle" else None,
                replace_ids=self._replace_ids(data) if recipe.training_set == "replace" else (),
                fraction=self.config.runs.substitute_fraction,
                seed=int((self.config.data.longtail.seed if self.config.data.longtail else 0)),
            ))
        return self._training_sets[key]

    def _store_images(self, store: StoreOutput | None, data: DataOutput, in_memory: bool) -> LabeledImages:
        """The store's finished images, labelled like the real data (an empty set when there are none)."""
        if store is None or store.root is None:
            return data.train.subset(np.zeros(0, dtype=np.int64))
        images = SyntheticStore(store.root).load(
            class_names=data.train.class_names, group_names=data.train.group_names, in_memory=in_memory, per_class=store.per_class
        )
        return images if len(images) else data.train.subset(np.zeros(0, dtype=np.int64))

    def _device(self) -> torch.device:
        from synaug.train.trainer import resolve_device

        return resolve_device(self.config.train.device)

    def _run_result(self, recipe: Recipe, seed: int, model: ModelOutput, metrics: dict[str, Any], store: StoreOutput | None) -> RunResult:
        from synaug.train.checkpoint import read_history

        record = model.record
        return RunResult(
            recipe=recipe.name,
            label=self._label(recipe),
            seed=seed,
            metrics=metrics,
            sample_counts=dict(record.get("sample_counts", {})),
            synthetic_per_class=list(record.get("synthetic_per_class", [])),
            real_per_class=list(record.get("real_per_class", [])),
            train_seconds=record.get("train_seconds"),
            feedback=store.feedback if store is not None else None,
            history=read_history(model.checkpoint),
        )

    def _label(self, recipe: Recipe) -> str:
        runs = self.config.runs
        if recipe.name == "replace":
            spec = runs.replace_classes
            which = f"{spec}-shot classes" if isinstance(spec, str) else ", ".join(spec)
            return f"replace {which} by synthetic + Mixup"
        if recipe.name == "substitute":
            return f"substitute {100 * runs.substitute_fraction:.0f} % of real by synthetic + Mixup"
        if recipe.crt and self.config.crt.source != "real":
            return f"{recipe.label} (cRT on {self.config.crt.source})"
        return recipe.label

    # ---- report ------------------------------------------------------------------------------
    def _report_stage(
        self, runs: list[RunResult], data: DataOutput, stores: dict[str, StoreOutput], guided: list[StoreOutput], started: float, environment: dict
    ) -> PipelineResult:
        """Write the report; the generator is named by the fill store (group runs: the class x group one), else by the first guided store."""
        self._say("report", "writing report.md, results.json and the plots")
        report_started = time.perf_counter()
        fill = stores.get("class-group") or stores.get(self.config.plan.cells)
        class_names = list(data.train.class_names)
        before = data.train.class_counts()
        after, generated, real = None, None, None
        if fill is not None and fill.root is not None:
            synthetic = self._store_images(fill, data, in_memory=False)
            after = (before + synthetic.class_counts()).tolist()
            if len(synthetic):
                generated, real = _grid_sample(synthetic), _grid_sample(data.train)
        generator = None
        named = next((store for store in [fill, *guided] if store is not None and store.generator_id), None)
        if named is not None:
            generator = {"id": named.generator_id, "settings": named.settings, "spec": self.config.generator.spec, "seed": self.config.generator.seed}
        environment = {**environment, "load_average_end": os.getloadavg()[0]}
        inputs = ReportInputs(
            title=self.title or f"SYNAuG pipeline: {self.config_name}",
            command=self.command, config_name=self.config_name, config_text=self.config_text, runs=runs,
            class_names=class_names, counts_before=before.tolist(), timings=self.timings,
            wall_seconds=time.perf_counter() - started, seeds=list(self.config.runs.seeds), dataset=data.description,
            overrides=self.overrides, config=self.config.to_dict(), generator=generator, counts_after=after,
            generated_samples=generated, real_samples=real, environment=environment, groups=self._group_facts(data, stores),
        )
        folder = write_report(inputs, self.out / "report")
        self.timings.append(StageTiming("report", "report.md, results.json, plots", time.perf_counter() - report_started))
        result = self._result(runs, started, environment)
        result.report = folder
        return result

    def _group_facts(self, data: DataOutput, stores: dict[str, StoreOutput]) -> GroupFacts | None:
        """Real and synthetic images per (class, group) cell of a group run (None for class data)."""
        if data.train.groups is None:
            return None
        filled = {cells: self._store_images(store, data, in_memory=False) for cells, store in stores.items()}
        return GroupFacts(
            class_names=list(data.train.class_names), group_names=list(data.train.group_names), real_cells=data.train.cell_counts().tolist(),
            filled_cells=filled["class-group"].cell_counts().tolist() if "class-group" in filled else None,
            filled_classes=filled["class"].class_counts().tolist() if "class" in filled else None,
        )

    def _result(self, runs: list[RunResult], started: float, environment: dict) -> PipelineResult:
        return PipelineResult(runs, aggregate(runs), self.timings, time.perf_counter() - started, None, environment)

    # ---- stage bookkeeping -------------------------------------------------------------------
    def _stage(
        self, stage: str, label: str, inputs: dict[str, Any], build: Callable[[Path, dict[str, Any]], None], group: str | None = None
    ) -> StageOutput:
        """The finished output of a stage: from the cache, or built now when this run may compute it (as ``group``)."""
        digest = stage_digest(stage, inputs)
        record = self.cache.record(stage, digest)
        if record is None:
            if not self._may_compute(group or stage):
                self._missing(group or stage, label)
            self._say(stage, f"{label} ...")
            with self.cache.build(stage, digest, inputs) as (folder, facts):
                build(folder, facts)
            record = self.cache.record(stage, digest)
            self._note(stage, label, record, cached=False)
        else:
            self._note(stage, label, record, cached=True)
        return StageOutput(digest, self.cache.folder(stage, digest), record)

    def _may_compute(self, stage: str) -> bool:
        """Whether this run computes ``stage`` (all stages, or only the one asked for)."""
        return self.target is None or self.target == _group(stage)

    def _missing(self, stage: str, label: str) -> NoReturn:
        group = _group(stage)
        raise SynaugError(
            f"--stage {self.target} needs the '{group}' stage's output ({label}) for {self.config_name}, and {self.cache.root} has none; "
            f"run `{self._stage_command(group)}` first (or run without --stage to run every stage)."
        )

    def _stage_command(self, stage: str) -> str:
        """This run's command line (its --out too), running only ``stage``."""
        words = shlex.split(self.command)
        if "--stage" in words:
            words[words.index("--stage") + 1] = stage
        else:
            words += ["--stage", stage]
        return shlex.join(words)

    def _note(self, stage: str, label: str, record: dict[str, Any], cached: bool) -> None:
        folder = self.cache.folder(stage, record["digest"])
        self.timings.append(StageTiming(stage, label, float(record["seconds"]), cached, str(folder)))
        status = "cached" if cached else f"done in {record['seconds']:.1f} s"
        self._say(stage, f"{label}: {status}")

    def _say(self, stage: str, text: str) -> None:
        self.console.print(Text.assemble((f"{stage:>14} ", "bold cyan"), text))

    def _environment(self) -> dict[str, Any]:
        return {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(self._device()),
            "load_average_start": os.getloadavg()[0],
        }

    def _describe_data(
        self, source: dict[str, Any], train: LabeledImages, test: LabeledImages, settings: dict[str, Any], val: LabeledImages | None = None
    ) -> str:
        counts = train.class_counts()
        name = source["kind"] + ("" if source.get("split") in (None, "train") else f" {source['split']}")
        options = source.get("options") or {}
        if source["kind"] == "spurious-fashion-mnist":
            name += (f" (IF {options['imbalance_factor']:g}, at most {options['max_per_class']} per class, "
                     f"{100 * options['majority']:g} % of each class on its majority context)")
        if settings.get("imbalance_factor") is not None:
            name += f"-LT (IF {settings['imbalance_factor']:g}, at most {settings.get('max_per_class')} per class"
            if settings.get("reserve"):
                name += f", drawn from the {100 * (1 - settings['reserve']):.0f} % not reserved for the generator"
            name += ")"
        text = (
            f"{name}: {len(train):,} real training images in {train.num_classes} classes "
            f"({int(counts.max())} to {int(counts.min())} per class), {len(test):,} test images"
        )
        if train.groups is not None:
            cells = train.cell_counts()
            text += (f" and {len(val):,} validation images" if val is not None else "") + (
                f"; groups {', '.join(train.group_names)}, {int(cells.max())} to {int(cells.min())} real training images per (class, group) cell"
            )
        if self.config.data.binary:
            text += "; the models predict the binary target (red-majority vs blue-majority class)"
        return text


def run_pipeline(config: RunConfig, *, stage: str | None = None, **options: Any) -> PipelineResult:
    """Run ``config`` (see :class:`Pipeline` for the options) and return its results."""
    return Pipeline(config, **options).run(stage)


def generator_fingerprint(spec: str) -> dict[str, Any]:
    """What identifies a generator's weights without loading them (part of the generate digest).

    Embedded generators (shipped ones too): the SHA-256 of the UNet weights (as in their generator id). Other
    model folders: names, sizes and modification times of their files. Hub ids and
    python: factories: the spec itself.
    """
    from synaug.generate.backends.embedded import SPEC_FILE, shipped_folder, weights_digest

    if spec.startswith("python:"):
        return {"spec": spec}
    folder = shipped_folder(spec) or Path(spec).expanduser()
    if (folder / SPEC_FILE).is_file() and (folder / "unet").is_dir():
        return {"spec": spec, "weights": weights_digest(folder / "unet")}
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        listing = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return {"spec": str(folder.resolve()), "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]}
    return {"spec": spec}


def _result_from_checkpoint(model: torch.nn.Module, normalizer, meta: dict[str, Any]):
    """A TrainResult for ``model`` carrying a loaded checkpoint's description (to save it again)."""
    from synaug.train.trainer import TrainConfig, TrainResult

    channels = int(meta["in_channels"])
    return TrainResult(
        model=model,
        history=meta.get("history", []),
        normalizer=normalizer,
        config=TrainConfig(**meta["train_config"]),
        class_names=list(meta["class_names"]),
        train_counts=np.asarray(meta["train_counts"]),
        synthetic_counts=np.asarray(meta["synthetic_counts"]),
        sample_counts=dict(meta["sample_counts"]),
        image_shape=(channels, *[int(s) for s in meta["image_size"]]),
        seconds=float(meta.get("train_seconds", 0.0)),
    )


def _grid_sample(images: LabeledImages) -> LabeledImages:
    """The first GRID_PER_CLASS images of every class (of every (class, group) cell when there are groups), in memory."""
    cells = images.labels if images.groups is None else images.labels * len(images.group_names) + images.groups
    count = images.num_classes * (1 if images.groups is None else len(images.group_names))
    return images.subset(first_per_class(cells, np.full(count, GRID_PER_CLASS))).materialize()


def _group(stage: str) -> str:
    """The stage of STAGES that ``stage`` belongs to (plan-extra and plan-feedback to plan, ...)."""
    return stage.split("-")[0]


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _files_fingerprint(source: dict[str, Any]) -> str:
    """A hash of the names, sizes and modification times of the files ``source`` is read from.

    The data stage's cache key includes it, so an edited groups CSV or split list, or an image
    added to, removed from or changed in a class folder, makes the run start again from the data.
    Folder kinds are walked below their split's folder; other kinds stat the files in ``root``.
    """
    files = [Path(source[key]) for key in ("groups_csv", "list_file") if source.get(key)]
    root = Path(source["root"]) if source.get("root") else None
    if root is not None and source["kind"] in FOLDER_KINDS:
        folder = split_folder(root, source["split"])
        files += sorted(path for path in folder.rglob("*") if path.is_file())
    elif root is not None and root.is_dir():
        files += sorted(path for path in root.iterdir() if path.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _settings_text(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if k in ("scheduler", "steps", "guidance_scale", "dtype") and v is not None}
    return ", ".join(f"{k} {v}" for k, v in shown.items()) or "default settings"
