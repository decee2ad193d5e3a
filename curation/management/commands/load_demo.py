"""Load the demo: project "demo" with 5000 MNIST digits and the dataset version "minidata", then
project "demo-labels" with 200 of those digits unlabelled and queued, and the demo accounts
`annotator` and `reviewer` in both projects.

Idempotent: a second run finds everything in place and does nothing. The import and the shards are
made by the worker (queue `ingest`), as for any user; this command waits for them.
"""

import json
import os
import secrets
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from PIL import Image

from crucible.core.models import Membership, Project, Role, User
from crucible.core.services import project_create
from curation.demo_data import mnist_digits
from curation.models import DatasetVersion, ImportJob, ProjectAsset
from curation.services import dataset_version_create, import_start
from labeling.models import LabelSchema
from labeling.services import label_schema_set, queue_items_add

PROJECT = "demo"
DATASET = "minidata"
FOLDER = "mnist-demo"
LABEL_PROJECT = "demo-labels"
LABEL_ITEMS = 200
DEMO_USERS = {"annotator": Role.ANNOTATOR, "reviewer": Role.REVIEWER}
PASSWORDS_FILE = "demo_passwords.json"


def demo_passwords() -> dict[str, str]:
    """The demo accounts' passwords: CRUCIBLE_DEMO_PASSWORD, or generated once and kept in the data dir."""
    if os.environ.get("CRUCIBLE_DEMO_PASSWORD"):
        return dict.fromkeys(DEMO_USERS, os.environ["CRUCIBLE_DEMO_PASSWORD"])
    path = Path(settings.DATA_DIR) / PASSWORDS_FILE
    stored = json.loads(path.read_text()) if path.exists() else {}
    passwords = {name: stored.get(name) or secrets.token_urlsafe(9) for name in DEMO_USERS}
    if passwords != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(passwords, f)
        path.chmod(0o600)
    return passwords


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
        self._label_demo(project, user)

    def _label_demo(self, demo: Project, owner: User) -> None:
        """Project 'demo-labels': digits of the demo without their labels, queued for the demo annotator."""
        project = Project.objects.filter(name=LABEL_PROJECT).first()
        if project is None:
            project = project_create(
                name=LABEL_PROJECT, description="MNIST digits waiting for labels: try the annotator page", user=owner
            )
            self.stdout.write(f"created project {LABEL_PROJECT!r}")
        if not project.assets.exists():
            # The same stored images as the demo, referenced again with no label: nothing to import.
            # Ordered by hash, a fixed shuffle: the demo's files are sorted by digit.
            asset_ids = (
                ProjectAsset.objects.filter(project=demo).order_by("asset__sha256").values_list("asset_id", flat=True)
            )
            ProjectAsset.objects.bulk_create(
                [ProjectAsset(project=project, asset_id=a, label="") for a in asset_ids[:LABEL_ITEMS]],
                ignore_conflicts=True,
            )
        if not LabelSchema.objects.filter(project=project).exists():
            label_schema_set(project=project, user=owner, classes=[{"name": str(d), "key": str(d)} for d in range(10)])
        if not project.queue_items.exists():  # queued once; what annotators did since is theirs
            added = queue_items_add(project=project, user=owner)
            self.stdout.write(f"{added} items of {LABEL_PROJECT!r} queued for labelling")

        passwords = demo_passwords()
        for username, role in DEMO_USERS.items():
            account = User.objects.filter(username=username).first()
            if account is None:
                account = User.objects.create_user(username=username, password=passwords[username])
            elif not account.check_password(passwords[username]):
                account.set_password(passwords[username])
                account.save(update_fields=["password"])
            for p in (demo, project):
                Membership.objects.get_or_create(project=p, user=account, defaults={"role": role})
        self.stdout.write(
            self.style.SUCCESS(
                f"demo logins: annotator {passwords['annotator']!r} (label at /projects/{LABEL_PROJECT}/label/), "
                f"reviewer {passwords['reviewer']!r}"
            )
        )

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
