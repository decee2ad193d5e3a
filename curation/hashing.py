"""Perceptual hashes of images and the search for near duplicates among many of them.

Pure computation (no Django): the cleaning scan and the leak guard call it with arrays of hashes.

Hashes are imagehash's 64-bit pHash, held as signed int64 (the database's BIGINT) or uint64 here.

Near-duplicate search is multi-index hashing, exact for every radius from 0 to `MAX_RADIUS` (7):
the 64 bits are cut into 8 blocks of 8 bits. Two hashes within Hamming distance r differ in at most r
blocks, so at least 8 - r blocks are equal. A table keyed on a set K of blocks finds the pair when all
of K's blocks are among the equal ones; the tables used are a family of k-subsets of the 8 blocks such
that every (8 - r)-subset contains one of them (a Turán covering, found greedily and checked), so every
pair within r shares the key of some table. Each table is a sort of the keys; pairs come out of groups
of equal keys and are kept when their true distance (popcount of XOR) is at most r. For the default
radius 4 the tables are 24-bit keys (3 blocks), 23 of them (the optimum is 20): among a million
random hashes a 24-bit key collides for about 30,000 pairs per table, so the work is a few sorts of
the hashes plus checks of candidates, not the 5 * 10**11 pairs of brute force.

Identical hashes are collapsed first (many blank or re-encoded images share one hash), so a big
group of equal hashes costs its own output and nothing more.
"""

from __future__ import annotations

import hashlib
from functools import cache
from itertools import combinations

import imagehash
import numpy as np
from PIL import Image

MAX_RADIUS = 7
BLOCKS = 8  # blocks of 8 bits
DEFAULT_RADIUS = 4


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of a decoded image, as an unsigned int."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGBA").convert("RGB") if "A" in image.getbands() else image.convert("RGB")
    bits = imagehash.phash(image).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def to_signed(value: int) -> int:
    """An unsigned 64-bit hash as the signed BIGINT stored in the database."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def bands(value: int) -> tuple[int, int, int, int]:
    """The four 16-bit quarters of a hash (signed or unsigned), most significant first."""
    u = to_unsigned(value)
    return ((u >> 48) & 0xFFFF, (u >> 32) & 0xFFFF, (u >> 16) & 0xFFFF, u & 0xFFFF)


def pixel_digest(image: Image.Image) -> str:
    """sha256 of the decoded pixels with their mode and size: equal for the same picture in any format."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def pixel_std(image: Image.Image) -> float:
    """Standard deviation of the grayscale pixels (0-255) of a 64x64 reduction: near 0 for a blank image."""
    small = image.convert("L").resize((64, 64))
    return float(np.asarray(small, dtype=np.float32).std())


def as_uint64(hashes: np.ndarray | list[int]) -> np.ndarray:
    """Hashes given as signed BIGINTs or unsigned ints, as a uint64 array."""
    if isinstance(hashes, np.ndarray):
        return hashes.astype(np.int64, copy=False).view(np.uint64) if hashes.dtype != np.uint64 else hashes
    return np.array([to_signed(int(h)) for h in hashes], dtype=np.int64).view(np.uint64)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Bits set in each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int64)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(axis=-1).astype(np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return popcount64(np.bitwise_xor(as_uint64(a), as_uint64(b)))


@cache
def tables(radius: int) -> tuple[tuple[int, ...], ...]:
    """The block sets keyed on for `radius`: every (8 - radius)-subset of blocks contains one of them."""
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius must be between 0 and {MAX_RADIUS}")
    clean = BLOCKS - radius
    size = min(3, clean)  # 24-bit keys at most: larger keys would need many more tables
    candidates = list(combinations(range(BLOCKS), size))
    uncovered = {frozenset(s) for s in combinations(range(BLOCKS), clean)}
    chosen: list[tuple[int, ...]] = []
    while uncovered:  # greedy set cover; small (at most 70 sets to cover, 56 candidates)
        best = max(candidates, key=lambda c: sum(1 for s in uncovered if s.issuperset(c)))
        chosen.append(best)
        uncovered = {s for s in uncovered if not s.issuperset(best)}
    return tuple(chosen)


def _key(h: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """The table's key of each hash: its chosen blocks side by side (at most 24 bits, as uint32)."""
    key = np.zeros(h.shape, dtype=np.uint32)
    for b in blocks:
        key = (key << np.uint32(8)) | ((h >> np.uint64(8 * b)) & np.uint64(0xFF)).astype(np.uint32)
    return key


def _colliding(keys: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """Positions whose key is shared (with another position, or with a key of `among`), sorted by key.

    Key and position are packed into one uint64 and sorted by value (numpy's vectorised sort, several
    times faster than an argsort), then only the positions in collisions are kept.
    """
    positions = np.arange(len(keys), dtype=np.uint64)
    if among is not None:
        # Few queries against many base hashes: pick the base positions by binary search in the
        # queries' keys first, so only those few are sorted.
        wanted = np.unique(among)
        at = np.minimum(np.searchsorted(wanted, keys), len(wanted) - 1)
        hit = wanted[at] == keys
        keys, positions = keys[hit], positions[hit]
    packed = np.sort((keys.astype(np.uint64) << np.uint64(32)) | positions)
    if among is None:
        sorted_keys = (packed >> np.uint64(32)).astype(np.uint32)
        same = sorted_keys[1:] == sorted_keys[:-1]
        packed = packed[np.r_[same, False] | np.r_[False, same]]
    return (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _group_pairs(sorted_keys: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i before j in sorted order, whose keys are equal; as original indices."""
    n = len(sorted_keys)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_end = np.repeat(starts + sizes, sizes)  # one past each element's group
    count = group_end - np.arange(n) - 1  # partners after each element in its group
    total = int(count.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    left = np.repeat(np.arange(n), count)
    offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    right = left + offset + 1
    return order[left], order[right]


def near_pairs(hashes: np.ndarray | list[int], radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Every pair of positions (i < j) whose hashes are within Hamming distance `radius`.

    Returns an (m, 3) int64 array of (i, j, distance), sorted by (i, j).
    """
    h = as_uint64(hashes)
    if len(h) < 2:
        return np.empty((0, 3), np.int64)
    unique, inverse = np.unique(h, return_inverse=True)
    inverse = inverse.reshape(-1)
    found: list[np.ndarray] = []
    if len(unique) > 1:
        for blocks in tables(radius):
            keys = _key(unique, blocks)
            order = _colliding(keys)
            a, b = _group_pairs(keys[order], order)
            if len(a):
                keep = popcount64(unique[a] ^ unique[b]) <= radius
                a, b = a[keep], b[keep]
                lo, hi = np.minimum(a, b), np.maximum(a, b)
                found.append(lo * len(unique) + hi)
    codes = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    ua, ub = codes // len(unique), codes % len(unique)
    # Back from unique hashes to positions: each pair of unique hashes stands for all their positions,
    # and positions sharing one hash are pairs at distance 0.
    members = np.argsort(inverse, kind="stable")
    first = np.searchsorted(inverse[members], np.arange(len(unique)))
    counts = np.bincount(inverse, minlength=len(unique))
    rows: list[np.ndarray] = []
    if len(ua):
        dist = popcount64(unique[ua] ^ unique[ub])
        # Most hashes are unique: pair their single positions directly, expand only the shared ones.
        single = (counts[ua] == 1) & (counts[ub] == 1)
        rows.append(np.stack([members[first[ua[single]]], members[first[ub[single]]], dist[single]], axis=1))
        for x, y, d in zip(ua[~single], ub[~single], dist[~single], strict=True):
            px = members[first[x] : first[x] + counts[x]]
            py = members[first[y] : first[y] + counts[y]]
            gx, gy = np.meshgrid(px, py, indexing="ij")
            rows.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, d)], axis=1))
    if (counts > 1).any():
        i, j = _group_pairs(inverse[members], members)
        rows.append(np.stack([i, j, np.zeros(len(i), np.int64)], axis=1))
    if not rows:
        return np.empty((0, 3), np.int64)
    out = np.concatenate(rows).astype(np.int64)
    lo, hi = np.minimum(out[:, 0], out[:, 1]), np.maximum(out[:, 0], out[:, 1])
    out = np.stack([lo, hi, out[:, 2]], axis=1)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def cross_pairs(
    queries: np.ndarray | list[int], base: np.ndarray | list[int], radius: int = DEFAULT_RADIUS
) -> np.ndarray:
    """Every (query position, base position, distance) with the two hashes within `radius`.

    Each table keeps the base positions whose key some query has, sorts them and finds each query
    key's range by binary search: about len(base) + len(queries) per table plus the candidates checked.
    """
    q, b = as_uint64(queries), as_uint64(base)
    if not len(q) or not len(b):
        return np.empty((0, 3), np.int64)
    found: list[np.ndarray] = []
    for blocks in tables(radius):
        bkeys, qkeys = _key(b, blocks), _key(q, blocks)
        order = _colliding(bkeys, among=qkeys)  # base positions whose key some query has
        sorted_keys = bkeys[order]
        lo = np.searchsorted(sorted_keys, qkeys, side="left")
        hi = np.searchsorted(sorted_keys, qkeys, side="right")
        count = hi - lo
        total = int(count.sum())
        if not total:
            continue
        qi = np.repeat(np.arange(len(q)), count)
        offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        bi = order[np.repeat(lo, count) + offset]
        keep = popcount64(q[qi] ^ b[bi]) <= radius
        found.append(qi[keep] * len(b) + bi[keep])
    if not found:
        return np.empty((0, 3), np.int64)
    codes = np.unique(np.concatenate(found))
    qi, bi = codes // len(b), codes % len(b)
    return np.stack([qi, bi, popcount64(q[qi] ^ b[bi])], axis=1).astype(np.int64)


def brute_force_pairs(hashes: np.ndarray | list[int], radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """The same answer as `near_pairs` by comparing every pair (quadratic: for checks on samples)."""
    h = as_uint64(hashes)
    rows = []
    for i in range(len(h) - 1):
        d = popcount64(h[i + 1 :] ^ h[i])
        j = np.flatnonzero(d <= radius)
        if len(j):
            rows.append(np.stack([np.full(len(j), i), j + i + 1, d[j]], axis=1))
    return np.concatenate(rows).astype(np.int64) if rows else np.empty((0, 3), np.int64)


def groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of `n` items linked by `pairs` (rows of i, j, ...): a group label per item."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _count, labels = connected_components(graph, directed=False)
    return labels
