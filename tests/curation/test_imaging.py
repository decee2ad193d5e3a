import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from curation import imaging

from .conftest import png_bytes


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header announcing a huge image, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_decode_reads_size_mode_and_format():
    decoded = imaging.decode(png_bytes(1, size=(30, 20)), max_pixels=10_000)
    assert (decoded.width, decoded.height, decoded.mode, decoded.format) == (30, 20, "L", "PNG")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello, not an image", "not an image"),
        (b"", "empty file"),
        (png_bytes(1)[:-40], "truncated PNG"),
    ],
)
def test_decode_rejects_unusable_files(data, reason):
    with pytest.raises(imaging.ImageError) as err:
        imaging.decode(data, max_pixels=10_000)
    assert err.value.reason == reason


def test_decode_rejects_bomb_from_header_before_decoding():
    with pytest.raises(imaging.ImageError) as err:
        imaging.decode(_bomb_png(120_000, 120_000), max_pixels=40_000_000)
    assert err.value.reason == "image of 120000x120000 pixels exceeds the limit of 40000000"


def test_decode_rejects_unsupported_format():
    with pytest.raises(imaging.ImageError) as err:
        imaging.decode(_png(Image.new("P", (8, 8)), "GIF"), max_pixels=10_000)
    assert err.value.reason == "format GIF not supported"


@pytest.mark.parametrize("mode", imaging.RESIZE_MODES)
@pytest.mark.parametrize(("src", "channels"), [((300, 200), 1), ((200, 300), 3), ((28, 28), 1), ((10, 40), 3)])
def test_every_resize_mode_gives_the_requested_shape(mode, src, channels):
    image = Image.new("RGB", src, (255, 0, 0))
    arr, steps = imaging.preprocess(image, channels=channels, width=28, height=24, resize_mode=mode)
    assert arr.shape == (channels, 24, 28)
    assert arr.dtype == np.uint8
    assert steps


def test_nothing_to_do_gives_no_steps():
    arr, steps = imaging.preprocess(Image.new("L", (28, 28), 7), channels=1, width=28, height=28, resize_mode="squash")
    assert steps == []
    assert (arr == 7).all()


def test_grayscale_conversion_and_squash_are_described():
    _, steps = imaging.preprocess(Image.new("RGB", (300, 300)), channels=1, width=28, height=28, resize_mode="squash")
    assert steps == ["converted RGB to grayscale", "squashed 300x300 to 28x28"]


def test_fill_noise_is_deterministic_per_seed():
    image = Image.new("L", (300, 100), 128)
    a, steps = imaging.preprocess(image, channels=1, width=28, height=28, resize_mode="fill", fill_seed=b"abc")
    b, _ = imaging.preprocess(image, channels=1, width=28, height=28, resize_mode="fill", fill_seed=b"abc")
    c, _ = imaging.preprocess(image, channels=1, width=28, height=28, resize_mode="fill", fill_seed=b"xyz")
    assert (a == b).all()
    assert not (a == c).all()
    assert "filled" in steps[-1] and "noise" in steps[-1]
    # the picture itself sits in the middle rows, the noise above and below
    assert (a[0, 12:16] == 128).all()


def test_crop_keeps_the_centre():
    arr = np.zeros((100, 300), dtype=np.uint8)
    arr[:, 100:200] = 255  # a white centre square, black sides
    out, _ = imaging.preprocess(Image.fromarray(arr), channels=1, width=28, height=28, resize_mode="crop")
    assert out.mean() > 250


def _mnist_like_stats():
    rng = np.random.default_rng(0)
    arrays = np.zeros((50, 1, 28, 28), dtype=np.uint8)
    arrays[:, :, 8:20, 10:18] = rng.integers(150, 255, (50, 1, 12, 8))
    return imaging.image_stats(arrays, [(28, 28)] * 50, ["L"] * 50)


def test_image_stats_describe_dark_background_grayscale_data():
    stats = _mnist_like_stats()
    assert stats["polarity"] == "dark_background"
    assert stats["colour_share"] == 0.0
    assert stats["source_sizes"][0] == {"size": "28x28", "count": 50}
    assert stats["border_brightness"] < stats["centre_brightness"]


def test_red_two_on_white_warns_about_size_colour_and_background():
    image = Image.new("RGB", (300, 300), (255, 255, 255))
    image.paste((220, 0, 0), (100, 60, 200, 240))
    decoded = imaging.decode(_png(image), max_pixels=10**6)
    arr, _ = imaging.preprocess(decoded.image, channels=1, width=28, height=28, resize_mode="squash")
    warnings = imaging.compare_to_stats(decoded, arr, _mnist_like_stats(), channels=1)
    codes = [w["code"] for w in warnings]
    assert codes == ["size_differs", "colour_differs", "background_differs"]
    assert "300x300" in warnings[0]["message"] and "28x28" in warnings[0]["message"]
    assert "invert" in warnings[2]["advice"]
    assert all(w["advice"] for w in warnings)


def test_image_like_the_training_data_has_no_warnings():
    decoded = imaging.decode(png_bytes(3), max_pixels=10**6)
    arr, _ = imaging.preprocess(decoded.image, channels=1, width=28, height=28, resize_mode="squash")
    assert imaging.compare_to_stats(decoded, arr, _mnist_like_stats(), channels=1) == []
