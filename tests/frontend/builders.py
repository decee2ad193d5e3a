"""Console test data written straight to the database: what the apps' services would have left behind."""

import hashlib
import io

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from crucible.core.models import Project, User
from curation.models import Asset, DatasetItem, DatasetVersion, ImportJob, ProjectAsset
from training.models import Epoch, TrainingRun

CLASSES = [str(d) for d in range(10)]
TRAIN_COUNTS = {c: 450 + i for i, c in enumerate(CLASSES)}
TRAIN_COUNTS["9"] = 466  # the walkthrough's bar for "9"
VAL_COUNTS = {c: 150 for c in CLASSES}


def red_two_png() -> bytes:
    """The walkthrough's test image: a red mark on white, larger than the training images."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    pixels = image.load()
    for x in range(16, 48):
        pixels[x, 16] = pixels[x, 47] = (220, 20, 20)
    for y in range(16, 48):
        pixels[47, y] = (220, 20, 20)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_import(project: Project, user: User, **fields) -> ImportJob:
    values = {
        "source_kind": ImportJob.Source.FOLDER,
        "source": "/data/train_small",
        "source_label": "/data/train_small",
        "status": ImportJob.Status.DONE,
        "total": 6002,
        "processed": 6002,
        "imported": 6000,
        "duplicates": 0,
        "errors": [
            {"path": "train_small/3/broken.png", "reason": "not an image"},
            {"path": "train_small/7/empty.jpg", "reason": "truncated file"},
        ],
    }
    values.update(fields)
    return ImportJob.objects.create(project=project, created_by=user, **values)


def digit_png(digit: int, variant: int = 0) -> bytes:
    """A 28x28 white-on-black picture that differs per class and per variant."""
    image = Image.new("L", (28, 28), 0)
    pixels = image.load()
    for y in range(6 + variant % 3, 22):
        for x in range(4 + digit, 8 + digit + variant % 4):
            pixels[x, y] = 255
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_assets(project: Project, job: ImportJob | None, per_class: int = 3, store: bool = False) -> list[ProjectAsset]:
    """Labelled assets; with `store`, their bytes are written to the storage (for thumbnails)."""
    rows = []
    for ci, label in enumerate(CLASSES):
        for k in range(per_class):
            data = digit_png(ci, k)
            sha = hashlib.sha256(data + label.encode() + bytes([k])).hexdigest()
            name = f"assets/{sha[:2]}/{sha}.png"
            if store:
                name = default_storage.save(name, ContentFile(data))
            asset = Asset.objects.create(
                sha256=sha, storage_name=name, size_bytes=len(data), width=28, height=28, mode="L", format="PNG"
            )
            rows.append(
                ProjectAsset(project=project, asset=asset, label=label, source_path=f"{label}/{k}.png", import_job=job)
            )
    return ProjectAsset.objects.bulk_create(rows)


def make_items(dataset: DatasetVersion, assets: list[ProjectAsset]) -> None:
    """Dataset items for the assets: the first of each class in val, the rest in train."""
    positions = {"train": 0, "val": 0}
    items = []
    seen: set[str] = set()
    for pa in assets:
        split = "val" if pa.label not in seen else "train"
        seen.add(pa.label)
        items.append(
            DatasetItem(
                version=dataset,
                asset=pa.asset,
                label=pa.label,
                label_index=CLASSES.index(pa.label),
                split=split,
                position=positions[split],
            )
        )
        positions[split] += 1
    DatasetItem.objects.bulk_create(items)


def make_dataset(project: Project, user: User, name: str = "minidata", **fields) -> DatasetVersion:
    values = {
        "channels": 1,
        "width": 28,
        "height": 28,
        "resize_mode": DatasetVersion.ResizeMode.SQUASH,
        "split_seed": 1234,
        "class_names": CLASSES,
        "counts": {"train": dict(TRAIN_COUNTS), "val": dict(VAL_COUNTS), "test": {}},
        "content_hash": "ab" * 32,
        "status": DatasetVersion.Status.READY,
    }
    values.update(fields)
    return DatasetVersion.objects.create(project=project, created_by=user, name=name, **values)


RUN_CONFIG = {
    "network": "lenet",
    "epochs": 30,
    "batch_size": 64,
    "lr": 0.01,
    "lr_policy": "fixed",
    "lr_step_epochs": 10,
    "lr_gamma": 0.1,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
}


def make_run(dataset: DatasetVersion, user: User, name: str = "TestA", **fields) -> TrainingRun:
    values = {
        "config": dict(RUN_CONFIG),
        "seed": 42,
        "device": "auto",
        "device_used": "cpu",
        "status": TrainingRun.Status.RUNNING,
    }
    values.update(fields)
    return TrainingRun.objects.create(
        project=dataset.project, dataset_version=dataset, created_by=user, name=name, **values
    )


def add_epochs(run: TrainingRun, first: int, last: int) -> None:
    """Epoch rows first..last (1-based) with a loss that falls and an accuracy that rises."""
    Epoch.objects.bulk_create(
        Epoch(
            run=run,
            epoch=n,
            train_loss=2.3 / n,
            val_loss=2.4 / n + 0.05,
            val_accuracy=min(0.99, 0.5 + 0.03 * n),
            learning_rate=0.01,
            images_per_sec=5200.0,
            seconds=0.9,
            checkpoint_name=f"checkpoints/{run.pk}/ep{n}.pt",
        )
        for n in range(first, last + 1)
    )
    total = run.config["epochs"]
    TrainingRun.objects.filter(pk=run.pk).update(
        current_epoch=last, progress=min(1.0, last / total), images_per_sec=5200.0, eta_seconds=(total - last) * 0.9
    )
