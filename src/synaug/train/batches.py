"""Batches for training and inference: in-memory data sliced on the device, file-backed data
streamed through a ``DataLoader``, both in the same seeded order (see :class:`BatchSource`)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Iterator

import torch

from synaug.data.dataset import LabeledImages, stack_images
from synaug.errors import SynaugError


@dataclass
class Batch:
    """A batch on the device: uint8 images, class labels, synthetic flags and each image's position in the dataset."""

    images: torch.Tensor
    labels: torch.Tensor
    is_synthetic: torch.Tensor
    index: torch.Tensor


class _FileImages(torch.utils.data.Dataset):
    """Decodes file-backed images in DataLoader workers.

    A SynaugError (a corrupt file, images of different sizes) comes back as the batch's
    images, for the main process to raise with its own one-line message: raised in a worker
    it would reach the user wrapped in the worker's traceback.
    """

    def __init__(self, data: LabeledImages):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        try:
            return self.data.load(index), index
        except SynaugError as error:
            return error, index

    def collate(self, items) -> tuple[torch.Tensor | SynaugError, torch.Tensor]:
        """(images, indices) of one batch; the images are the first SynaugError when one was raised."""
        indices = [index for _, index in items]
        errors = [image for image, _ in items if isinstance(image, SynaugError)]
        try:
            images = errors[0] if errors else stack_images([image for image, _ in items], [self.data.files[i] for i in indices])
        except SynaugError as error:
            images = error
        return images, torch.tensor(indices)


class BatchSource:
    """Yields :class:`Batch` objects for one pass over ``data``.

    In-memory data is copied to the device once (kept on the host when it would take more
    than half the free GPU memory) and sliced by a seeded permutation; file-backed data
    streams through a ``DataLoader`` that loads the same index batches. ``shuffle=True`` drops
    the last incomplete batch unless the whole set is smaller than one batch. With
    ``world_size`` processes, each yields its ``rank``-th contiguous part of every batch.
    """

    def __init__(
        self, data: LabeledImages, batch_size: int, device: torch.device, shuffle: bool, seed: int = 0, num_workers: int = 0,
        rank: int = 0, world_size: int = 1,
    ):
        if min(batch_size, len(data)) % world_size:
            raise SynaugError(
                f"a batch of {min(batch_size, len(data))} images cannot be split evenly between {world_size} processes; "
                f"choose a batch size that is a multiple of {world_size} (and at most the {len(data)} training images)."
            )
        self.data = data
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.labels = torch.from_numpy(data.labels).to(device)
        self.is_synthetic = torch.from_numpy(data.is_synthetic).to(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.images = self.loader = None
        if data.in_memory:
            fits = device.type != "cuda" or data.images.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
            self.images = data.images.to(device) if fits else data.images.pin_memory()
        else:
            files = _FileImages(data)
            self.loader = torch.utils.data.DataLoader(
                files,
                batch_sampler=_IndexBatches(self),
                num_workers=num_workers,
                persistent_workers=num_workers > 0,
                collate_fn=files.collate,
                pin_memory=device.type == "cuda",
            )

    def __len__(self) -> int:
        n = len(self.data)
        if self.shuffle:
            return max(1, n // self.batch_size)
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.images is not None:
            yield from self._in_memory()
        else:
            yield from self._streamed()

    def _order(self) -> torch.Tensor:
        n = len(self.data)
        return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

    def index_batches(self, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        """This process's part of each batch of the (shuffled) order, as index tensors on ``device``."""
        order = self._order().to(device)
        size = min(self.batch_size, len(order))
        for step in range(len(self)):
            yield order[step * size : (step + 1) * size].tensor_split(self.world_size)[self.rank]

    def _in_memory(self) -> Iterator[Batch]:
        for index in self.index_batches(self.images.device):
            images = self.images[index].to(self.device, non_blocking=True)
            index = index.to(self.device)
            yield Batch(images, self.labels[index], self.is_synthetic[index], index)

    def _streamed(self) -> Iterator[Batch]:
        for images, index in self.loader:
            if isinstance(images, SynaugError):
                raise images
            index = index.to(self.device)
            yield Batch(images.to(self.device, non_blocking=True), self.labels[index], self.is_synthetic[index], index)


class _IndexBatches(torch.utils.data.Sampler):
    """The index batches of a :class:`BatchSource`, as the ``batch_sampler`` of its DataLoader."""

    def __init__(self, source: BatchSource):
        # A weak reference: with a strong one, source -> loader -> sampler -> source is a cycle, and
        # the loader's workers would outlive the source until a garbage collection, which then
        # waits seconds for each of them.
        self.source = weakref.proxy(source)

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[list[int]]:
        return (index.tolist() for index in self.source.index_batches())
