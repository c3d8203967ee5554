"""Datasets: the built-in synthetic images, and real image datasets read through torchvision.

``load_data(name, ...)`` returns a :class:`DataBundle` with a training split and a held-out
split for evaluation. Every dataset yields ``(image, label)`` pairs: a float tensor of shape
``input_size`` and an integer class index.

The synthetic dataset (the default)
-----------------------------------
Made on the fly, with no download, in a fraction of a second. Each image is 3x32x32 and shows
one *oriented stripe patch* (a sine grating under a round Gaussian window) on a cluttered
background. The class (10 of them) is the stripes' orientation and frequency together:

- orientation: class ``c`` has angle ``(c mod 5) * 36`` degrees, jittered by up to 7 degrees;
- frequency: classes 0-4 have wide stripes (period about 9 px), classes 5-9 narrow ones
  (about 4.5 px), each jittered by up to 10%.

Everything else is random and independent of the class, so no shortcut gives the label away:
the patch's position, size, phase, colour and contrast; the background's colour and its colour
ramp; two soft coloured discs and a fainter decoy stripe patch of random orientation and
period as distractors; Gaussian pixel noise. In particular the mean
colour of an image carries no information about its class (a nearest-class-mean classifier on
the three channel means is at chance). A network has to find stripe orientation and spacing
locally, then pool them over the image; a small CNN does that within a few hundred SGD steps,
while the noise and clutter keep it from being instant, so deep plain and residual networks
can train at visibly different speeds.

Images are drawn in chunks of 1,000 from a ``torch.Generator`` whose seed is derived from
(seed, split, chunk index). So the same seed gives the same tensors every time, a smaller
``train_size`` gives a prefix of a larger one, each chunk holds exactly 100 images per class,
and the held-out split comes from a separate seed stream (it shares no image with the training
split). Pixel values are scaled by a fixed constant to roughly zero mean and unit variance.

Real datasets
-------------
``cifar10``, ``cifar100``, ``mnist`` and ``fashion-mnist``, read by the torchvision classes
from ``data_dir`` in their usual layout (``cifar-10-batches-py/``, ``cifar-100-python/``,
``MNIST/raw/``, ``FashionMNIST/raw/``), normalised with each dataset's per-channel mean and
standard deviation over its training images. The held-out split is the official test split.
``augment=True`` adds the ResNet paper's CIFAR augmentation to the training split: pad 4 pixels
(with black), take a random 32x32 crop, flip horizontally with probability 1/2. CIFAR files
are pickles, and unpickling a crafted file runs code: each one is compared with the MD5 that
torchvision publishes for it before anything is unpickled, and a file that differs is refused.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from gradlab.errors import GradlabError

DATASETS = ["synthetic", "cifar10", "cifar100", "mnist", "fashion-mnist"]

SYNTHETIC_TRAIN_SIZE = 10_000
SYNTHETIC_EVAL_SIZE = 2_000
SYNTHETIC_CLASSES = 10
_CHUNK = 1_000  # images per generator chunk; a multiple of the number of classes
_SPLIT_STREAMS = {"train": 0, "eval": 1}


@dataclass
class DataBundle:
    """A dataset's two splits and its shape."""

    train: Dataset  # training split: (image, label) pairs
    eval: Dataset  # held-out split for evaluation
    num_classes: int
    input_size: tuple[int, int, int]  # (channels, height, width) of one image
    name: str  # the dataset's name as passed to load_data


class TensorImages(Dataset):
    """Images and labels held as two tensors (the synthetic dataset)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def load_data(
    name: str = "synthetic",
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    augment: bool = False,
    seed: int = 0,
    train_size: int | None = None,
    eval_size: int | None = None,
) -> DataBundle:
    """Load a dataset by name (see :data:`DATASETS`) with a training and a held-out split.

    ``seed`` picks the synthetic images (real datasets ignore it). ``train_size`` and
    ``eval_size`` set the synthetic split sizes (defaults 10,000 and 2,000); for a real dataset
    they keep only the first N images of each split. Raises :class:`GradlabError` for an unknown
    name, a missing ``data_dir`` or missing files, or ``augment`` on a dataset it does not fit.
    """
    check_data_args(name, data_dir=data_dir, augment=augment)
    for label, size in (("train_size", train_size), ("eval_size", eval_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise GradlabError(f"{label} must be a positive whole number, got {size!r}")
    if name == "synthetic":
        return _synthetic_bundle(seed, train_size, eval_size)
    return _real_bundle(name, Path(data_dir), download, augment, train_size, eval_size)  # type: ignore[arg-type]


def check_data_args(name: str, *, data_dir: str | Path | None = None, augment: bool = False) -> None:
    """Refuse a bad dataset choice without reading any file (for checking settings up front)."""
    if name not in DATASETS:
        raise GradlabError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    if augment and name not in ("cifar10", "cifar100"):
        raise GradlabError(
            f"augment is the CIFAR recipe (pad 4, random crop, flip) and does not fit {name}: "
            "drop --augment or use cifar10/cifar100"
        )
    if name != "synthetic" and data_dir is None:
        raise GradlabError(
            f"{name} is read from disk: pass --data-dir DIR (add --download to fetch it there), "
            "or use --data synthetic"
        )


def data_shape(name: str) -> tuple[tuple[int, int, int], int, int]:
    """(input size C, H, W; number of classes; training images) of a dataset, without reading
    it: what sizes and settings are checked against before any run starts."""
    if name == "synthetic":
        return (3, 32, 32), SYNTHETIC_CLASSES, SYNTHETIC_TRAIN_SIZE
    spec = _REAL[name]
    train_images = 50_000 if name.startswith("cifar") else 60_000
    return (spec.channels, spec.side, spec.side), spec.classes, train_images


def check_data_files(name: str, data_dir: str | Path | None, download: bool) -> None:
    """Refuse a real dataset whose files are missing (and may not be fetched), up front."""
    if name == "synthetic" or download or data_dir is None:
        return
    spec = _REAL[name]
    folder = Path(data_dir) / spec.folder
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        raise GradlabError(f"{name} files not found in {str(folder)!r} (missing {missing[0]}): "
                           "add --download to fetch them, or put the extracted dataset there")


# -- the synthetic dataset ------------------------------------------------------------------

# Class c: orientation (c mod 5) * 36 degrees, stripe period _PERIODS[c // 5] pixels.
_ORIENTATIONS = 5
_PERIODS = (9.0, 4.5)
_ANGLE_JITTER = math.radians(7.0)
_FREQ_JITTER = 0.10
_NOISE_STD = 0.35
_DECOY_STD = 0.4  # colour std of the decoy stripe patch
_SCALE = 1.0 / 0.71  # brings pixel values to roughly unit variance (measured once, then fixed)


def _synthetic_bundle(seed: int, train_size: int | None, eval_size: int | None) -> DataBundle:
    train = synthetic_images(train_size or SYNTHETIC_TRAIN_SIZE, seed=seed, split="train")
    held_out = synthetic_images(eval_size or SYNTHETIC_EVAL_SIZE, seed=seed, split="eval")
    return DataBundle(
        train=TensorImages(*train),
        eval=TensorImages(*held_out),
        num_classes=SYNTHETIC_CLASSES,
        input_size=(3, 32, 32),
        name="synthetic",
    )


def synthetic_images(n: int, *, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic images ``(n, 3, 32, 32)`` float32 and their labels ``(n,)`` int64.

    Deterministic in (seed, split); a smaller ``n`` gives a prefix of a larger one.
    """
    stream = _SPLIT_STREAMS[split]
    images, labels = [], []
    for chunk in range(math.ceil(n / _CHUNK)):
        gen = torch.Generator().manual_seed(_mix(seed, stream, chunk))
        x, y = _synthetic_chunk(_CHUNK, gen)
        images.append(x)
        labels.append(y)
    return torch.cat(images)[:n].contiguous(), torch.cat(labels)[:n].contiguous()


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix64 steps), so streams do not collide."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & 0x7FFFFFFFFFFFFFFF


def _synthetic_chunk(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of images, all at once in tensor ops (no per-image Python loop)."""

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    def normal(std: float, *shape: int) -> torch.Tensor:
        return std * torch.randn(*shape, generator=gen)

    labels = torch.arange(n) % SYNTHETIC_CLASSES
    labels = labels[torch.randperm(n, generator=gen)]
    coords = torch.arange(32, dtype=torch.float32)
    yy, xx = coords.view(1, 32, 1), coords.view(1, 1, 32)

    # The class signal: a windowed sine grating.
    angle = (labels % _ORIENTATIONS).float() * (math.pi / _ORIENTATIONS)
    angle = angle + uniform(-_ANGLE_JITTER, _ANGLE_JITTER, n)
    period = torch.tensor(_PERIODS)[labels // _ORIENTATIONS]
    freq = (2 * math.pi / period) * uniform(1 - _FREQ_JITTER, 1 + _FREQ_JITTER, n)
    phase = uniform(0, 2 * math.pi, n)
    cx, cy = uniform(9, 23, n), uniform(9, 23, n)
    width = uniform(5, 8, n)
    along = ((xx - cx.view(-1, 1, 1)) * angle.cos().view(-1, 1, 1)
             + (yy - cy.view(-1, 1, 1)) * angle.sin().view(-1, 1, 1))
    stripes = torch.sin(freq.view(-1, 1, 1) * along + phase.view(-1, 1, 1))
    r2 = (xx - cx.view(-1, 1, 1)) ** 2 + (yy - cy.view(-1, 1, 1)) ** 2
    window = torch.exp(-r2 / (2 * width.view(-1, 1, 1) ** 2))
    colour = normal(1.0, n, 3)
    colour = colour / colour.norm(dim=1, keepdim=True).clamp_min(1e-6) * math.sqrt(3)
    contrast = uniform(0.5, 1.1, n)
    signal = (contrast.view(-1, 1) * colour).view(n, 3, 1, 1) * (stripes * window).unsqueeze(1)

    # Clutter, independent of the class: background colour and ramp, two soft discs, noise.
    base = normal(0.5, n, 3, 1, 1)
    ramp_x, ramp_y = normal(0.3, n, 3, 1, 1), normal(0.3, n, 3, 1, 1)
    background = base + ramp_x * ((xx - 15.5) / 16).unsqueeze(0) + ramp_y * ((yy - 15.5) / 16).unsqueeze(0)
    discs = torch.zeros(n, 3, 32, 32)
    for _ in range(2):
        dx, dy = uniform(0, 31, n).view(-1, 1, 1), uniform(0, 31, n).view(-1, 1, 1)
        radius = uniform(2, 5, n).view(-1, 1, 1)
        dist = ((xx - dx) ** 2 + (yy - dy) ** 2).sqrt()
        mask = torch.sigmoid((radius - dist) / 0.8)
        discs = discs + normal(0.7, n, 3, 1, 1) * mask.unsqueeze(1)
    # A weaker stripe patch of random orientation and period as a decoy.
    d_angle = uniform(0, math.pi, n).view(-1, 1, 1)
    d_freq = (2 * math.pi / uniform(_PERIODS[1], _PERIODS[0], n)).view(-1, 1, 1)
    dx, dy = uniform(4, 28, n).view(-1, 1, 1), uniform(4, 28, n).view(-1, 1, 1)
    d_along = (xx - dx) * d_angle.cos() + (yy - dy) * d_angle.sin()
    d_window = torch.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * uniform(3, 6, n).view(-1, 1, 1) ** 2))
    decoy = torch.sin(d_freq * d_along + uniform(0, 2 * math.pi, n).view(-1, 1, 1)) * d_window
    decoy = normal(_DECOY_STD, n, 3, 1, 1) * decoy.unsqueeze(1)
    noise = normal(_NOISE_STD, n, 3, 32, 32)

    images = (background + discs + decoy + signal + noise) * _SCALE
    return images.float(), labels.long()


# -- real datasets through torchvision ---------------------------------------------------------

@dataclass(frozen=True)
class _RealSpec:
    folder: str  # under data_dir, as torchvision lays it out
    files: tuple[str, ...]  # what must be in that folder
    channels: int
    side: int
    classes: int
    mean: tuple[float, ...]  # per channel, over the training images, on the [0, 1] scale
    std: tuple[float, ...]


_IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
)
_REAL = {
    "cifar10": _RealSpec(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _RealSpec(
        "cifar-100-python", ("train", "test", "meta"),
        3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
    "mnist": _RealSpec("MNIST/raw", _IDX_FILES, 1, 28, 10, (0.1307,), (0.3081,)),
    "fashion-mnist": _RealSpec("FashionMNIST/raw", _IDX_FILES, 1, 28, 10, (0.2860,), (0.3530,)),
}

NORMALISATION = {name: (spec.mean, spec.std) for name, spec in _REAL.items()}
"""Per-channel (mean, std) of each real dataset's training images, on the [0, 1] scale."""


def _real_bundle(
    name: str, root: Path, download: bool, augment: bool, train_size: int | None, eval_size: int | None
) -> DataBundle:
    from torchvision import transforms

    spec = _REAL[name]
    folder = spec.folder
    missing = [f for f in spec.files if not (root / folder / f).is_file()]
    if missing and not download:
        hint = ""
        if root.name == Path(folder).parts[0]:
            hint = f" (pass its parent, {str(root.parent)!r})"
        raise GradlabError(
            f"{name} files not found in {str(root / folder)!r} (missing {missing[0]}){hint}: "
            f"add --download to fetch them, or put the extracted dataset there"
        )
    if not missing:
        verify_published_checksums(name, root / folder)  # before anything is unpickled
    normalise = [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    train_tf = normalise
    if augment:
        train_tf = [transforms.RandomCrop(spec.side, padding=4), transforms.RandomHorizontalFlip()] + normalise
    cls = _torchvision_class(name)
    try:
        train = cls(str(root), train=True, transform=transforms.Compose(train_tf), download=download)
        held_out = cls(str(root), train=False, transform=transforms.Compose(normalise), download=False)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, pickle errors
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = str(root / folder)
        if missing:
            raise GradlabError(
                f"could not download {name} into {where!r} ({detail}): check the network, "
                "or put the extracted dataset there by hand"
            ) from None
        raise GradlabError(
            f"could not read {name} in {where!r} ({detail}): delete the broken files and rerun "
            "with --download, or put a good copy there"
        ) from None
    return DataBundle(
        train=_first(train, train_size, name, "train_size"),
        eval=_first(held_out, eval_size, name, "eval_size"),
        num_classes=spec.classes,
        input_size=(spec.channels, spec.side, spec.side),
        name=name,
    )


def _first(dataset: Dataset, size: int | None, name: str, label: str) -> Dataset:
    if size is None:
        return dataset
    if size > len(dataset):
        raise GradlabError(f"{label} {size} exceeds the {len(dataset)} images of {name}: pass at most {len(dataset)}")
    return Subset(dataset, range(size))


def _torchvision_class(name: str) -> type:
    """The torchvision class for a dataset."""
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
            "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]


def published_checksums(name: str) -> dict[str, str]:
    """File name -> MD5 of the official files of a pickled dataset (CIFAR-10 and CIFAR-100),
    as torchvision publishes them; empty for datasets that are not pickled."""
    if name not in ("cifar10", "cifar100"):
        return {}  # MNIST's idx files are parsed as raw bytes: nothing in them can run
    cls = _torchvision_class(name)
    listed = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    return {str(file): str(md5) for file, md5 in listed}


def verify_published_checksums(name: str, folder: Path) -> None:
    """Refuse a CIFAR folder whose files are not the official ones, before any is unpickled.

    CIFAR files are Python pickles, and unpickling a crafted file runs code; only files whose
    MD5 matches the published one are read (as torchvision does on each load).
    """
    for file, expected in published_checksums(name).items():
        path = folder / file
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise GradlabError(f"cannot read {str(path)!r} ({exc.strerror or exc}): delete the "
                               f"folder and rerun with --download") from None
        if digest.hexdigest() != expected:
            raise GradlabError(
                f"{str(path)!r} is not the official {name} file (its MD5 is "
                f"{digest.hexdigest()}, the published one {expected}); gradlab does not unpickle "
                "unknown files: delete the folder and rerun with --download"
            )
