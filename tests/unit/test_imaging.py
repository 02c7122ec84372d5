"""Decoding and preprocessing: parity with torchvision, every mode, every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ImageTooLarge, InvalidInput, UnsupportedMediaType
from service.imaging import decode_image, preprocess, to_rgb
from service.manifest import Preprocess

IMAGENET = Preprocess(
    resize_size=256, crop_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
DIGITS = Preprocess(resize_size=32, crop_size=32, mean=(0.3,) * 3, std=(0.37,) * 3)
MAX_PIXELS = 40_000_000


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.broadcast_to((x + y) / 2, (height, width, 1)),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def torchvision_reference(img: Image.Image, spec: Preprocess) -> np.ndarray:
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(
                spec.resize_size, interpolation=transforms.InterpolationMode.BILINEAR
            ),
            transforms.CenterCrop(spec.crop_size),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )
    return transform(img).numpy()


@pytest.mark.parametrize("spec", [IMAGENET, DIGITS], ids=["imagenet", "digits"])
def test_preprocess_matches_torchvision_on_real_photos(sample_photos, spec):
    for data in sample_photos:
        img = decode_image(data, MAX_PIXELS)
        ours = preprocess(img, spec)
        ref = torchvision_reference(img, spec)
        assert ours.shape == ref.shape == (3, spec.crop_size, spec.crop_size)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "size", [(8, 8), (300, 200), (200, 301), (257, 256), (224, 224), (1023, 77)]
)
def test_preprocess_matches_torchvision_on_odd_sizes(size):
    img = gradient(*size)
    for spec in (IMAGENET, DIGITS):
        np.testing.assert_allclose(
            preprocess(img, spec), torchvision_reference(img, spec), atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_every_supported_format_decodes_to_rgb(fmt):
    img = decode_image(encode(gradient(64, 48), fmt), MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.size == (64, 48)


def test_gif_uses_first_frame():
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=50, loop=0)
    img = decode_image(data, MAX_PIXELS)
    r, _, b = img.getpixel((8, 8))
    assert r > 200 and b < 50


def test_sixteen_bit_grayscale_is_rescaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    img = decode_image(encode(Image.fromarray(ramp), "PNG"), MAX_PIXELS)
    arr = np.asarray(img)
    assert arr.shape == (64, 64, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    # Pillow's plain convert would clip everything above 255 to white.
    assert 100 < arr[32, 0, 0] < 155


def test_cmyk_palette_alpha_and_gray_modes():
    base = gradient(32, 32)
    for mode in ("CMYK", "P", "L", "LA", "RGBA", "1"):
        img = base.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        decoded = decode_image(encode(img, fmt), MAX_PIXELS)
        assert decoded.mode == "RGB", mode
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = gradient(40, 20)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()), MAX_PIXELS)
    assert decoded.size == (20, 40)


def test_garbage_is_invalid_input():
    with pytest.raises(InvalidInput):
        decode_image(b"this is not an image at all", MAX_PIXELS)
    with pytest.raises(InvalidInput):
        decode_image(b"", MAX_PIXELS)


def test_truncated_image_is_invalid_input(sample_photos):
    with pytest.raises(InvalidInput, match=r"truncated|corrupt|decodable"):
        decode_image(sample_photos[0][: len(sample_photos[0]) // 2], MAX_PIXELS)


def test_unsupported_format_is_415():
    with pytest.raises(UnsupportedMediaType):
        decode_image(encode(gradient(16, 16), "TIFF"), MAX_PIXELS)


def test_decompression_bomb_is_refused_before_decoding():
    # A 20000x20000 PNG compresses to a few hundred KB; its header alone is enough to refuse it.
    bomb = encode(Image.new("L", (20_000, 20_000)), "PNG", optimize=True)
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageTooLarge):
        decode_image(bomb, MAX_PIXELS)


def test_sixteen_bit_rescale_rounds_as_the_float_formula_did():
    values = np.arange(0, 65536, dtype=np.uint16).reshape(256, 256)
    got = np.asarray(to_rgb(Image.fromarray(values)))[..., 0].astype(np.int64)
    expected = np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255)
    assert np.array_equal(got, expected)


BUDGET = 16 * 2**20


@pytest.mark.parametrize(
    "size", [(1_000_000, 1), (1, 1_000_000), (65_500, 1)], ids=["wide", "tall", "jpeg-wide"]
)
def test_thin_images_are_refused_for_their_resize_intermediate(size):
    fmt = "JPEG" if size == (65_500, 1) else "PNG"
    data = encode(Image.new("L", size), fmt)
    assert len(data) < 20_000  # a few kB that would ask for gigabytes
    with pytest.raises(ImageTooLarge, match=r"intermediate .*\(MAX_IMAGE_BYTES\)"):
        decode_image(data, MAX_PIXELS, BUDGET, IMAGENET.resize_size)


@pytest.mark.parametrize(
    ("mode", "dtype"), [("I;16", np.uint16), ("RGBA", np.uint8)], ids=["16-bit", "rgba"]
)
def test_expensive_modes_are_refused_before_decoding(mode, dtype):
    shape = (2000, 2000, 4) if mode == "RGBA" else (2000, 2000)
    img = Image.fromarray(np.zeros(shape, dtype=dtype))
    assert img.mode == mode
    data = encode(img, "PNG")
    with pytest.raises(ImageTooLarge, match=rf"2000x2000 {mode} image takes .*\(MAX_IMAGE_BYTES\)"):
        decode_image(data, MAX_PIXELS, BUDGET, DIGITS.resize_size)
    decode_image(data, MAX_PIXELS, None, DIGITS.resize_size)  # no budget: decoded as before


def test_a_large_jpeg_is_decoded_at_reduced_size_within_the_budget():
    data = encode(gradient(4000, 3000), "JPEG", quality=80)
    img = decode_image(data, MAX_PIXELS, BUDGET, IMAGENET.resize_size)
    assert img.size == (500, 375)  # DCT-scaled by 1/8, still >= the 256 resize target
    assert preprocess(img, IMAGENET).shape == (3, 224, 224)
    full = decode_image(data, MAX_PIXELS, None, IMAGENET.resize_size)
    assert full.size == (4000, 3000)
    # The reduced decode is the same picture: same mean colour within a few levels.
    assert np.abs(np.asarray(img).mean(axis=(0, 1)) - np.asarray(full).mean(axis=(0, 1))).max() < 3


def test_images_within_the_budget_decode_exactly_as_without_it(sample_photos):
    for data in sample_photos:
        limited = decode_image(data, MAX_PIXELS, BUDGET, IMAGENET.resize_size)
        assert np.array_equal(np.asarray(limited), np.asarray(decode_image(data, MAX_PIXELS)))


def test_reduced_decoding_scales_jpegs_only_and_never_below_the_resize_target(sample_photos):
    jpeg = encode(gradient(1024, 768), "JPEG", quality=90)
    reduced = decode_image(jpeg, MAX_PIXELS, None, DIGITS.resize_size, reduced=True)
    assert reduced.size == (128, 96)  # 1/8 scale: still >= the 32 x 42 resize
    assert min(decode_image(jpeg, MAX_PIXELS, None, 256, reduced=True).size) >= 256
    assert decode_image(jpeg, MAX_PIXELS, None, DIGITS.resize_size).size == (1024, 768)
    # Reduced decoding does not apply to other formats: they decode exactly as before.
    for fmt in ("PNG", "WEBP", "BMP", "GIF"):
        data = encode(gradient(1024, 768), fmt)
        exact = decode_image(data, MAX_PIXELS, None, DIGITS.resize_size)
        same = decode_image(data, MAX_PIXELS, None, DIGITS.resize_size, reduced=True)
        assert same.size == (1024, 768) and np.array_equal(np.asarray(same), np.asarray(exact))
    # A photo already near the target is not scaled.
    photo = decode_image(sample_photos[0], MAX_PIXELS, None, 427, reduced=True)
    assert photo.size == decode_image(sample_photos[0], MAX_PIXELS).size
