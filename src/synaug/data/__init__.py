"""Data: the labelled-image dataset type, loaders and long-tail benchmark builders."""

from synaug.data.benchmarks import (
    default_reserve,
    draw_longtail,
    fashion_mnist_balanced,
    fashion_mnist_lt,
    fashion_mnist_reserved,
    longtail_from,
    longtail_indices,
    pool_indices,
)
from synaug.data.cifar import load_cifar
from synaug.data.dataset import LabeledImages, decode_image
from synaug.data.describe import describe, plot_class_histogram
from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist
from synaug.data.folders import (
    check_folder_name,
    class_folder_names,
    load_image_folder,
    load_split_list,
    sanitize_folder_name,
)
from synaug.data.longtail import balanced_subset, longtail_counts, make_longtail, shot_groups
from synaug.data.registry import DATASET_KINDS, SubsetIndex, load_dataset, load_index, save_index, write_atomic
from synaug.data.splits import disjoint_split

__all__ = [
    "DATASET_KINDS",
    "FASHION_MNIST_CLASSES",
    "LabeledImages",
    "SubsetIndex",
    "balanced_subset",
    "check_folder_name",
    "class_folder_names",
    "decode_image",
    "default_reserve",
    "describe",
    "disjoint_split",
    "draw_longtail",
    "fashion_mnist_balanced",
    "fashion_mnist_lt",
    "fashion_mnist_reserved",
    "find_fashion_mnist",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_index",
    "load_split_list",
    "longtail_counts",
    "longtail_from",
    "longtail_indices",
    "make_longtail",
    "plot_class_histogram",
    "pool_indices",
    "sanitize_folder_name",
    "save_index",
    "shot_groups",
    "write_atomic",
]
