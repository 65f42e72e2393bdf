"""Filters for synthetic images: CLIP image-text score, classifier confidence, over-generation.

See :mod:`synaug.filters.select` for the rules and what is recorded, and
:mod:`synaug.filters.scorers` for the scores.
"""

from synaug.filters.reference import REFERENCE_NAME, fashion_mnist_reference
from synaug.filters.scorers import ClassifierScorer, ClipScorer, Scorer
from synaug.filters.select import FilterResult, FilterStep, filter_store
from synaug.filters.spec import FilterSpec

__all__ = [
    "REFERENCE_NAME",
    "ClassifierScorer",
    "ClipScorer",
    "FilterResult",
    "FilterSpec",
    "FilterStep",
    "Scorer",
    "fashion_mnist_reference",
    "filter_store",
]
