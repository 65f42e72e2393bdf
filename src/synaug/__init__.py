"""synaug: fix class and group imbalance with synthetic images from diffusion models.

The public API, importable from here (each name is loaded on first use, so ``import synaug``
stays quick)::

    import synaug

    train, test = synaug.fashion_mnist_lt(imbalance_factor=100)
    sampler = synaug.SyntheticOverSampler("embedded", store="synthetic/")
    balanced = sampler.fit_resample(train)
    clf = synaug.Classifier(epochs=30).fit(balanced).crt(balanced)
    print(clf.score(test)["top1"])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

import synaug.runtime  # noqa: E402,F401  (keeps freed memory for reuse: see its docstring)

_EXPORTS = {
    "Classifier": "synaug.api.classifier",
    "ExemplarSpec": "synaug.generate.exemplars",
    "FilterSpec": "synaug.filters.spec",
    "Guidance": "synaug.api.resampler",
    "LabeledImages": "synaug.data.dataset",
    "SynaugError": "synaug.errors",
    "SynaugWarning": "synaug.errors",
    "SyntheticOverSampler": "synaug.api.resampler",
    "export_store": "synaug.export",
    "fashion_mnist_lt": "synaug.data.benchmarks",
    "load_dataset": "synaug.data.registry",
    "load_generator": "synaug.generate.loading",
    "run": "synaug.api.running",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'synaug' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
