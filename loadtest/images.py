"""The load test's image pool: JPEG and PNG images of several sizes, made with Pillow."""

from __future__ import annotations

import io
import random

from PIL import Image

SIZES = [(64, 64), (320, 240), (640, 480), (1024, 768)]


def make_image(width: int, height: int, fmt: str, seed: int) -> bytes:
    """A gradient blended with a random colour, encoded as ``fmt``."""
    rng = random.Random(seed)
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    overlay = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    img = Image.blend(img, overlay, 0.4)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_pool() -> list[tuple[str, str, bytes]]:
    """(name, content type, bytes) for every size in JPEG and PNG."""
    pool = []
    for i, (w, h) in enumerate(SIZES):
        pool.append((f"jpeg {w}x{h}", "image/jpeg", make_image(w, h, "JPEG", i)))
        pool.append((f"png {w}x{h}", "image/png", make_image(w, h, "PNG", i)))
    return pool
