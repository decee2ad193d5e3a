"""Read throughput of training batches from encoded-image shards, npy shards and the original files.

Makes N photo-like colour images (smooth random fields plus noise) at the source size, saves each as
an original file (JPEG or PNG), and their preprocessed (C, H, W) arrays both as an npy shard and as an
encoded shard (curation.shards: PNG, zlib level 1). Then times the training loop's read pattern,
random batches of 64 (sorted indices, as training/engine/loop.py reads them), over
  1. EncodedImages (decode each batch's PNGs),
  2. the npy array memory-mapped (gather the rows), and
  3. the original files: a bare decode loop (open and decode each file of the batch, no resizing),
printing images/s, the ratios, the bytes on disk and the time to write the encoded shard. Every file is
freshly written, so all three read from the page cache: this measures decoding, not the disk.

    .venv/bin/python bench/bench_shards.py --n 2000 --size 96 --source-size 128 --batches 150
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation import shards

BATCH = 64


def photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a smooth random field (an 8x8 grid upsampled) plus sensor-like noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), mode="RGB")
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def make_data(n: int, size: int, source_size: int, source_format: str, folder: Path, seed: int) -> list[Path]:
    """Original files in `folder/originals`, plus the npy shard and the encoded shard of their resized
    arrays in `folder`; returns the original files."""
    rng = np.random.default_rng(seed)
    (folder / "originals").mkdir()
    x = np.lib.format.open_memmap(folder / "train_x.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    files = []
    for i in range(n):
        image = Image.fromarray(photo(rng, source_size), mode="RGB")
        path = folder / "originals" / f"{i}.{source_format}"
        image.save(
            path,
            format="JPEG" if source_format == "jpg" else "PNG",
            **({"quality": 90} if source_format == "jpg" else {}),
        )
        files.append(path)
        x[i] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    x.flush()
    return files


def rate(read, n: int, batches: int, seed: int) -> float:
    """Images per second of `read(indices)` over `batches` random sorted batches of BATCH."""
    rng = np.random.default_rng(seed)
    batches_idx = [np.sort(rng.choice(n, BATCH, replace=False)) for _ in range(batches)]
    read(batches_idx[0])  # warm up
    start = time.perf_counter()
    checksum = 0
    for idx in batches_idx:
        checksum += int(read(idx)[:, :, 0, 0].sum())  # touch the result
    return batches * BATCH / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96, help="preprocessed side (the shards)")
    parser.add_argument("--source-size", type=int, default=128, help="side of the original files")
    parser.add_argument("--source-format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = make_data(args.n, args.size, args.source_size, args.source_format, folder, args.seed)
        x = np.load(folder / "train_x.npy", mmap_mode="r")
        start = time.perf_counter()
        shards.write_encoded(folder, "train", x)
        write_s = time.perf_counter() - start
        encoded = shards.EncodedImages.open(folder, "train")
        assert np.array_equal(encoded[: min(args.n, 200)], x[: min(args.n, 200)])  # lossless

        def originals(idx: np.ndarray) -> np.ndarray:
            out = []
            for i in idx.tolist():
                with Image.open(files[i]) as image:
                    out.append(np.asarray(image))
            return np.stack(out)

        npy_bytes = (folder / "train_x.npy").stat().st_size
        bin_bytes = (folder / "train_x.bin").stat().st_size + (folder / "train_offsets.npy").stat().st_size
        orig_bytes = sum(f.stat().st_size for f in files)
        print(
            f"{args.n} images, shards 3x{args.size}x{args.size}, originals {args.source_size}x{args.source_size} "
            f"{args.source_format}; batches of {BATCH}, {args.batches} batches"
        )
        print(
            f"on disk: npy {npy_bytes / 2**20:.1f} MiB, encoded {bin_bytes / 2**20:.1f} MiB "
            f"({bin_bytes / npy_bytes:.2f}x), originals {orig_bytes / 2**20:.1f} MiB"
        )
        print(f"writing the encoded shard (PNG level {shards.PNG_COMPRESS_LEVEL}): {args.n / write_s:.0f} images/s")
        rates = {
            "encoded (EncodedImages)": rate(lambda idx: encoded[idx], args.n, args.batches, args.seed),
            "npy memmap": rate(lambda idx: np.asarray(x[idx]), args.n, args.batches, args.seed),
            f"original {args.source_format} files (decode)": rate(originals, args.n, args.batches, args.seed),
        }
        for name, value in rates.items():
            print(f"  {name:32s} {value:12.0f} images/s")
        enc = rates["encoded (EncodedImages)"]
        print(
            f"encoded / npy: {enc / rates['npy memmap']:.3f}; "
            f"encoded / originals: {enc / rates[f'original {args.source_format} files (decode)']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
