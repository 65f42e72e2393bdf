"""synaug: fix class and group imbalance with synthetic images from diffusion models."""

__version__ = "0.1.0"

import synaug.runtime  # noqa: E402,F401  (keeps freed memory for reuse: see its docstring)
