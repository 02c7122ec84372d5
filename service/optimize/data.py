"""Labelled data for building and measuring variants: Fashion-MNIST, digits and ImageNet.

``fashion`` (Zalando's Fashion-MNIST, read from the IDX files Debian's ``dataset-fashion-mnist``
installs) is the benchmark's task: 10,000 real held-out images, hard enough that variants
differ measurably. ``digits`` (scikit-learn's 8x8 digits) builds in minutes and is what the
test suite builds. ``imagenet`` reads an ImageNet-layout folder.

Every image goes through ``service.imaging`` — the same decode and preprocess code the server
runs — so accuracy measured here is accuracy of what the server computes.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

from service.imaging import decode_image, preprocess
from service.manifest import Preprocess

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
VAL_FRACTION = 0.1
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif"}


@dataclass
class TaskData:
    """A task's labels, preprocessing and splits.

    ``train``/``val`` feed training and early stopping; ``test`` is the fixed held-out split
    every accuracy figure is measured on. Any of them may be None when the data is absent.
    """

    name: str
    dataset: str
    labels: list[str]
    preprocess: Preprocess
    train: Dataset[Any] | None = None
    val: Dataset[Any] | None = None
    test: Dataset[Any] | None = None
    notes: list[str] = field(default_factory=list)
    # Per-role training settings (``baseline``, ``distilled``, ``finetune``, ``probe``) that
    # override a technique's defaults for this task; ``batch_size`` unless --batch-size.
    schedule: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 64

    def calibration(self, count: int, seed: int) -> torch.Tensor:
        """``count`` training images (a seeded random subset) as one NCHW tensor."""
        if self.train is None:
            raise ValueError(f"task {self.name!r} has no training images for calibration")
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
        return torch.stack([self.train[int(i)][0] for i in order[:count]])


def digit_images(values: np.ndarray) -> list[Image.Image]:
    """scikit-learn digits (8x8, values 0..16) -> 8-bit RGB Pillow images."""
    pixels = np.rint(values.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    return [Image.fromarray(p, mode="L").convert("RGB") for p in pixels]


def digits_split() -> tuple[list[Image.Image], np.ndarray, list[Image.Image], np.ndarray]:
    """The fixed, stratified train/test split of ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(digits.target)),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    images = digit_images(digits.data)
    return (
        [images[i] for i in idx_train],
        digits.target[idx_train],
        [images[i] for i in idx_test],
        digits.target[idx_test],
    )


def _tensor_dataset(
    images: Sequence[Image.Image], labels: np.ndarray, spec: Preprocess
) -> TensorDataset:
    arrays = np.stack([preprocess(img, spec) for img in images])
    return TensorDataset(torch.from_numpy(arrays), torch.from_numpy(labels.astype(np.int64)))


def split_val(dataset: Dataset[Any], seed: int) -> tuple[Subset[Any], Subset[Any]]:
    """Seeded train/validation split for early stopping (the test split is never touched)."""
    n = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(n * VAL_FRACTION))
    return Subset(dataset, order[n_val:]), Subset(dataset, order[:n_val])


def digits_task(image_size: int = 32, seed: int = 0) -> TaskData:
    """Real handwritten digits (scikit-learn), upscaled to ``image_size``; 10 classes."""
    train_imgs, train_y, test_imgs, test_y = digits_split()
    raw = np.stack([np.asarray(img, dtype=np.float32) / 255.0 for img in train_imgs])
    mean = float(raw.mean())
    std = float(raw.std())
    spec = Preprocess(
        resize_size=image_size, crop_size=image_size, mean=(mean,) * 3, std=(std,) * 3
    )
    train_full = _tensor_dataset(train_imgs, train_y, spec)
    train, val = split_val(train_full, seed)
    return TaskData(
        name="digits",
        dataset=(
            f"sklearn load_digits: {len(test_y)} held-out real handwritten digits "
            f"(stratified {DIGITS_TEST_FRACTION:.0%} split, seed {DIGITS_SPLIT_SEED})"
        ),
        labels=[str(d) for d in range(10)],
        preprocess=spec,
        train=train,
        val=val,
        test=_tensor_dataset(test_imgs, test_y, spec),
    )


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
# Zalando's class names, in label order (the data set's README).
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# What fits `make benchmark`'s budget on a 2-CPU machine: every training image, few epochs.
FASHION_SCHEDULE: dict[str, dict[str, Any]] = {
    "baseline": {"epochs": 8, "patience": 3},
    "distilled": {"epochs": 8, "patience": 3},
    "finetune": {"epochs": 2, "patience": 2},
    "probe": {"epochs": 1, "images": 10_000},
}
IDX_DTYPE = 0x08  # unsigned byte, the only type Fashion-MNIST uses


class IdxError(ValueError):
    """An IDX file that is not what its header says."""


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array (gzip-compressed or not) with ``ndim`` dimensions, checked against its
    header: magic, element type, rank and the byte count the dimensions imply."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise IdxError(f"{path}: cannot read: {exc}") from None
    if len(data) < 4 or data[0:2] != b"\0\0":
        raise IdxError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != IDX_DTYPE or data[3] != ndim:
        raise IdxError(
            f"{path}: IDX type 0x{data[2]:02x} with {data[3]} dimensions; "
            f"expected unsigned bytes (0x08) with {ndim}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise IdxError(
            f"{path}: header says {'x'.join(map(str, shape))} ({expected} bytes), "
            f"file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_fashion_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One Fashion-MNIST split: (N, 28, 28) uint8 images and (N,) labels in 0..9."""
    images_name, labels_name, count = FASHION_FILES[split]
    missing = [n for n in (images_name, labels_name) if not (data_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {data_dir} has no {', '.join(missing)}. Install Debian's "
            f"{FASHION_PACKAGE} package (apt-get install {FASHION_PACKAGE}, which writes "
            f"{FASHION_DIR}) or pass --data DIR holding the four IDX files"
        )
    images = read_idx(data_dir / images_name, 3)
    labels = read_idx(data_dir / labels_name, 1)
    if images.shape[1:] != (28, 28):
        raise IdxError(f"{data_dir / images_name}: images are {images.shape[1:]}, not 28x28")
    if len(images) != len(labels):
        raise IdxError(f"{data_dir}: {len(images)} {split} images but {len(labels)} labels")
    if len(labels) != count:
        raise IdxError(f"{data_dir}: {len(labels)} {split} images; Fashion-MNIST has {count}")
    if labels.max(initial=0) >= len(FASHION_LABELS):
        raise IdxError(f"{data_dir / labels_name}: label {labels.max()} is not in 0..9")
    return images, labels


def subset_indices(labels: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded random ``count`` of them in their original order."""
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(len(labels))[:count])


def fashion_task(
    data_dir: Path | None = None,
    image_size: int = 32,
    seed: int = 0,
    train_images: int | None = None,
    test_images: int | None = None,
) -> TaskData:
    """Fashion-MNIST: 60,000 training and 10,000 test images (28x28 grayscale), 10 classes.

    Images are resized to ``image_size`` (DenseNet-121 needs 32: five stride-2 stages) by the
    server's own preprocessing. The validation split is a fixed 10 % of the training images;
    the test set is only ever used to report. ``train_images``/``test_images`` take seeded
    subsets (quick builds and tests); the dataset string says when they did.
    """
    root = data_dir or FASHION_DIR
    train_x, train_y = read_fashion_split(root, "train")
    test_x, test_y = read_fashion_split(root, "test")
    train_idx = subset_indices(train_y, train_images, seed)
    test_idx = subset_indices(test_y, test_images, seed)
    mean = float(train_x[train_idx].mean() / 255.0)
    std = float(train_x[train_idx].std() / 255.0)
    spec = Preprocess(
        resize_size=image_size, crop_size=image_size, mean=(mean,) * 3, std=(std,) * 3
    )

    def dataset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> TensorDataset:
        pil = [Image.fromarray(images[i], mode="L").convert("RGB") for i in idx]
        return _tensor_dataset(pil, labels[idx], spec)

    train, val = split_val(dataset(train_x, train_y, train_idx), seed)
    test = dataset(test_x, test_y, test_idx)
    subset = ""
    if len(test_idx) < len(test_y) or len(train_idx) < len(train_y):
        subset = f", a seeded subset (seed {seed}) of {len(train_idx)} training images"
    return TaskData(
        name="fashion",
        dataset=(
            f"Fashion-MNIST test set: {len(test_idx)} held-out images"
            f"{subset} ({root}; validation: {len(val)} of the training images)"
        ),
        labels=list(FASHION_LABELS),
        preprocess=spec,
        train=train,
        val=val,
        test=test,
        notes=[
            f"trained on {len(train)} Fashion-MNIST training images, {len(val)} held out for "
            "validation (model selection); the test set is used only to report"
        ],
        schedule=FASHION_SCHEDULE,
        batch_size=128,
    )


class ImageFileDataset(Dataset[Any]):
    """Image files decoded and preprocessed exactly as the server does."""

    def __init__(self, files: list[Path], labels: list[int], spec: Preprocess) -> None:
        self.files = files
        self.labels = labels
        self.spec = spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = decode_image(self.files[index].read_bytes(), max_pixels=200_000_000)
        return torch.from_numpy(preprocess(img, self.spec)), self.labels[index]


def read_synsets(path: Path) -> list[str]:
    """WordNet ids in class-index order from ``LOC_synset_mapping.txt`` (``n01440764 tench, ...``)
    or a file with one id per line."""
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path} lists a WordNet id twice")
    return wnids


def imagenet_synsets(data_dir: Path, synsets: Path | None, num_classes: int) -> list[str]:
    """The class-index order of WordNet ids for an ImageNet-layout folder.

    ImageNet models index classes by sorted WordNet id. With all 1000 class folders present
    that order is the sorted folder names; with fewer, a mapping file is needed
    (``--synsets`` or ``DIR/LOC_synset_mapping.txt``, as the ImageNet distribution ships it).
    """
    candidate = synsets or data_dir / "LOC_synset_mapping.txt"
    if candidate.is_file():
        wnids = read_synsets(candidate)
    else:
        wnids = (
            sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
            if (data_dir / "train").is_dir()
            else []
        )
        if len(wnids) != num_classes:
            raise FileNotFoundError(
                f"{data_dir}/train has {len(wnids)} class folders, not {num_classes}: pass "
                "--synsets FILE (LOC_synset_mapping.txt from the ImageNet devkit) so each "
                "folder maps to the right class index"
            )
    if len(wnids) != num_classes:
        raise ValueError(f"synset list has {len(wnids)} ids; the model has {num_classes} classes")
    return wnids


def _image_folder(root: Path, index: dict[str, int], spec: Preprocess) -> ImageFileDataset:
    files: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in index:
            raise ValueError(f"{folder} is not a known WordNet id of this model")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                labels.append(index[folder.name])
    if not files:
        raise FileNotFoundError(f"no images under {root}")
    return ImageFileDataset(files, labels, spec)


def imagenet_task(
    labels: list[str], spec: Preprocess, data_dir: Path | None, synsets: Path | None, seed: int
) -> TaskData:
    """ImageNet-1k labels and preprocessing; splits from ``data_dir`` when given."""
    task = TaskData(
        name="imagenet",
        dataset="none: pass --data DIR (train/ and val/ with one folder per WordNet id)",
        labels=labels,
        preprocess=spec,
    )
    if data_dir is None:
        return task
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir} does not exist")
    index = {w: i for i, w in enumerate(imagenet_synsets(data_dir, synsets, len(labels)))}
    if (data_dir / "val").is_dir():
        task.test = _image_folder(data_dir / "val", index, spec)
        task.dataset = f"ImageNet-layout folder {data_dir}/val ({len(task.test)} images)"
    if (data_dir / "train").is_dir():
        task.train, task.val = split_val(_image_folder(data_dir / "train", index, spec), seed)
    return task
