"""Request decoding and preprocessing in Pillow and numpy (no torch on the serving path).

``preprocess`` reproduces torchvision's PIL eval transform
(``Resize(resize_size) -> CenterCrop(crop_size) -> ToTensor() -> Normalize(mean, std)``)
exactly; ``tests/test_imaging.py`` checks the parity against torchvision itself.
"""

from __future__ import annotations

import io
import re
import time
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidInput, UnsupportedMediaType
from service.manifest import Preprocess

# MPO is what many phone cameras write: a JPEG with extra frames.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF"})
_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_HIGH_BIT_DEPTH = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def client_safe(exc: BaseException) -> str:
    """A decoder's message without object reprs (their heap addresses are not the client's
    business): ``cannot identify image file <_io.BytesIO object at 0x7f...>`` -> ``... the
    upload``."""
    return _OBJECT_REPR.sub("the upload", str(exc))


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode bytes into an RGB image with EXIF orientation applied.

    Raises:
        InvalidInput: empty, not an image, corrupt or truncated.
        UnsupportedMediaType: a real image in a format outside SUPPORTED_FORMATS.
        ImageTooLarge: declared width x height over ``max_pixels``, checked before decoding.
    """
    if not data:
        raise InvalidInput("request body is empty; send an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image dimensions too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"not a decodable image: {client_safe(exc)}") from None
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"image format {img.format} is not supported; "
            f"send one of {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    try:
        img.seek(0)  # animated GIF/WebP: first frame
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"corrupt or truncated image: {client_safe(exc)}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    16-bit and 32-bit grayscale are rescaled (Pillow's own ``convert`` would clip them to
    white); transparent images are composited onto white rather than onto whatever color
    the transparent pixels happen to hold.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_BIT_DEPTH:
        arr = np.asarray(img, dtype=np.float64)
        if mode != "F":
            arr = arr / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(int)`` output size: shorter side -> ``size``, aspect kept."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def preprocess(img: Image.Image, spec: Preprocess) -> np.ndarray:
    """RGB image -> normalized float32 CHW array of shape (3, crop, crop)."""
    new_w, new_h = resized_size(img.width, img.height, spec.resize_size)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), _INTERPOLATION[spec.interpolation])
    crop = spec.crop_size
    if crop > min(img.size):
        raise InvalidInput(f"image too small to crop {crop}x{crop} after resizing")
    left = round((img.width - crop) / 2.0)
    top = round((img.height - crop) / 2.0)
    img = img.crop((left, top, left + crop, top + crop))
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1))


def decode_and_preprocess(
    data: bytes, spec: Preprocess, max_pixels: int
) -> tuple[np.ndarray, float, float]:
    """Decode then preprocess; returns the array and both stage durations in seconds."""

    start = time.perf_counter()
    img = decode_image(data, max_pixels)
    decoded = time.perf_counter()
    arr = preprocess(img, spec)
    return arr, decoded - start, time.perf_counter() - decoded
