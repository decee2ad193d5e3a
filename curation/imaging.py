"""Image decoding, preprocessing and "does this look like the training data" checks.

Plain Pillow and NumPy, no Django: the import, the dataset shards, training and inference all use
the same functions, so an image is prepared the same way everywhere.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

SUPPORTED_FORMATS = {"PNG", "JPEG", "BMP", "PPM"}  # Pillow reports PGM files as PPM
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm"}
RESIZE_MODES = ("squash", "crop", "fill", "half_crop")

# Modes whose pixels may carry colour; the others are grayscale or black-and-white.
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
_MODE_NAMES = {
    "1": "black-and-white",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "La": "grayscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "I": "32-bit grayscale",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "F": "floating-point grayscale",
}
_RESAMPLE = Image.Resampling.BILINEAR

# decode() enforces its own, usually stricter, pixel limit with a clearer message; Pillow's warning
# for the same thing would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(Exception):
    """A file that cannot be used as an image; `reason` is one readable line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Decoded:
    image: Image.Image
    width: int
    height: int
    mode: str
    format: str


def decode(data: bytes, *, max_pixels: int) -> Decoded:
    """Fully decode `data`; the pixel count is checked from the header before any pixel is decoded."""
    if not data:
        raise ImageError("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except Image.DecompressionBombError:
        size = _header_size(data)
        text = f"{size[0]}x{size[1]} pixels" if size else "more pixels than Pillow allows"
        raise ImageError(f"image of {text} exceeds the limit of {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"damaged image header ({exc})") from None
    fmt = image.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"format {fmt} not supported")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image of {width}x{height} pixels has no pixels")
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        text = str(exc).lower()
        if "truncated" in text or "incomplete" in text or isinstance(exc, EOFError):
            raise ImageError(f"truncated {fmt}") from None
        raise ImageError(f"damaged {fmt} ({exc})") from None
    return Decoded(image=image, width=width, height=height, mode=image.mode, format=fmt)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, bypassing Pillow's own bomb check."""
    Image.init()
    for fmt in SUPPORTED_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and not accept(data[:16])):
            continue
        try:
            return factory(io.BytesIO(data)).size
        except Exception:  # noqa: S112 - a header another plugin may read
            continue
    return None


def mode_name(mode: str) -> str:
    return _MODE_NAMES.get(mode, mode)


def _to_mode(image: Image.Image, target: str) -> Image.Image:
    """Convert to "L" or "RGB"; 16/32-bit grayscale is scaled down, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image).astype(np.float64)
        top = arr.max(initial=0.0)
        if top > 255:
            arr = arr * (255.0 / (65535.0 if top <= 65535 else top))
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == target else image.convert(target)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def preprocess(
    image: Image.Image, *, channels: int, width: int, height: int, resize_mode: str, fill_seed: bytes = b""
) -> tuple[np.ndarray, list[str]]:
    """The image as a (C, H, W) uint8 array, prepared as DIGITS does, and the steps that were needed.

    squash: resize ignoring the aspect ratio; crop: resize to cover and cut the centre; fill: resize
    to fit and fill the rest with noise; half_crop: half way between crop and fill. The noise comes
    from a generator seeded by `fill_seed`, so the same image always gives the same array.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize_mode!r}")
    steps: list[str] = []
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        steps.append(f"converted {mode_name(image.mode)} to {mode_name(target)}")
        image = _to_mode(image, target)
    src_w, src_h = image.size
    if (src_w, src_h) == (width, height):
        arr = np.asarray(image, dtype=np.uint8)
    else:
        arr = _resize(image, width, height, resize_mode, fill_seed, steps)
    arr = arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), steps


def _resize(image: Image.Image, width: int, height: int, mode: str, fill_seed: bytes, steps: list[str]) -> np.ndarray:
    src_w, src_h = image.size
    src = f"{src_w}x{src_h}"
    width_ratio = src_w / width
    height_ratio = src_h / height
    if mode == "squash" or width_ratio == height_ratio:
        steps.append(f"{'squashed' if mode == 'squash' else 'resized'} {src} to {width}x{height}")
        return np.asarray(image.resize((width, height), _RESAMPLE), dtype=np.uint8)
    wider = width_ratio > height_ratio
    if mode == "crop":
        ratio = min(width_ratio, height_ratio)
    elif mode == "fill":
        ratio = max(width_ratio, height_ratio)
    else:  # half_crop
        ratio = (width_ratio + height_ratio) / 2.0
    new_w, new_h = max(1, round(src_w / ratio)), max(1, round(src_h / ratio))
    if mode == "crop":
        new_w, new_h = (new_w, height) if wider else (width, new_h)
    elif mode == "fill":
        new_w, new_h = (width, new_h) if wider else (new_w, height)
    out_w, out_h = min(new_w, width), min(new_h, height)
    # Resize only the centre part that stays visible: the same pixels as resizing then cropping.
    box_w, box_h = src_w * out_w / new_w, src_h * out_h / new_h
    left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
    arr = np.asarray(
        image.resize((out_w, out_h), _RESAMPLE, box=(left, top, left + box_w, top + box_h)), dtype=np.uint8
    )
    step = f"resized {src} to {new_w}x{new_h}"
    if (out_w, out_h) != (new_w, new_h):
        step += f", cropped the centre {out_w}x{out_h}"
    pad_w, pad_h = width - out_w, height - out_h
    if pad_w > 0 or pad_h > 0:
        # Noise on both sides of the short dimension, as DIGITS does, but from a seeded generator.
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(fill_seed).digest()[:16], "big"))
        extra = arr.shape[2:]
        if pad_h > 0:
            top_rows = pad_h // 2
            arr = np.concatenate(
                [_noise(rng, (top_rows, out_w, *extra)), arr, _noise(rng, (pad_h - top_rows, out_w, *extra))], axis=0
            )
            step += f", filled {pad_h} rows with noise"
        if pad_w > 0:
            left_cols = pad_w // 2
            arr = np.concatenate(
                [_noise(rng, (height, left_cols, *extra)), arr, _noise(rng, (height, pad_w - left_cols, *extra))],
                axis=1,
            )
            step += f", filled {pad_w} columns with noise"
    steps.append(step)
    return arr


def _border_mask(height: int, width: int) -> np.ndarray:
    """The outer ring of the image (about a tenth of each side, at least one pixel)."""
    bh, bw = max(1, height // 10), max(1, width // 10)
    mask = np.zeros((height, width), dtype=bool)
    mask[:bh], mask[-bh:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    return mask


def _is_colour_mode(mode: str) -> bool:
    return mode in _COLOUR_MODES


def image_stats(arrays: np.ndarray, sizes: list[tuple[int, int]], modes: list[str]) -> dict:
    """What a set of prepared images looks like, as JSON: source sizes, colour, brightness, polarity.

    `arrays` is (N, C, H, W) uint8 (a memory map is read in chunks); `sizes` and `modes` describe
    the source files.
    """
    n = int(arrays.shape[0]) if arrays.ndim == 4 else 0
    size_counts = Counter(f"{w}x{h}" for w, h in sizes)
    common = [{"size": s, "count": c} for s, c in size_counts.most_common(5)]
    colour = sum(1 for m in modes if _is_colour_mode(m))
    stats: dict = {
        "count": n,
        "source_sizes": common,
        "same_size_share": round(common[0]["count"] / len(sizes), 4) if sizes else None,
        "colour_share": round(colour / len(modes), 4) if modes else 0.0,
        "source_modes": dict(Counter(modes).most_common(5)),
        "mean_brightness": None,
        "border_brightness": None,
        "centre_brightness": None,
        "polarity": None,
    }
    if n == 0:
        return stats
    _, _, height, width = arrays.shape
    border = _border_mask(height, width)
    total = border_total = 0.0
    step = max(1, 4_000_000 // max(1, arrays[0].size))
    for start in range(0, n, step):
        chunk = np.asarray(arrays[start : start + step], dtype=np.float64).mean(axis=1)  # (n, H, W)
        total += chunk.sum()
        border_total += chunk[:, border].sum()
    pixels = n * height * width
    border_pixels = n * int(border.sum())
    mean = total / pixels
    border_mean = border_total / border_pixels
    inner = pixels - border_pixels
    centre_mean = (total - border_total) / inner if inner else mean
    stats.update(
        mean_brightness=round(float(mean), 2),
        border_brightness=round(float(border_mean), 2),
        centre_brightness=round(float(centre_mean), 2),
        polarity="dark_background" if border_mean < 128 else "light_background",
    )
    return stats


def _looks_colour(image: Image.Image) -> bool:
    """True when the pixels themselves carry colour (not a grey image saved as RGB)."""
    if not _is_colour_mode(image.mode):
        return False
    small = image.convert("RGB")
    small.thumbnail((128, 128))
    rgb = np.asarray(small, dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return bool((spread > 24).mean() > 0.01)


def compare_to_stats(decoded: Decoded, array: np.ndarray, stats: dict, *, channels: int) -> list[dict]:
    """Warnings when an input does not look like the training data, each with advice."""
    warnings_: list[dict] = []
    if not stats:
        return warnings_
    sizes = [s["size"] for s in stats.get("source_sizes") or []]
    size = f"{decoded.width}x{decoded.height}"
    if sizes and size not in sizes:
        warnings_.append(
            {
                "code": "size_differs",
                "message": f"the image is {size}; the training images were {sizes[0]}",
                "advice": f"crop the image to the object and scale it to {sizes[0]}, as the training images were",
            }
        )
    colour_share = stats.get("colour_share") or 0.0
    if colour_share < 0.05 and _looks_colour(decoded.image):
        warnings_.append(
            {
                "code": "colour_differs",
                "message": "the image is in colour; the training images were grayscale",
                "advice": "colours are lost in conversion to grayscale: use a grayscale image like the training data",
            }
        )
    elif channels == 3 and colour_share > 0.5 and not _looks_colour(decoded.image):
        warnings_.append(
            {
                "code": "colour_differs",
                "message": "the image is grayscale; the training images were in colour",
                "advice": "use a colour image like the training data",
            }
        )
    polarity = stats.get("polarity")
    if polarity and array.ndim == 3 and array.size:
        _, height, width = array.shape
        border = float(array.mean(axis=0)[_border_mask(height, width)].mean())
        mine = "dark_background" if border < 128 else "light_background"
        if mine != polarity:
            if mine == "light_background":
                message = (
                    f"the image has a light background (brightness {border:.0f}) and dark strokes; the training "
                    f"images have a dark background (brightness {stats.get('border_brightness')})"
                )
                advice = "invert the image (light object on a dark background), or use an image like the training data"
            else:
                message = (
                    f"the image has a dark background (brightness {border:.0f}); the training images have a "
                    f"light background (brightness {stats.get('border_brightness')})"
                )
                advice = "invert the image (dark object on a light background), or use an image like the training data"
            warnings_.append({"code": "background_differs", "message": message, "advice": advice})
    return warnings_
