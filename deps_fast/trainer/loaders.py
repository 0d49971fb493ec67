"""Loaders: every data kind gives training batches through one contract, `len(loader)` (batches per epoch)
and `loader.batch(epoch, index)` (the batch on the device, in the requested layout and size), so the trainer
never asks which kind of data it has.

- `DeviceLoader`: a small data set held on the device as uint8; augmentation (pad-and-crop, flip) runs there
  as batched tensor ops, and every random choice comes from a generator seeded by (seed, epoch, batch), so a
  batch is a pure function of those numbers: the same on every rank, for any world size, after a resume.
- `FolderLoader`: an ImageFolder tree read by torchvision in worker processes; `batch(epoch, index)` for an
  index other than the next one (a resume mid-epoch) restarts the epoch's sampler at that index without
  decoding the skipped images.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from deps_fast import _validate
from deps_fast._util import seeded_generator


def per_rank_batch(batch_size, rank, world_size) -> int:
    """The images each of `world_size` ranks takes of a GLOBAL batch of `batch_size`."""
    batch_size = _validate.positive_int("batch_size", batch_size)
    world_size = _validate.positive_int("world_size", world_size)
    _validate.integer("rank", rank, minimum=0, maximum=world_size - 1,
                      allowed=f"an integer in [0, world_size={world_size})")
    if batch_size % world_size:
        raise ValueError(f"batch_size is the global batch and must be divisible by world_size={world_size}, "
                         f"got batch_size={batch_size}")
    return batch_size // world_size


def to_output(x: torch.Tensor, channels_last: bool, dtype: torch.dtype = torch.float32,
              size: Optional[int] = None) -> torch.Tensor:
    """x in the dtype, memory format and (square) size the network is fed with."""
    x = x.to(dtype)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return resize_batch(x, size)


def resize_batch(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Bilinear resize to size x size (antialiased when shrinking); None or the same size: x itself."""
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


def pad_crop_flip(images: torch.Tensor, pad: int, offsets_y: torch.Tensor, offsets_x: torch.Tensor,
                  flips: torch.Tensor) -> torch.Tensor:
    """Per sample: zero-pad by `pad`, crop H x W at (offsets_y, offsets_x) of the padded image, then mirror
    left-right where `flips` is set. One torch.gather over the flattened padded images does the whole batch
    (3-6x faster than 4-D advanced indexing on CPU); the flip is folded into the column index for free."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    device = images.device
    offsets_y, offsets_x, flips = offsets_y.to(device), offsets_x.to(device), flips.to(device)
    rows = offsets_y[:, None] + torch.arange(height, device=device)  # [n, H]
    forward = torch.arange(width, device=device)
    cols = offsets_x[:, None] + torch.where(flips[:, None], width - 1 - forward, forward)  # [n, W]
    flat = rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]  # [n, H, W] into the padded H'*W' plane
    flat = flat.view(n, 1, height * width).expand(n, channels, height * width)
    return torch.gather(padded.flatten(2), 2, flat).view(n, channels, height, width)



class DeviceLoader:
    """Batches of a TensorDataset living on the device; augmentation on the device, no worker processes.

    Training (train=True): `batch_size` is the GLOBAL batch. Each epoch is a permutation of all N samples
    drawn from a CPU generator seeded by (seed, epoch), identical on every rank; global batch i is
    perm[i*B:(i+1)*B] and rank r takes rows [r*B/W, (r+1)*B/W) of it. Crop offsets and flip bits are drawn
    for the whole global batch from a generator seeded by (seed, epoch, i) and then sliced, so `batch(epoch,
    i)` is a pure function of (seed, epoch, i, rank, world_size) and W processes see exactly the images one
    process sees. drop_last defaults to True.

    Evaluation (train=False): no augmentation, no shuffle; rank r takes the contiguous slice
    [r*N//W, (r+1)*N//W) of the samples in order, in batches of batch_size // W, the last partial batch kept
    (drop_last defaults to False). Ranks may then differ by one batch; the trainer evaluates on rank 0 with
    world_size 1 anyway. `epoch` is ignored.

    `size` resizes every batch to size x size on the device (None: the images' own size).
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, *, batch_size: int, device, mean, std,
                 pad: int = 0, flip: bool = False, train: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: Optional[bool] = None, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32, size: Optional[int] = None):
        _check_images_labels(images_u8, labels)
        self.size = None if size is None else _validate.positive_int("size", size)
        self.per_rank_batch = per_rank_batch(batch_size, rank, world_size)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.train, self.seed = bool(train), int(seed)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.pad, self.flip = _validate.integer("pad", pad, minimum=0, allowed="a non-negative integer"), bool(flip)
        self.channels_last, self.dtype = bool(channels_last), _check_float_dtype(dtype)
        self.device = torch.device(device)
        self.images = images_u8.to(self.device)  # uint8 on the device: 4x smaller than float
        self.labels = labels.to(self.device, torch.long)
        self._scale, self._shift = _normalizer(mean, std, images_u8.shape[1], self.device)
        self._span = self._rank_span()
        self._plan: tuple = (None, None, None)  # (epoch, order, draws), see _epoch_plan
        if len(self) == 0:
            raise ValueError(f"batch_size={batch_size} leaves rank {rank} no batch (drop_last={self.drop_last}; "
                             f"{self._span[1] - self._span[0]} of the {self.num_samples} samples are its to read)")

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def skipped_files(self) -> list:
        return []  # tensors in memory: nothing to be unreadable

    def _rank_span(self) -> tuple:
        if self.train:
            return 0, self.num_samples  # every rank walks the same global permutation
        n, w, r = self.num_samples, self.world_size, self.rank
        return r * n // w, (r + 1) * n // w

    def __len__(self) -> int:
        """Batches per epoch (for this rank)."""
        size = self.batch_size if self.train else self.per_rank_batch
        count = self._span[1] - self._span[0]
        return count // size if self.drop_last else -(-count // size)

    def epoch(self, epoch: int) -> Iterator[tuple]:
        for index in range(len(self)):
            yield self.batch(epoch, index)

    def __iter__(self):
        if self.train:
            raise TypeError("iterate DeviceLoader.epoch(epoch) for training: the epoch number seeds the shuffle")
        return self.epoch(0)

    def batch(self, epoch: int, index: int) -> tuple:
        """(x float [b, C, H, W] normalized, y int64 [b]) of batch `index` of `epoch` for this rank."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(f"batch index must be in [0, {len(self)}), got {index!r}")
        if not self.train:
            start = self._span[0] + index * self.per_rank_batch
            stop = min(start + self.per_rank_batch, self._span[1])
            return self._finish(self.images[start:stop]), self.labels[start:stop]
        return self._train_batch(int(epoch), int(index))

    def _train_batch(self, epoch: int, index: int) -> tuple:
        order, draws = self._epoch_plan(epoch)
        global_rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        size = len(global_rows)  # < batch_size only for a kept last partial batch
        lo, hi = self.rank * size // self.world_size, (self.rank + 1) * size // self.world_size
        rows = global_rows[lo:hi]
        images = self.images[rows]
        if draws is not None:
            offsets_y, offsets_x, flips = draws[index, :, lo:hi]
            images = pad_crop_flip(images, self.pad, offsets_y, offsets_x, flips.bool())
        return self._finish(images), self.labels[rows]

    def _epoch_plan(self, epoch: int) -> tuple:
        """(order [N], augmentation draws [batches, 3, B] or None) of `epoch`, on the device. Drawn on the
        CPU (the same numbers on every device type) and moved once per epoch: a per-batch copy from pageable
        host memory would stall the host on the GPU's queue at every step."""
        if self._plan[0] != epoch:
            order = torch.randperm(self.num_samples, generator=seeded_generator("order", self.seed, epoch))
            draws = None
            if self.pad or self.flip:
                draws = torch.zeros(len(self), 3, self.batch_size, dtype=torch.long)
                for index in range(len(self)):
                    size = min(self.batch_size, self.num_samples - index * self.batch_size)
                    draws[index, :, :size] = self._augmentation_draws(epoch, index, size)
                draws = draws.to(self.device)
            self._plan = (epoch, order.to(self.device), draws)
        return self._plan[1:]

    def _augmentation_draws(self, epoch: int, index: int, size: int) -> torch.Tensor:
        """[3, size]: crop row offsets, crop column offsets and flip bits for the whole global batch `index`
        (each rank slices its part), from a generator seeded by (seed, epoch, index) alone."""
        generator = seeded_generator("augment", self.seed, epoch, index)
        offsets_y = torch.randint(0, 2 * self.pad + 1, (size,), generator=generator)
        offsets_x = torch.randint(0, 2 * self.pad + 1, (size,), generator=generator)
        flips = (torch.rand(size, generator=generator) < 0.5).long()
        return torch.stack([offsets_y, offsets_x, flips * int(self.flip)])

    def _finish(self, images_u8: torch.Tensor) -> torch.Tensor:
        # (x/255 - mean)/std as one multiply-add in float32, then the output dtype.
        x = torch.addcmul(self._shift, images_u8.float(), self._scale)
        return to_output(x, self.channels_last, self.dtype, self.size)



def _check_images_labels(images, labels):
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        kind = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"images_u8 must be a uint8 tensor [N, C, H, W], got {kind} of shape "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor [N], got {getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images_u8 has {images.shape[0]} images")


def _check_float_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (float32, bfloat16, float16), got {dtype!r}")
    return dtype


def _normalizer(mean, std, channels: int, device) -> tuple:
    """(scale, shift) with x_normalized = u8 * scale + shift, shaped [1, C, 1, 1]."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(f"mean and std need one value per channel ({channels}), got mean={tuple(mean)} "
                         f"std={tuple(std)}")
    if not bool((std_t > 0).all()):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(device)
    shift = (-mean_t / std_t).view(1, -1, 1, 1).to(device)
    return scale, shift



class BadImage(ValueError):
    """An image file of an ImageFolder tree cannot be read; the message names it and what to do."""


def _clean(exc: BadImage) -> BadImage:
    # a worker's exception arrives wrapped in its traceback text; keep the one line that names the file
    lines = [line for line in str(exc).splitlines() if "image file" in line]
    return BadImage(lines[-1].split("BadImage: ", 1)[-1] if lines else str(exc))


class CheckedImages(torch.utils.data.Dataset):
    """An ImageFolder dataset whose unreadable files (PIL raises OSError) either stop the run with BadImage
    naming the file or, with `skip`, come back as a blank image labelled -1 - index, which the loaders drop
    and count (the file is named in a warning and the count in the report)."""

    def __init__(self, base, skip: bool, shape: tuple):
        self.base, self.skip, self.shape = base, bool(skip), tuple(shape)

    def __len__(self) -> int:
        return len(self.base)

    def path(self, index: int) -> str:
        return str(self.base.samples[index][0])

    def __getitem__(self, index: int):
        try:
            return self.base[index]
        except OSError as exc:
            if not self.skip:
                raise BadImage(f"image file {self.path(index)} cannot be read ({exc}); remove or replace it, or "
                               f"rerun with --resume --skip-bad-images to skip unreadable files") from None
            return torch.zeros(self.shape), -1 - index


def drop_unreadable(x: torch.Tensor, y: torch.Tensor, dataset, skipped: list) -> tuple:
    """Remove the placeholders CheckedImages returned for unreadable files, naming each file once."""
    bad = y < 0
    if not bool(bad.any()):
        return x, y
    for code in y[bad].tolist():
        name = dataset.path(-1 - code) if hasattr(dataset, "path") else f"index {-1 - code}"
        if name not in skipped:
            skipped.append(name)
            warnings.warn(f"skipped unreadable image {name} (--skip-bad-images)", RuntimeWarning)
    return x[~bad], y[~bad]


class FolderLoader:
    """Training batches of an ImageFolder tree with DeviceLoader's contract: `len()` batches per epoch and
    `batch(epoch, index)` on the device. `batch_size` is GLOBAL: each rank reads its batch_size // world_size
    images of a DistributedSampler shard (drop_last), in worker processes that persist across epochs.

    Batches are expected in order; asking for another index (a resume mid-epoch) restarts the epoch's sampler
    at that index, so the skipped images are never decoded. The workers' augmentation draws are seeded by the
    loader, not replayed, so a resumed epoch sees the same images with other crops."""

    def __init__(self, dataset, *, batch_size: int, device, rank: int = 0, world_size: int = 1, seed: int = 0,
                 channels_last: bool = False, num_workers: int = 0):
        self.per_rank_batch = per_rank_batch(batch_size, rank, world_size)
        self.device, self.channels_last = torch.device(device), bool(channels_last)
        self._sampler = _SkippingSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                         drop_last=True)
        # The sampler runs in this process, so set_epoch / skip reach it while the workers persist.
        self._loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.per_rank_batch, sampler=self._sampler, drop_last=True,
            num_workers=num_workers, pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)
        self._cursor: tuple = (None, None)  # (epoch, index) the open iterator yields next
        self._iterator = None
        self.dataset = dataset
        self.skipped_files: list = []  # unreadable images skipped so far (--skip-bad-images)

    def __len__(self) -> int:
        return len(self._sampler) // self.per_rank_batch

    def batch(self, epoch: int, index: int) -> tuple:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(f"batch index must be in [0, {len(self)}), got {index!r}")
        if self._cursor != (epoch, index):
            self._sampler.set_epoch(epoch)
            self._sampler.skip = index * self.per_rank_batch
            self._iterator = iter(self._loader)
        try:
            x, y = next(self._iterator)
        except BadImage as exc:
            self._cursor = (None, None)
            raise _clean(exc) from None
        self._cursor = (epoch, index + 1)
        x, y = drop_unreadable(x, y, self.dataset, self.skipped_files)
        return (to_output(x.to(self.device, non_blocking=True), self.channels_last),
                y.to(self.device, non_blocking=True))


class _SkippingSampler(torch.utils.data.DistributedSampler):
    """A DistributedSampler that starts its shard `skip` samples in (DistributedSampler fixes the order per
    epoch, so the rest of an epoch is exactly what an uninterrupted run would have read)."""

    skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)


class DeviceBatches:
    """An iterable of (x, y) batches from `loader` moved to `device` in the network's layout (the evaluation
    side of an ImageFolder tree)."""

    def __init__(self, loader, device, channels_last: bool = False):
        self.loader, self.device, self.channels_last = loader, torch.device(device), bool(channels_last)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield (to_output(x.to(self.device, non_blocking=True), self.channels_last),
                   y.to(self.device, non_blocking=True))


class ElasticResolution:
    """OFA's elastic resolution on top of a training loader (same contract): each batch is resized on the
    device to a size drawn uniformly from `sizes` by a generator seeded with (seed, epoch, index), so every rank
    draws the same size and a resumed run the same sizes. Evaluation stays at the fixed resolution."""

    def __init__(self, loader, sizes, seed: int = 0):
        self.loader, self.sizes, self.seed = loader, tuple(int(s) for s in sizes), int(seed)
        assert self.sizes, "elastic resolution needs at least one size"

    @property
    def skipped_files(self) -> list:
        return self.loader.skipped_files

    def __len__(self) -> int:
        return len(self.loader)

    def size_at(self, epoch: int, index: int) -> int:
        generator = seeded_generator("resolution", self.seed, int(epoch), int(index))
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=generator))]

    def batch(self, epoch: int, index: int) -> tuple:
        x, y = self.loader.batch(epoch, index)
        return resize_batch(x, self.size_at(epoch, index)), y


def elastic_sizes(spec) -> Optional[tuple]:
    """(min, max, step) -> the sizes min, min + step, ..., up to max; None stays None."""
    if spec is None:
        return None
    lo, hi, step = spec
    return tuple(range(lo, hi + 1, step))
