"""Request decoding and preprocessing in Pillow and numpy (no torch on the serving path).

``preprocess`` reproduces torchvision's PIL eval transform
(``Resize(resize_size) -> CenterCrop(crop_size) -> ToTensor() -> Normalize(mean, std)``)
exactly; ``tests/unit/test_imaging.py`` checks the parity against torchvision itself.

The work one image may cost is decided from its header, before a pixel is decoded: the
decoded source (pixels x bytes per pixel of its mode), the copies conversion to RGB and EXIF
rotation make, and the intermediate the resize builds (a 1,000,000 x 1 image resized so its
shorter side is 256 would be 256,000,000 x 256). Over ``max_bytes``, a JPEG is decoded at a
reduced size (DCT scaling, still at least the resize target) when that fits; anything else
is refused with 413 naming the limit.
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

# The formats decoded, with the media type each is sent as. MPO is what many phone cameras
# write: a JPEG with extra frames.
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}
SUPPORTED_FORMATS = frozenset(MEDIA_TYPES)
_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_HIGH_BIT_DEPTH = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Bytes per pixel Pillow allocates for a decoded image of each mode; every mode not listed
# (RGB included: Pillow pads 3 bands to 32 bits) takes 4.
_DECODED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
# Formats libjpeg can decode at 1/2, 1/4 or 1/8 scale during the inverse DCT.
_DCT_SCALABLE = frozenset({"JPEG", "MPO"})
_EXIF_ORIENTATION = 0x0112


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def client_safe(exc: BaseException) -> str:
    """A decoder's message without object reprs (their heap addresses are not the client's
    business): ``cannot identify image file <_io.BytesIO object at 0x7f...>`` -> ``... the
    upload``."""
    return _OBJECT_REPR.sub("the upload", str(exc))


def conversion_bytes_per_pixel(img: Image.Image) -> int:
    """Bytes per source pixel that ``to_rgb`` allocates on top of the decoded image."""
    mode = img.mode
    if mode == "RGB":
        return 0
    if mode in _HIGH_BIT_DEPTH:
        return 4 + 1 + 4  # a 32-bit working array, the 8-bit gray, the RGB image
    if mode in _ALPHA or (mode == "P" and "transparency" in img.info):
        return 4 * 4  # RGBA, a white background, the composite, the RGB image
    return 4


def orientation(img: Image.Image) -> int:
    """The EXIF orientation known before decoding (1: upright).

    Pillow's ``PngImageFile.getexif`` decodes the whole image to look for a late eXIf chunk,
    so a PNG's orientation is read from the chunks before its pixels only (an eXIf chunk
    after the pixel data, which PNG allows and almost nobody writes, is not applied).
    """
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(_EXIF_ORIENTATION, 1))
    return int(img.getexif().get(_EXIF_ORIENTATION, 1))


def working_bytes(img: Image.Image, resize_to: int | None) -> int:
    """Most memory decoding and preprocessing ``img`` can allocate, from its header alone."""
    width, height = img.size
    pixels = width * height
    total = pixels * (_DECODED_BYTES.get(img.mode, 4) + conversion_bytes_per_pixel(img))
    if orientation(img) != 1:
        total += pixels * 4  # the rotated copy
    if resize_to is not None:
        new_w, new_h = resized_size(width, height, resize_to)
        total += new_w * new_h * 4
    return total


def check_work(img: Image.Image, max_bytes: int | None, resize_to: int | None) -> None:
    """Refuse ``img`` when its work exceeds ``max_bytes``; a JPEG over it is first asked to
    decode at a reduced size that still covers the resize target.

    Raises:
        ImageTooLarge: naming which cost is over the limit.
    """
    if max_bytes is None:
        return
    if working_bytes(img, resize_to) > max_bytes and img.format in _DCT_SCALABLE:
        width, height = img.size
        img.draft("RGB", resized_size(width, height, resize_to or min(width, height)))
    if resize_to is not None:
        new_w, new_h = resized_size(img.width, img.height, resize_to)
        if new_w * new_h * 4 > max_bytes:
            raise ImageTooLarge(
                f"resizing a {img.width}x{img.height} image so its shorter side is {resize_to} "
                f"makes a {new_w}x{new_h} intermediate ({new_w * new_h * 4} bytes); the limit "
                f"for one image is {max_bytes} bytes (MAX_IMAGE_BYTES)"
            )
    cost = working_bytes(img, resize_to)
    if cost > max_bytes:
        raise ImageTooLarge(
            f"decoding this {img.width}x{img.height} {img.mode} image takes {cost} bytes; the "
            f"limit for one image is {max_bytes} bytes (MAX_IMAGE_BYTES)"
        )


def decode_image(
    data: bytes | memoryview,
    max_pixels: int,
    max_bytes: int | None = None,
    resize_to: int | None = None,
    reduced: bool = False,
) -> Image.Image:
    """Decode bytes into an RGB image with EXIF orientation applied.

    Args:
        data: the encoded image.
        max_pixels: most source pixels (width x height) accepted.
        max_bytes: most working memory for this image (see the module docstring); None:
            no limit (offline tools on trusted files).
        resize_to: the size the shorter side will be resized to (for the resize cost and a
            JPEG's reduced-size decoding).
        reduced: decode a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
            ``resize_to``, whatever it costs in full; other formats are unaffected. Off, a
            JPEG is decoded at full size unless ``max_bytes`` demands otherwise (the exact,
            torchvision-parity path).

    Raises:
        InvalidInput: empty, not an image, corrupt or truncated.
        UnsupportedMediaType: a real image in a format outside SUPPORTED_FORMATS.
        ImageTooLarge: over ``max_pixels`` or ``max_bytes``, checked before decoding.
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
    if reduced and resize_to is not None and img.format in _DCT_SCALABLE:
        img.draft("RGB", resized_size(width, height, resize_to))
    check_work(img, max_bytes, resize_to)
    try:
        turn = orientation(img)
        img.seek(0)  # animated GIF/WebP: first frame
        img.load()
        return to_rgb(ImageOps.exif_transpose(img) if turn != 1 else img)
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
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in _HIGH_BIT_DEPTH:
        # 0..65535 -> 0..255 rounded to nearest, in integers: (v + 128) // 257 == rint(v / 257)
        # for every integer v, without the 8-bytes-per-pixel float copy.
        wide = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        wide += 128
        wide //= 257
        return Image.fromarray(wide.astype(np.uint8)).convert("RGB")
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
    data: bytes | memoryview,
    spec: Preprocess,
    max_pixels: int,
    max_bytes: int | None = None,
    reduced: bool = False,
) -> tuple[np.ndarray, float, float]:
    """Decode then preprocess; returns the array and both stage durations in seconds."""
    start = time.perf_counter()
    img = decode_image(data, max_pixels, max_bytes, spec.resize_size, reduced)
    decoded = time.perf_counter()
    arr = preprocess(img, spec)
    return arr, decoded - start, time.perf_counter() - decoded
