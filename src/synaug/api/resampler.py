"""An over-sampler with imbalanced-learn's contract: synthetic images from a diffusion model.

:class:`SyntheticOverSampler` is configured in ``__init__`` (parameters stored as given, checked
by ``fit_resample``); ``fit_resample(dataset)`` plans the synthetic images
(:mod:`synaug.plan`), generates what its store lacks (:func:`synaug.generate.runner.generate_plan`)
and returns the real images followed by the synthetic ones (``is_synthetic`` set). Given a
:class:`Guidance` it makes feedback-guided images (FG) through the same steps; given a
:class:`~synaug.filters.FilterSpec` it over-generates by the spec's factor and keeps the best
images of every class (:func:`synaug.filters.filter_store`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sklearn.base import BaseEstimator

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError, SynaugWarning
from synaug.filters.reference import DEFAULT_CACHE
from synaug.filters.spec import FilterSpec
from synaug.generate.exemplars import ExemplarSpec
from synaug.guidance.feedback import DEFAULT_EVERY, DEFAULT_SCALE
from synaug.plan.planner import STRATEGIES, SynthesisPlan, overgenerate, plan_for_dataset
from synaug.plan.prompts import TEMPLATE_SETS

if TYPE_CHECKING:
    from synaug.filters.select import FilterResult
    from synaug.generate.backends.base import Generator
    from synaug.generate.runner import GenerationSummary
    from synaug.guidance.feedback import FeedbackGuidance

__all__ = ["Guidance", "SyntheticOverSampler", "SAMPLING_WORDS"]

SAMPLING_WORDS = ("auto", "all", "not majority", "minority", "not minority")  # imbalanced-learn's words
COUNTED_STRATEGIES = ("fill-to", "budget")  # synaug's strategies that take a number: ("fill-to", N), ("budget", B)


@dataclass(frozen=True)
class Guidance:
    """Feedback guidance for :class:`SyntheticOverSampler`: a trained classifier steers each sampling step.

    ``classifier``: a :class:`~synaug.api.classifier.Classifier`, a ``TrainResult`` or a checkpoint
    folder, trained on the classes to be generated. ``criterion``: entropy, loss, hardness or a
    registered one. ``scale``, ``every``, ``start``, ``stop`` and ``gradient_path`` are those of
    :class:`~synaug.guidance.feedback.FeedbackGuidance` (the run config's ``feedback`` section).

    >>> guidance = synaug.Guidance(classifier, criterion="entropy")  # doctest: +SKIP
    """

    classifier: Any
    criterion: str | Callable = "entropy"
    scale: float = DEFAULT_SCALE
    every: int = DEFAULT_EVERY
    start: float = 0.0
    stop: float = 1.0
    gradient_path: str = "x0"

    def hook(self, real: LabeledImages, class_names: Sequence[str]) -> "FeedbackGuidance":
        """The sampler hook for a plan of ``class_names``; ``real`` fits the hardness criterion's class Gaussians."""
        from synaug.guidance.feedback import feedback_hook

        source = getattr(self.classifier, "result_", self.classifier)
        if source is None:
            raise SynaugError("the guidance classifier is not trained; call its fit() first, or give a checkpoint folder.")
        return feedback_hook(
            self.criterion, source, real, scale=self.scale, every=self.every, start=self.start, stop=self.stop,
            gradient_path=self.gradient_path, class_names=list(class_names),
        )


def _is_strategy(value: Any) -> bool:
    if isinstance(value, str):
        return value in SAMPLING_WORDS or value in STRATEGIES
    if isinstance(value, Mapping):
        return all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in value.values())
    return (isinstance(value, (tuple, list)) and len(value) == 2 and value[0] in COUNTED_STRATEGIES
            and isinstance(value[1], int) and not isinstance(value[1], bool) and value[1] >= 0)


def _is_generator(value: Any) -> bool:
    from synaug.generate.backends.base import Generator

    return (isinstance(value, str) and bool(value.strip())) or isinstance(value, Generator)


def _is_templates(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value in TEMPLATE_SETS):
        return True
    return isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0 and all(isinstance(t, str) for t in value)


class SyntheticOverSampler(BaseEstimator):
    """Over-sample a labelled image set with a diffusion model's images (SYNAuG; FG with ``guidance``).

    Parameters
    ----------
    generator : a spec for :func:`synaug.load_generator` ("embedded", "embedded:NAME", a model
        folder or hub id, "python:MODULE:FUNCTION") or a loaded generator.
    sampling_strategy : how many images each class (class x group cell, for group data) ends with.
        imbalanced-learn's "auto" / "not majority" / "all" (fill every class to the largest),
        "minority", "not minority"; a dict of final counts per class name (or per
        (class, group) pair); synaug's "fill-to-max", "class-only" (group data: classes only),
        ("fill-to", N) (every class to N) or ("budget", B) (B images split by shortfall).
    templates : prompt templates with {class} (and {context} for groups), or a template set
        name ("plain", "modifier"); None: the default templates.
    descriptions : prompts written per class or cell instead of templates: a descriptions file
        (``CLASS: prompt`` lines, see :mod:`synaug.plan.descriptions`) or a mapping
        {class (or "CLASS | GROUP"): [prompt, ...]}.
    store : folder of the synthetic images (PNGs + manifest); a re-run resumes it.
    random_state : the seed every image's seed derives from.
    guidance : a :class:`Guidance` for feedback-guided synthesis; None: plain sampling.
    exemplars : an :class:`~synaug.generate.exemplars.ExemplarSpec` making each image from a real
        image of its class (or cell) in the dataset: img2img at its ``strength``, or through an
        IP-Adapter / unCLIP embedding; None: from text only.
    filter : a :class:`~synaug.filters.FilterSpec` (or a mapping of its fields, as a run
        config's ``filter:`` section) scoring every synthetic image by CLIP and/or a
        classifier's confidence; with ``overgenerate`` F it makes F times the images each class
        needs and keeps the needed number of the best. Scores and decisions go to the store's
        ``filter.parquet``; only kept images are returned. None: every image is used.
    class_prompt_names : write a class differently in prompts ({"T-shirt/top": "t-shirt"}).
    negative_prompt : prompt for the unconditional branch of classifier-free guidance.
    overwrite : replace a store made by another plan or generator instead of refusing it.
    progress : show a progress bar.

    After ``fit_resample``: ``plan_`` (the :class:`~synaug.plan.SynthesisPlan`, over-generated
    with a filter's factor), ``sampling_strategy_`` (synthetic images per class or cell that
    the result holds when the filter keeps enough), ``summary_`` (what the generation did; None
    when nothing was needed), ``filter_`` (the :class:`~synaug.filters.FilterResult`: images
    scored and kept per class or cell; None without a filter).

    >>> sampler = synaug.SyntheticOverSampler("embedded", store="synthetic/")  # doctest: +SKIP
    >>> balanced = sampler.fit_resample(train)  # doctest: +SKIP
    """

    _parameter_constraints: dict[str, tuple[Callable[[Any], bool], str]] = {
        "generator": (_is_generator, "a generator spec such as 'embedded', or a loaded synaug Generator"),
        "sampling_strategy": (_is_strategy, f"one of {', '.join(SAMPLING_WORDS + STRATEGIES)}, ('fill-to', N), ('budget', B) or a dict of final counts per class"),
        "templates": (_is_templates, f"None, a list of templates with {{class}}, or one of the template sets {', '.join(TEMPLATE_SETS)}"),
        "descriptions": (lambda v: v is None or isinstance(v, (str, os.PathLike, Mapping)), "None, a descriptions file or a mapping of prompts per class"),
        "store": (lambda v: isinstance(v, (str, os.PathLike)) and bool(str(v).strip()), "a folder for the synthetic images, e.g. store='synthetic/'"),
        "random_state": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative int, the seed every image derives from"),
        "guidance": (lambda v: v is None or isinstance(v, Guidance), "None or a synaug.Guidance"),
        "exemplars": (lambda v: v is None or isinstance(v, ExemplarSpec), "None or a synaug.ExemplarSpec, e.g. ExemplarSpec('real', strength=0.5)"),
        "filter": (lambda v: v is None or isinstance(v, (FilterSpec, Mapping)), "None, a synaug.FilterSpec or a mapping of its fields, e.g. FilterSpec(classifier='reference', overgenerate=2)"),
        "class_prompt_names": (lambda v: v is None or isinstance(v, Mapping), "None or a mapping of class name to prompt name"),
        "negative_prompt": (lambda v: v is None or isinstance(v, str), "None or a prompt"),
        "overwrite": (lambda v: isinstance(v, bool), "True or False"),
        "progress": (lambda v: isinstance(v, bool), "True or False"),
    }

    def __init__(
        self,
        generator: "str | Generator" = "embedded",
        *,
        sampling_strategy: str | Mapping | tuple = "auto",
        templates: Sequence[str] | str | None = None,
        descriptions: str | os.PathLike | Mapping | None = None,
        store: str | os.PathLike | None = None,
        random_state: int = 0,
        guidance: Guidance | None = None,
        exemplars: ExemplarSpec | None = None,
        filter: FilterSpec | Mapping | None = None,
        class_prompt_names: Mapping[str, str] | None = None,
        negative_prompt: str | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ):
        self.generator = generator
        self.sampling_strategy = sampling_strategy
        self.templates = templates
        self.descriptions = descriptions
        self.store = store
        self.random_state = random_state
        self.guidance = guidance
        self.exemplars = exemplars
        self.filter = filter
        self.class_prompt_names = class_prompt_names
        self.negative_prompt = negative_prompt
        self.overwrite = overwrite
        self.progress = progress

    def fit_resample(self, dataset: LabeledImages) -> LabeledImages:
        """``dataset`` followed by the synthetic images that balance it (``is_synthetic`` True).

        Generates only what the store lacks, so calling it again (or after an interruption)
        reuses the finished images.
        """
        self._check_params()
        if not isinstance(dataset, LabeledImages):
            raise SynaugError(f"fit_resample takes a synaug LabeledImages dataset, not a {type(dataset).__name__}; load it with synaug.load_dataset.")
        spec = self._filter_spec()
        self.plan_ = self.make_plan(dataset)
        final = self.plan_.synthetic_counts if self.plan_.keep_counts is None else self.plan_.keep_counts
        self.sampling_strategy_ = dict(zip(self._cell_names(self.plan_), final.ravel().tolist()))
        self.summary_ = self.filter_ = None
        if self.plan_.total == 0:
            return dataset
        steps = None if spec is None else spec.steps(DEFAULT_CACHE, progress=self.progress)  # a bad checkpoint fails before generating
        self.summary_ = self._generate(self.plan_, dataset)
        from synaug.generate.store import FILTER_FILE, SyntheticStore
        from synaug.pipeline.ablations import build_training_set

        store = SyntheticStore(self.store)
        if steps is not None:
            from synaug.filters.select import filter_store

            self.filter_ = filter_store(store, steps)
        elif (store.root / FILTER_FILE).is_file():
            warnings.warn(
                f"{store.root} holds the decisions of an earlier filter, which decide the images used; pass that filter "
                "again, or overwrite=True to start the store afresh.", SynaugWarning, stacklevel=2,
            )
        synthetic = store.load(dataset.class_names, dataset.group_names, in_memory=dataset.in_memory)
        return build_training_set("fill", dataset, synthetic)

    def make_plan(self, dataset: LabeledImages) -> SynthesisPlan:
        """The synthesis plan ``fit_resample`` runs for ``dataset``, over-generated by the filter's factor (nothing is generated)."""
        self._check_params()
        spec = self._filter_spec()
        strategy, target, budget = self._strategy(dataset)
        templates = None if self.templates is None or isinstance(self.templates, str) else list(self.templates)
        plan = plan_for_dataset(
            dataset, strategy, target=target, budget=budget, templates=templates,
            template_set=self.templates if isinstance(self.templates, str) else None, descriptions=self.descriptions,
            class_prompt_names=self.class_prompt_names, negative_prompt=self.negative_prompt, seed=self.random_state,
        )
        return plan if spec is None or spec.overgenerate == 1 else overgenerate(plan, spec.overgenerate)

    # ---- the steps -----------------------------------------------------------------------
    def _check_params(self) -> None:
        """A one-line error naming the first parameter whose value its declared check refuses."""
        for name, (accepts, expected) in self._parameter_constraints.items():
            value = getattr(self, name)
            if not accepts(value):
                raise SynaugError(f"SyntheticOverSampler {name}={value!r} is not valid; give {expected}.")

    def _filter_spec(self) -> FilterSpec | None:
        """The ``filter`` parameter as a checked :class:`FilterSpec` (a mapping is read like a run config's section)."""
        if self.filter is None:
            return None
        spec = self.filter
        if isinstance(spec, Mapping):
            from synaug.config import from_dict

            try:
                spec = from_dict(FilterSpec, dict(spec), where="filter")
            except SynaugError as exc:
                raise SynaugError(f"SyntheticOverSampler filter: {exc}") from None
        if not spec.active:
            raise SynaugError("SyntheticOverSampler filter sets no filter; give clip or classifier (e.g. classifier='reference'), or filter=None.")
        return spec

    def _strategy(self, dataset: LabeledImages) -> tuple[str | dict, int | None, int | None]:
        """(strategy or final counts, target, budget) for :func:`plan_for_dataset`."""
        chosen = self.sampling_strategy
        if isinstance(chosen, (tuple, list)):
            return chosen[0], (chosen[1] if chosen[0] == "fill-to" else None), (chosen[1] if chosen[0] == "budget" else None)
        if isinstance(chosen, Mapping):
            return dict(chosen), None, None
        if chosen in ("auto", "all", "not majority"):  # the majority gets nothing either way
            return "fill-to-max", None, None
        if chosen in ("minority", "not minority"):
            counts = dataset.cell_counts() if dataset.groups is not None else dataset.class_counts()
            keys = [(c, g) for c in dataset.class_names for g in dataset.group_names] if dataset.groups is not None else dataset.class_names
            flat = counts.ravel()
            smallest = flat == flat.min()
            chosen_keys = [k for k, small in zip(keys, smallest) if small == (chosen == "minority")]
            return {key: int(flat.max()) for key in chosen_keys}, None, None
        return chosen, None, None

    def _generate(self, plan: SynthesisPlan, dataset: LabeledImages) -> "GenerationSummary":
        from synaug.generate.loading import check_vocabulary, load_generator
        from synaug.generate.runner import generate_plan
        from synaug.generate.store import SyntheticStore

        hooks = [] if self.guidance is None else [self.guidance.hook(dataset, plan.class_names)]
        exemplars = self.exemplars or ExemplarSpec()
        if isinstance(self.generator, str):
            check_vocabulary(plan, self.generator)
            generator = load_generator(self.generator, **exemplars.generator_settings())
        elif exemplars.generator_settings():
            raise SynaugError("exemplar settings are loading settings; pass the generator as a spec string, or load it with them (synaug.load_generator).")
        else:
            generator = self.generator
        store = SyntheticStore(self.store)
        if self.overwrite:
            store.clear()
        real = dataset if exemplars.source is not None else None
        return generate_plan(plan, generator, store, hooks=hooks, reference_images=real, progress=self.progress)

    @staticmethod
    def _cell_names(plan: SynthesisPlan) -> list:
        if plan.group_names is None:
            return list(plan.class_names)
        return [(c, g) for c in plan.class_names for g in plan.group_names]

