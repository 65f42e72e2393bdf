"""Setting part of a dataset aside, disjoint from the rest."""

from __future__ import annotations

import math

import numpy as np

from synaug.errors import SynaugError


def disjoint_split(n: int, reserved: int | float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (reserved, pool) index arrays that never overlap.

    A numpy ``RandomState(seed)`` permutation is cut in two: its first ``reserved`` indices
    (a count, or a fraction of ``n``) are set aside, the rest form the pool. For
    Fashion-MNIST train (n = 60,000, seed 0) the reserved half trains the embedded
    generator and long-tailed sets are drawn from the pool only.
    """
    if not math.isfinite(reserved):
        raise SynaugError(f"cannot reserve {reserved} of {n} items; give a fraction in [0, 1] or a count up to {n}.")
    count = int(round(reserved * n)) if isinstance(reserved, float) else int(reserved)
    if not 0 <= count <= n:
        raise SynaugError(f"cannot reserve {reserved} of {n} items; give a fraction in [0, 1] or a count up to {n}.")
    order = np.random.RandomState(seed).permutation(n)
    return np.sort(order[:count]), np.sort(order[count:])
