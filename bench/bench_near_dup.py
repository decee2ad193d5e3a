"""Near-duplicate search over a million perceptual hashes, checked against brute force on a sample.

Makes N random 64-bit hashes and plants near duplicates (copies of a hash with 0 to 7 bits flipped,
placed a few positions away so that many pairs fall inside the sample), then
  1. times `curation.hashing.near_pairs` (multi-index hashing) on all N at the given radius, and
  2. compares, on the first S hashes, its pairs with brute force (popcount of the XOR of every pair):
     the two must be the same set of pairs.

    .venv/bin/python bench/bench_near_dup.py --n 1000000 --sample 20000 --radius 4
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation import hashing


def synthetic(n: int, planted: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True).view(np.uint64)
    src = rng.integers(0, n - 10, planted)
    dst = src + rng.integers(1, 10, planted)
    flips = rng.integers(0, 8, planted)
    masks = np.zeros(planted, dtype=np.uint64)
    for k in range(8):  # flip `flips` distinct random bits: draw 8 bit positions, use the first `flips`
        bit = rng.integers(0, 64, planted).astype(np.uint64)
        masks = np.where(k < flips, masks | (np.uint64(1) << bit), masks)
    h[dst] = h[src] ^ masks
    return h


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--planted", type=int, default=50_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--radius", type=int, default=hashing.DEFAULT_RADIUS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    h = synthetic(args.n, args.planted, args.seed)
    tables = hashing.tables(args.radius)
    print(
        f"{args.n} hashes, {args.planted} planted near copies, radius {args.radius}, "
        f"{len(tables)} tables of {8 * len(tables[0])}-bit keys"
    )
    start = time.perf_counter()
    pairs = hashing.near_pairs(h, args.radius)
    elapsed = time.perf_counter() - start
    print(f"multi-index search: {len(pairs)} pairs in {elapsed:.2f} s")

    s = args.sample
    start = time.perf_counter()
    sample_pairs = hashing.near_pairs(h[:s], args.radius)
    mih = time.perf_counter() - start
    start = time.perf_counter()
    brute = hashing.brute_force_pairs(h[:s], args.radius)
    brute_s = time.perf_counter() - start
    inside = pairs[(pairs[:, 0] < s) & (pairs[:, 1] < s)]
    same = np.array_equal(sample_pairs, brute) and np.array_equal(inside, brute)
    print(
        f"sample of {s}: multi-index {len(sample_pairs)} pairs in {mih:.3f} s, brute force {len(brute)} pairs "
        f"in {brute_s:.2f} s; same pairs: {'yes' if same else 'NO'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
