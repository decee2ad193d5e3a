"""Perceptual hashes and the near-duplicate search (pure, no database)."""

from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from curation import hashing


def pattern(seed: int, size: int = 64, brighter: int = 0) -> Image.Image:
    """A distinct picture: a random 6x6 grid of grey levels blown up; `brighter` makes a near copy."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (6, 6)).astype(np.uint8)
    image = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), dtype=np.int16) + brighter
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def planted(n: int, pairs: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True).view(np.uint64)
    for _ in range(pairs):
        i, j = rng.integers(0, n, 2)
        flips = rng.choice(64, rng.integers(0, 8), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        h[j] = h[i] ^ mask
    return h


def test_near_copies_hash_close_and_different_pictures_far():
    a, a_noisy, b = pattern(1), pattern(1, brighter=8), pattern(2)
    ha, hn, hb = hashing.phash(a), hashing.phash(a_noisy), hashing.phash(b)
    assert bin(ha ^ hn).count("1") <= 4
    assert bin(ha ^ hb).count("1") > 12
    # The same pixels in another mode of storage give the same pixel digest; other pixels do not.
    assert hashing.pixel_digest(a) == hashing.pixel_digest(a.copy()) != hashing.pixel_digest(a_noisy)


def test_signed_storage_round_trips_and_bands_split_the_hash():
    value = 0xFEDC_BA98_7654_3210
    stored = hashing.to_signed(value)
    assert stored < 0 and hashing.to_unsigned(stored) == value
    assert hashing.bands(stored) == (0xFEDC, 0xBA98, 0x7654, 0x3210)


def test_blank_image_has_no_spread():
    assert hashing.pixel_std(Image.new("L", (30, 30), 128)) == 0
    assert hashing.pixel_std(pattern(3)) > 20


@pytest.mark.parametrize("radius", range(hashing.MAX_RADIUS + 1))
def test_tables_cover_every_way_a_pair_within_the_radius_can_differ(radius):
    for clean in combinations(range(hashing.BLOCKS), hashing.BLOCKS - radius):
        assert any(set(t) <= set(clean) for t in hashing.tables(radius)), clean


@pytest.mark.parametrize("radius", [0, 1, 3, 4, 5, 7])
def test_near_pairs_equal_brute_force(radius):
    h = planted(4000, 600, seed=radius)
    h[10] = h[11] = h[12]  # a group of equal hashes
    got = hashing.near_pairs(h, radius)
    want = hashing.brute_force_pairs(h, radius)
    assert len(want) > 50
    assert np.array_equal(got, want)


def test_cross_pairs_equal_brute_force_across_two_sets():
    h = planted(3000, 500, seed=9)
    q, b = h[:400], h[400:]
    got = {tuple(r) for r in hashing.cross_pairs(q, b, 4).tolist()}
    want = {(i, j - 400, d) for i, j, d in hashing.brute_force_pairs(h, 4).tolist() if i < 400 <= j}
    assert got == want and want


def test_radius_beyond_the_supported_range_is_refused():
    with pytest.raises(ValueError, match="radius"):
        hashing.near_pairs(planted(10, 0), 8)


def test_groups_join_chains_of_pairs():
    labels = hashing.groups(5, np.array([[0, 1, 2], [1, 2, 1]]))
    assert labels[0] == labels[1] == labels[2] and len({labels[2], labels[3], labels[4]}) == 3
