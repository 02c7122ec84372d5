"""Writes examples/: the images the README's first request sends, made from real data.

* ``digit-7.png``: a handwritten 7 from scikit-learn's ``load_digits`` test split (8x8, drawn
  at 64x64), what a ``--task digits`` build classifies;
* ``sneaker.png``: a Fashion-MNIST test image of class Sneaker (28x28), what the default
  ``--task fashion`` build classifies (needs Debian's dataset-fashion-mnist);
* ``photo.jpg``: scikit-learn's sample photo ``china.jpg``, downsized to 256x192, to show the
  service decoding a camera-sized JPEG (any model answers it with one of its own labels).

Run from the repository root: ``.venv/bin/python scripts/make_examples.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.optimize.data import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, read_idx  # noqa: E402

OUT = ROOT / "examples"
FASHION = Path("/usr/share/datasets/fashion-mnist")
SNEAKER = 7  # Fashion-MNIST's class index for Sneaker


def main() -> int:
    OUT.mkdir(exist_ok=True)
    digits = load_digits()
    _, test = train_test_split(  # the builds' own split: this 7 is never trained on
        np.arange(len(digits.target)),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    seven = digits.images[next(i for i in test if digits.target[i] == 7)]
    pixels = (seven / 16 * 255).astype(np.uint8)
    Image.fromarray(pixels, "L").resize((64, 64), Image.Resampling.NEAREST).save(
        OUT / "digit-7.png", optimize=True
    )
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", 1)
    sneaker = images[np.flatnonzero(labels == SNEAKER)[0]]
    Image.fromarray(sneaker, "L").save(OUT / "sneaker.png", optimize=True)
    china = load_sample_images().images[0]
    Image.fromarray(china).resize((256, 192), Image.Resampling.LANCZOS).save(
        OUT / "photo.jpg", quality=80, optimize=True
    )
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
