"""The installed Fashion-MNIST, found as a user's run finds it, for the tests that need the real images."""

from __future__ import annotations

from pathlib import Path

import pytest

from synaug.data.fashion_mnist import find_fashion_mnist
from synaug.errors import SynaugError


def real_fashion_mnist() -> Path | None:
    """The Fashion-MNIST folder: $SYNAUG_FASHION_MNIST, else the Debian path; None when neither holds it."""
    try:
        return find_fashion_mnist()
    except SynaugError:
        return None


REAL_FASHION_MNIST = real_fashion_mnist()
needs_real_fashion_mnist = pytest.mark.skipif(
    REAL_FASHION_MNIST is None, reason="Fashion-MNIST not found: set SYNAUG_FASHION_MNIST or install dataset-fashion-mnist"
)
