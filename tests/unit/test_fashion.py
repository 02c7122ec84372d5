"""The Fashion-MNIST IDX loader: the real files' headers, and clear errors on bad files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from service.optimize.data import (
    FASHION_DIR,
    FASHION_FILES,
    FASHION_LABELS,
    IdxError,
    read_fashion_split,
    read_idx,
)

installed = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"dataset-fashion-mnist is not installed ({FASHION_DIR}); make test installs it",
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    images_name, labels_name, _ = FASHION_FILES[split]
    (folder / images_name).write_bytes(gzip.compress(idx_bytes(images)))
    (folder / labels_name).write_bytes(gzip.compress(idx_bytes(labels)))


@installed
@pytest.mark.parametrize(("split", "count"), [("train", 60_000), ("test", 10_000)])
def test_the_installed_files_hold_what_their_headers_and_the_data_set_say(split, count):
    images, labels = read_fashion_split(FASHION_DIR, split)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,)
    # Every class, equally often: Fashion-MNIST is balanced (6,000 / 1,000 per class).
    assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10
    assert len(FASHION_LABELS) == 10


def test_idx_round_trip_with_and_without_gzip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(idx_bytes(array))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("plain", "packed"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, 3), array)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw: raw[:-5], "header says 2x3x4 \\(24 bytes\\), file holds 19"),
        (lambda raw: raw + b"\0", "file holds 25"),
        (lambda raw: b"\1" + raw[1:], "bad magic"),
        (lambda raw: raw[:2] + b"\x0d" + raw[3:], "IDX type 0x0d"),
        (lambda raw: raw[:3] + b"\1" + raw[4:], "with 1 dimensions; expected"),
        (lambda raw: raw[:9], "truncated header"),
    ],
)
def test_a_corrupt_or_truncated_idx_file_is_one_clear_error(tmp_path, mangle, message):
    raw = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    (tmp_path / "bad").write_bytes(mangle(raw))
    with pytest.raises(IdxError, match=message):
        read_idx(tmp_path / "bad", 3)


def test_a_truncated_gzip_stream_is_an_idx_error_not_a_crash(tmp_path):
    packed = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(IdxError, match="cannot read"):
        read_idx(tmp_path / "cut.gz", 3)


def test_missing_files_name_the_debian_package_and_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_fashion_split(tmp_path, "test")
    text = str(err.value)
    assert "dataset-fashion-mnist" in text and str(tmp_path) in text
    assert "t10k-images-idx3-ubyte.gz" in text and "--data DIR" in text


def test_a_split_of_the_wrong_size_or_labels_out_of_range_is_refused(tmp_path):
    write_split(tmp_path, "test", np.zeros((5, 28, 28)), np.zeros(5))
    with pytest.raises(IdxError, match="5 test images; Fashion-MNIST has 10000"):
        read_fashion_split(tmp_path, "test")
    write_split(tmp_path, "test", np.zeros((10_000, 28, 28)), np.full(10_000, 10))
    with pytest.raises(IdxError, match=r"label 10 is not in 0\.\.9"):
        read_fashion_split(tmp_path, "test")
    write_split(tmp_path, "test", np.zeros((10_000, 28, 28)), np.zeros(9_999))
    with pytest.raises(IdxError, match="10000 test images but 9999 labels"):
        read_fashion_split(tmp_path, "test")
