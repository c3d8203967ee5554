"""Datasets: the synthetic images (determinism, balance, no colour shortcut, learnable) and the
torchvision loaders on small files written here in each dataset's own on-disk format."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.training.data import DATASETS, NORMALISATION, load_data

# -- synthetic ------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_by_seed_and_split():
    a = load_data(seed=3, train_size=1500, eval_size=300)
    b = load_data(seed=3, train_size=1500, eval_size=300)
    c = load_data(seed=4, train_size=1500, eval_size=300)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert torch.equal(a.eval.images, b.eval.images)
    assert not torch.allclose(a.train.images, c.train.images)
    # the held-out split is another stream: no image of it appears among the training images
    train_flat, eval_flat = a.train.images.flatten(1), a.eval.images.flatten(1)
    assert torch.cdist(eval_flat, train_flat).min() > 1.0
    # a smaller split is a prefix of a larger one (chunks are generated independently)
    small = load_data(seed=3, train_size=700, eval_size=10)
    assert torch.equal(small.train.images, a.train.images[:700])


def test_synthetic_shapes_balance_and_scale():
    data = load_data()  # the defaults
    assert (data.num_classes, data.input_size, data.name) == (10, (3, 32, 32), "synthetic")
    assert (len(data.train), len(data.eval)) == (10_000, 2_000)
    x, y = data.train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < 10
    assert torch.bincount(data.train.labels, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(data.eval.labels, minlength=10).tolist() == [200] * 10
    assert abs(float(data.train.images.mean())) < 0.05
    assert 0.8 < float(data.train.images.std()) < 1.2


def test_synthetic_class_is_not_in_the_mean_colour():
    data = load_data(seed=0, train_size=5000, eval_size=2000)
    means = data.train.images.mean(dim=(2, 3)).double().numpy()
    labels = data.train.labels.numpy()
    centroids = np.stack([means[labels == c].mean(axis=0) for c in range(10)])
    held = data.eval.images.mean(dim=(2, 3)).double().numpy()
    pred = ((held[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    accuracy = (pred == data.eval.labels.numpy()).mean()
    assert accuracy < 0.16  # chance is 0.10; 2000 samples put 0.16 far outside the noise


@pytest.mark.slow
def test_synthetic_is_learnable_by_a_small_cnn():
    torch.manual_seed(0)
    data = load_data(seed=0, train_size=4000, eval_size=1000)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = data.train.images, data.train.labels
    for _ in range(250):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(data.eval.images).argmax(1) == data.eval.labels).float().mean().item()
    assert accuracy > 0.5, accuracy


# -- writing each dataset's own format -------------------------------------------------------------


def _write_cifar(root, rng, hundred: bool, per_file: int = 4) -> dict:
    """Tiny CIFAR pickles (uint8 rows of 3072 in CHW order); returns what was written."""
    if hundred:
        folder, names, key = root / "cifar-100-python", ["train"], "fine_labels"
        test, meta = "test", ("meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                                       "coarse_label_names": [f"k{i}" for i in range(20)]})
        classes = 100
    else:
        folder, names, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
        test, meta = "test_batch", ("batches.meta", {"label_names": [f"c{i}" for i in range(10)],
                                                     "num_cases_per_batch": per_file, "num_vis": 3072})
        classes = 10
    folder.mkdir(parents=True)
    written = {"train": [], "test": []}
    for split, files in (("train", names), ("test", [test])):
        for name in files:
            data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, classes, size=per_file).tolist()
            entry = {"data": data, key: labels, "filenames": [f"{name}_{i}.png" for i in range(per_file)]}
            if hundred:
                entry["coarse_labels"] = [label // 5 for label in labels]
            else:
                entry["batch_label"] = name
            with open(folder / name, "wb") as fh:
                pickle.dump(entry, fh)
            written[split].append((data, labels))
    with open(folder / meta[0], "wb") as fh:
        pickle.dump(meta[1], fh)
    return {s: (np.concatenate([d for d, _ in parts]), sum((labels for _, labels in parts), []))
            for s, parts in written.items()}


def _publish_fixture_checksums(monkeypatch, root, hundred: bool) -> None:
    """Make the tiny files written here the "official" ones: torchvision's published MD5 lists
    are replaced by the fixture files' MD5s, computed by coreutils' md5sum."""
    from torchvision import datasets

    cls = datasets.CIFAR100 if hundred else datasets.CIFAR10
    folder = root / cls.base_folder

    def md5(name):
        return subprocess.run(["md5sum", str(folder / name)], capture_output=True, text=True,
                              check=True).stdout.split()[0]

    monkeypatch.setattr(cls, "train_list", [[f, md5(f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})


def _write_idx(path, array: np.ndarray) -> None:
    """An idx-ubyte file: zero bytes, type 0x08 (uint8), the rank, big-endian sizes, the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, rng, folder: str, n_train: int = 12, n_test: int = 5) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels.tolist())
    return written


def _expected_cifar(rows: np.ndarray, name: str) -> torch.Tensor:
    """Hand normalisation: CHW rows scaled to [0, 1], minus the mean, over the std."""
    mean, std = NORMALISATION[name]
    x = rows.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    x = (x - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    return torch.from_numpy(x)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loaders_read_their_own_format(tmp_path, name, monkeypatch):
    written = _write_cifar(tmp_path, np.random.default_rng(0), hundred=name == "cifar100")
    _publish_fixture_checksums(monkeypatch, tmp_path, hundred=name == "cifar100")
    data = load_data(name, data_dir=tmp_path)
    assert data.num_classes == (100 if name == "cifar100" else 10)
    assert data.input_size == (3, 32, 32)
    for split, ds in (("train", data.train), ("test", data.eval)):
        rows, labels = written[split]
        assert len(ds) == len(labels)
        images = torch.stack([ds[i][0] for i in range(len(ds))]).double()
        assert images.shape == (len(labels), 3, 32, 32)
        assert [int(ds[i][1]) for i in range(len(ds))] == labels
        torch.testing.assert_close(images, _expected_cifar(rows, name), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_loaders_read_idx_files(tmp_path, name, folder):
    written = _write_mnist(tmp_path, np.random.default_rng(1), folder)
    data = load_data(name, data_dir=tmp_path, train_size=10)
    assert data.num_classes == 10 and data.input_size == (1, 28, 28)
    assert len(data.train) == 10 and len(data.eval) == 5  # train_size keeps the first 10
    (mean,), (std,) = NORMALISATION[name]
    for split, ds in (("train", data.train), ("test", data.eval)):
        images, labels = written[split]
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (1, 28, 28) and int(y) == labels[i]
            expected = (torch.from_numpy(images[i]).double() / 255.0 - mean) / std
            torch.testing.assert_close(x[0].double(), expected, atol=1e-5, rtol=0)


def _crops(image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Every 32x32 crop of the image padded by 4 with ``fill``, and their mirror images."""
    padded = fill.view(3, 1, 1).expand(3, 40, 40).clone()
    padded[:, 4:36, 4:36] = image
    crops = torch.stack([padded[:, i:i + 32, j:j + 32] for i in range(9) for j in range(9)])
    return torch.cat([crops, crops.flip(-1)])  # first 81 unflipped (centre is index 40)


def test_cifar_augmentation_pads_crops_and_flips(tmp_path, monkeypatch):
    _write_cifar(tmp_path, np.random.default_rng(2), hundred=False)
    _publish_fixture_checksums(monkeypatch, tmp_path, hundred=False)
    plain = load_data("cifar10", data_dir=tmp_path)
    augmented = load_data("cifar10", data_dir=tmp_path, augment=True)
    mean, std = NORMALISATION["cifar10"]
    black = -torch.tensor(mean) / torch.tensor(std)  # a padded (zero) pixel after normalising
    torch.manual_seed(0)
    seen = set()
    for trial in range(40):
        i = trial % len(plain.train)
        candidates = _crops(plain.train[i][0], black)
        x = augmented.train[i][0]
        match = (candidates - x).flatten(1).abs().amax(1) < 1e-5
        assert match.any(), "augmented image is not a padded crop (or its mirror) of the original"
        seen.add(int(match.nonzero()[0]))
    assert any(k >= 81 for k in seen), "never flipped"
    assert any(k % 81 != 40 for k in seen), "never shifted"
    # the held-out split is never augmented
    torch.testing.assert_close(augmented.eval[0][0], plain.eval[0][0])


# -- errors ------------------------------------------------------------------------------------------


def test_missing_files_name_the_directory_and_the_fix(tmp_path):
    with pytest.raises(GradlabError) as err:
        load_data("cifar10", data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message and "--download" in message
    with pytest.raises(GradlabError, match="MNIST.*--download"):
        load_data("mnist", data_dir=tmp_path / "nowhere")


def test_failed_download_is_a_one_line_error(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.cifar as cifar_module

    def offline(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline)
    with pytest.raises(GradlabError, match="could not download cifar10.*network unreachable") as err:
        load_data("cifar10", data_dir=tmp_path, download=True)
    assert "\n" not in str(err.value)


def test_data_dir_pointing_at_the_dataset_folder_gets_a_hint(tmp_path):
    _write_cifar(tmp_path, np.random.default_rng(3), hundred=False)
    with pytest.raises(GradlabError, match="pass its parent"):
        load_data("cifar10", data_dir=tmp_path / "cifar-10-batches-py")


def test_broken_files_are_a_one_line_error(tmp_path, monkeypatch):
    _write_cifar(tmp_path, np.random.default_rng(4), hundred=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    _publish_fixture_checksums(monkeypatch, tmp_path, hundred=False)  # checksums pass, reading fails
    with pytest.raises(GradlabError, match="could not read cifar10") as err:
        load_data("cifar10", data_dir=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet"), "use one of synthetic, cifar10, cifar100, mnist, fashion-mnist"),
        (dict(name="cifar10"), "--data-dir"),
        (dict(name="synthetic", augment=True), "CIFAR recipe"),
        (dict(name="mnist", data_dir=".", augment=True), "CIFAR recipe"),
        (dict(name="synthetic", train_size=0), "train_size"),
        (dict(name="synthetic", eval_size=-5), "eval_size"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(GradlabError, match=match) as err:
        load_data(**kwargs)
    assert "\n" not in str(err.value)


def test_real_subset_larger_than_the_split_is_refused(tmp_path):
    _write_mnist(tmp_path, np.random.default_rng(5), "MNIST")
    with pytest.raises(GradlabError, match="exceeds the 12 images"):
        load_data("mnist", data_dir=tmp_path, train_size=13)


def test_dataset_names():
    assert DATASETS == ["synthetic", "cifar10", "cifar100", "mnist", "fashion-mnist"]


def test_normalisation_constants_are_the_training_set_statistics():
    # per-channel mean and std of each training set's pixels on the [0, 1] scale, as published
    # with the datasets' usual recipes (not the 0.2023/0.1994/0.2010 std often copied for CIFAR-10)
    expected = {
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        "mnist": ((0.1307,), (0.3081,)),
        "fashion-mnist": ((0.2860,), (0.3530,)),
    }
    for name, (mean, std) in expected.items():
        np.testing.assert_allclose(NORMALISATION[name][0], mean, atol=5e-4)
        np.testing.assert_allclose(NORMALISATION[name][1], std, atol=5e-4)


class _Payload:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# The MD5s the CIFAR authors publish for their files (as torchvision lists them), written out
# here rather than read from torchvision.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


@pytest.mark.parametrize("victim", ["data_batch_1", "batches.meta", "test_batch"])
def test_a_crafted_pickle_is_refused_before_it_is_unpickled(tmp_path, victim):
    _write_cifar(tmp_path, np.random.default_rng(6), hundred=False)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / victim, "wb") as fh:
        pickle.dump(_Payload(str(marker)), fh)
    with pytest.raises(GradlabError, match="is not the official cifar10 file") as err:
        load_data("cifar10", data_dir=tmp_path)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and "--download" in message
    if victim == "data_batch_1":  # the first file checked: the error quotes its published MD5
        assert CIFAR10_MD5[victim] in message


def test_cifar_files_in_the_right_format_but_not_the_official_ones_are_refused(tmp_path):
    # What torchvision itself refuses (its checksums do not match) gradlab refuses too.
    _write_cifar(tmp_path, np.random.default_rng(7), hundred=True)
    with pytest.raises(GradlabError, match="MD5"):
        load_data("cifar100", data_dir=tmp_path)
