"""Seeding for the load tests: queued items written with COPY, so that LOAD_ITEMS=1000000 seeds in minutes."""

import os
import uuid

import numpy as np
import pytest
from django.db import connection, models
from django.utils import timezone

from crucible.core.models import Membership, Project, Role, User
from curation.models import Asset, ProjectAsset
from labeling.models import QueueItem

LOAD_ITEMS = int(os.environ.get("LOAD_ITEMS", "5000"))
LOAD_ANNOTATORS = int(os.environ.get("LOAD_ANNOTATORS", "50"))
# Worker threads, each holding one connection: the annotators share them, as requests share a pool.
LOAD_POOL = int(os.environ.get("LOAD_POOL", str(min(LOAD_ANNOTATORS, 24))))

_DEFAULT = object()


def copy_rows(model: type[models.Model], n: int, values: dict[str, object]) -> None:
    """COPY `n` rows of `model`: a column in `values` from a function of the row number or a constant,
    every other column from its field's default, as the ORM would write it."""
    now = timezone.now()
    columns: list[str] = []
    template: list[object] = []
    slots: list[tuple[int, object]] = []
    for f in model._meta.concrete_fields:
        columns.append(f.column)
        source = values.get(f.column, _DEFAULT)
        if callable(source):
            slots.append((len(template), source))
            template.append(None)
            continue
        if source is not _DEFAULT:
            value = source
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            value = now
        else:
            value = f.get_default()
        template.append(f.get_db_prep_save(value, connection))
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = f'COPY "{model._meta.db_table}" ({cols}) FROM STDIN'
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        row = list(template)
        for i in range(n):
            for pos, source in slots:
                row[pos] = source(i)  # type: ignore[operator]
            copy.write_row(row)


def reserve_ids(model: type[models.Model], n: int) -> int:
    """Move `model`'s id sequence past `n` new ids; returns the first of them."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_get_serial_sequence('\"{table}\"', 'id')")
        seq = cursor.fetchone()[0]
        cursor.execute("SELECT nextval(%s)", [seq])
        first = int(cursor.fetchone()[0])
        cursor.execute("SELECT setval(%s, %s)", [seq, first + n - 1])
    return first


def seed_queue(project: Project, n: int, *, required: int) -> None:
    """`n` queued items of the project (each on an asset of its own, distinct sha256, no bytes)."""
    tag = uuid.uuid4().hex[:8]
    a0 = reserve_ids(Asset, n)
    copy_rows(
        Asset,
        n,
        {
            "id": lambda i: a0 + i,
            "sha256": lambda i: f"{tag}{i:056x}",
            "storage_name": lambda i: f"assets/load/{tag}-{i}.png",
            "size_bytes": 0,
            "width": 28,
            "height": 28,
            "mode": "L",
            "format": "PNG",
        },
    )
    p0 = reserve_ids(ProjectAsset, n)
    copy_rows(ProjectAsset, n, {"id": lambda i: p0 + i, "project_id": project.pk, "asset_id": lambda i: a0 + i})
    keys = np.random.default_rng(0).random(n).tolist()
    q0 = reserve_ids(QueueItem, n)
    copy_rows(
        QueueItem,
        n,
        {
            "id": lambda i: q0 + i,
            "project_id": project.pk,
            "project_asset_id": lambda i: p0 + i,
            "required_annotations": required,
            "random_key": keys.__getitem__,
        },
    )
    with connection.cursor() as cursor:
        for model in (Asset, ProjectAsset, QueueItem):
            cursor.execute(f'ANALYZE "{model._meta.db_table}"')


@pytest.fixture
def annotators(project):
    """LOAD_ANNOTATORS users with annotator memberships of the project."""
    users = [User(username=f"load-annotator-{i}") for i in range(LOAD_ANNOTATORS)]
    for user in users:
        user.set_unusable_password()
    users = User.objects.bulk_create(users)
    Membership.objects.bulk_create(Membership(project=project, user=u, role=Role.ANNOTATOR) for u in users)
    return users
