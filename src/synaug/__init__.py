"""synaug: fix class and group imbalance with synthetic images from diffusion models."""

__version__ = "0.1.0"
