"""Data: the labelled-image dataset type, loaders and long-tail benchmark builders."""

from synaug.data.dataset import LabeledImages, decode_image

__all__ = ["LabeledImages", "decode_image"]
