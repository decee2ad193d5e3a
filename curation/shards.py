"""Encoded-image training shards: each preprocessed image of a split stored as a lossless PNG.

Versions whose preprocessed images are small keep the raw `{split}_x.npy` arrays (N, C, H, W) uint8,
which the training loop memory-maps and indexes directly. For large images those arrays grow as
N*C*H*W bytes, so such versions store `{split}_x.bin` instead: the PNGs of the split's images one
after another, in row order, with `{split}_offsets.npy` (int64, N+1) giving where each one starts
and ends. `EncodedImages` reads them back as an array-like over (N, C, H, W) uint8 that decodes only
the rows asked for, so a batch costs its own images and the split is never loaded whole.

PNG is lossless, so a decoded image equals the array that was encoded, bit for bit, and training
from either format computes the same numbers. Pure compute: no Django import.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# Chosen for reading speed, since a shard is written once and decoded every epoch: on photo-like
# 96x96 RGB images level 6 (zlib's default) decodes in ~640 us against ~740 us for levels 1-3, and
# files are 11% smaller, for ~1.25x the encoding time (2.4 ms against 1.9 ms an image); levels above 6
# gain nothing here, and level 0 (stored) outgrows the raw array. bench/bench_shards.py measures it.
PNG_COMPRESS_LEVEL = 6
_MODES = {1: "L", 3: "RGB"}


def shard_format(*, channels: int, width: int, height: int, raw_max_bytes: int) -> str:
    """ "npy" when one preprocessed image (C*H*W bytes) is at most `raw_max_bytes`, else "encoded"."""
    return "npy" if channels * width * height <= raw_max_bytes else "encoded"


def encode_image(image: np.ndarray) -> bytes:
    """One (C, H, W) uint8 image (C 1 or 3) as PNG bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in _MODES:
        raise ValueError(f"expected a (1|3, H, W) uint8 image, got {image.dtype} {image.shape}")
    pixels = image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(pixels, mode=_MODES[image.shape[0]]).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_image(data: bytes | memoryview, shape: tuple[int, int, int], out: np.ndarray | None = None) -> np.ndarray:
    """PNG bytes written by `encode_image` back into a (C, H, W) uint8 array (into `out` when given).

    Raises ValueError when the bytes are not such an image of `shape`."""
    channels, height, width = shape
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode != _MODES.get(channels) or image.size != (width, height):
                raise ValueError(f"stored image is {image.mode} {image.size}, expected {channels}x{height}x{width}")
            pixels = np.asarray(image)
    except (OSError, SyntaxError) as exc:  # Pillow's errors for truncated or garbled data
        raise ValueError(f"stored image cannot be decoded: {exc}") from None
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    if channels == 1:
        out[0] = pixels
    else:
        out[...] = pixels.transpose(2, 0, 1)
    return out


class EncodedWriter:
    """Writes `{name}_x.bin` and `{name}_offsets.npy` for `n` images of `shape`, given in any order.

    Images arrive in whatever order they are read (materialization reads each pack front to back);
    they are appended to a spill file as they come and copied into row order by `close`, so memory
    holds one image at a time. Rows never written make `close` fail.
    """

    def __init__(self, folder: Path, name: str, *, n: int, shape: tuple[int, int, int]):
        self.folder = Path(folder)
        self.bin_path = self.folder / f"{name}_x.bin"
        self.offsets_path = self.folder / f"{name}_offsets.npy"
        self.n = n
        self.shape = tuple(shape)
        self._spill_path = self.folder / f".{name}_x.spill"
        self._spill = open(self._spill_path, "wb")  # noqa: SIM115 - closed by close()
        self._starts = np.full(n, -1, dtype=np.int64)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._size = 0

    def __setitem__(self, index: int, image: np.ndarray) -> None:
        if tuple(image.shape) != self.shape:
            raise ValueError(f"image {index} is {image.shape}, expected {self.shape}")
        data = encode_image(image)
        self._spill.write(data)
        self._starts[index] = self._size
        self._lengths[index] = len(data)
        self._size += len(data)

    def close(self) -> None:
        """Write the row-ordered .bin and the offsets, and remove the spill file."""
        self._spill.close()
        try:
            missing = np.flatnonzero(self._starts < 0)
            if len(missing):
                raise ValueError(f"{len(missing)} image(s) were never written, the first at row {missing[0]}")
            offsets = np.zeros(self.n + 1, dtype=np.int64)
            np.cumsum(self._lengths, out=offsets[1:])
            with open(self._spill_path, "rb") as spill, open(self.bin_path, "wb") as out:
                if self._size:
                    src = np.memmap(spill, dtype=np.uint8, mode="r")
                    for start, length in zip(self._starts.tolist(), self._lengths.tolist(), strict=True):
                        out.write(src[start : start + length])
                    del src
            np.save(self.offsets_path, offsets)
        finally:
            os.unlink(self._spill_path)


def write_encoded(folder: Path, name: str, images: np.ndarray) -> None:
    """`{name}_x.bin` and `{name}_offsets.npy` for an (N, C, H, W) uint8 array, in row order."""
    writer = EncodedWriter(folder, name, n=len(images), shape=tuple(images.shape[1:]))
    for i in range(len(images)):
        writer[i] = np.asarray(images[i])
    writer.close()


class EncodedImages:
    """An (N, C, H, W) uint8 array-like over a `.bin` of PNGs and its offsets, decoding on access.

    The bytes are memory-mapped, so indexing reads only the rows it returns. An int gives one
    (C, H, W) image; a slice or an integer index array gives (n, C, H, W) in the order asked for.
    Every result is a fresh, writable, C-contiguous array. Decoding is one thread's work: Pillow
    holds the GIL while it decodes a PNG (measured: two decode threads used no more CPU than one).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, bin_path: Path, offsets_path: Path, *, shape: tuple[int, int, int] | None = None):
        self.bin_path = Path(bin_path)
        self.offsets = np.load(offsets_path)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets.dtype.kind not in "iu":
            raise ValueError(f"{Path(offsets_path).name} is not a list of offsets")
        n = len(self.offsets) - 1
        size = self.bin_path.stat().st_size
        if self.offsets[0] != 0 or self.offsets[-1] != size or np.any(np.diff(self.offsets) < 0):
            raise ValueError(f"{self.bin_path.name} ({size} bytes) does not match its offsets")
        # An empty file cannot be memory-mapped (and there is nothing to read).
        self._bytes = np.memmap(self.bin_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        if shape is None:
            shape = self._probe_shape() if n else (0, 0, 0)
        self.shape = (n, *(int(s) for s in shape))

    @classmethod
    def open(cls, folder: Path, split: str, *, shape: tuple[int, int, int] | None = None) -> EncodedImages:
        folder = Path(folder)
        return cls(folder / f"{split}_x.bin", folder / f"{split}_offsets.npy", shape=shape)

    def _probe_shape(self) -> tuple[int, int, int]:
        with Image.open(io.BytesIO(self._raw(0))) as image:
            channels = {mode: c for c, mode in _MODES.items()}.get(image.mode)
            if channels is None:
                raise ValueError(f"{self.bin_path.name} holds a {image.mode} image, not L or RGB")
            return channels, image.size[1], image.size[0]

    def _raw(self, i: int) -> memoryview:
        return memoryview(self._bytes[int(self.offsets[i]) : int(self.offsets[i + 1])])

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"EncodedImages({self.bin_path.name}, shape={self.shape})"

    def _decode_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        for k, i in enumerate(rows.tolist()):
            try:
                decode_image(self._raw(i), self.shape[1:], out[k])
            except ValueError as exc:
                raise ValueError(f"{self.bin_path.name} row {i}: {exc}") from None
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # images[rows, channel, ...]: decode the rows, then index within them
            if not key:
                return self[:]
            first = self[key[0]]
            rest = key[1:] if isinstance(key[0], (int, np.integer)) else (slice(None), *key[1:])
            return np.ascontiguousarray(first[rest])
        if key is Ellipsis or key is None:
            raise IndexError("index the images by an int, a slice or integers first")
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} images")
            return self._decode_rows(np.array([i % n]))[0]
        if isinstance(key, slice):
            return self._decode_rows(np.arange(n)[key])
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"boolean index of shape {rows.shape} for {n} images")
            rows = np.flatnonzero(rows)
        elif rows.dtype.kind not in "iu" and not (rows.size == 0 and rows.dtype.kind == "f"):
            raise IndexError(f"images are indexed by an int, a slice or integers, not {rows.dtype}")
        flat = rows.astype(np.int64, copy=False).reshape(-1)
        if len(flat) and (flat.min() < -n or flat.max() >= n):
            bad = flat[(flat < -n) | (flat >= n)][0]
            raise IndexError(f"index {bad} is out of range for {n} images")
        out = self._decode_rows(flat % n if n else flat)
        return out.reshape(*rows.shape, *self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole split decoded (np.asarray(images)): for small splits and tests only."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)
