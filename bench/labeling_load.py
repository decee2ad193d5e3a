"""The labelling queue's load harness, shared by bench/bench_labeling.py and tests/load: rows seeded with
COPY (real rows, distinct sha256, no image bytes: claims and submissions never read them) and the pool of
worker threads. Import it once Django is set up."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np
from django.db import connection, models
from django.utils import timezone

from crucible.core.models import Project
from curation.models import Asset, ProjectAsset
from labeling.models import Annotation, Lease, QueueItem

_DEFAULT = object()


def copy_rows(model: type[models.Model], n: int, values: dict[str, object]) -> None:
    """COPY `n` rows of `model`: columns in `values` from a list, a function of the row number or a constant,
    every other column from the field's default, as the ORM would have written it."""
    now = timezone.now()
    columns: list[str] = []
    template: list[object] = []
    slots: list[tuple[int, object]] = []
    for f in model._meta.concrete_fields:
        columns.append(f.column)
        source = values.get(f.column, _DEFAULT)
        if callable(source) or isinstance(source, list):
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
    missing = set(values) - set(columns)
    if missing:
        raise ValueError(f"{model.__name__} has no column(s) {sorted(missing)}")
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = f'COPY "{model._meta.db_table}" ({cols}) FROM STDIN'
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        row = list(template)
        for i in range(n):
            for pos, source in slots:
                row[pos] = source(i) if callable(source) else source[i]  # type: ignore[index]
            copy.write_row(row)


def reserve_ids(model: type[models.Model], n: int) -> int:
    """Reserve `n` primary keys of `model`'s sequence; returns the first."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_get_serial_sequence('\"{table}\"', 'id')")
        seq = cursor.fetchone()[0]
        cursor.execute(
            f'SELECT setval(%s, GREATEST((SELECT COALESCE(MAX(id), 0) FROM "{table}"), '
            f"(SELECT last_value FROM {seq})) + %s)",
            [seq, n],
        )
        return int(cursor.fetchone()[0]) - n + 1


def seed_assets(project: Project, n: int, *, labels: list[str] | None = None) -> tuple[int, int]:
    """`n` assets and project assets (labelled from `labels` cyclically when given); returns the first ids."""
    tag = uuid.uuid4().hex[:8]
    a0 = reserve_ids(Asset, n)
    copy_rows(
        Asset,
        n,
        {
            "id": lambda i: a0 + i,
            "sha256": lambda i: f"{tag}{i:056x}",
            "storage_name": lambda i: f"assets/bench/{tag}-{i}.png",
            "size_bytes": 120,
            "width": 28,
            "height": 28,
            "mode": "L",
            "format": "PNG",
        },
    )
    p0 = reserve_ids(ProjectAsset, n)
    label = (lambda i: labels[i % len(labels)]) if labels else ""
    copy_rows(
        ProjectAsset,
        n,
        {
            "id": lambda i: p0 + i,
            "project_id": project.pk,
            "asset_id": lambda i: a0 + i,
            "label": label,
            "source_path": lambda i: f"digits/{i}.png",
        },
    )
    return a0, p0


def seed_queue(project: Project, n: int, *, required: int = 1, seed: int | None = None) -> None:
    """`n` open queue items needing `required` annotations each, on assets of their own; `seed` seeds
    their random keys (fresh randomness when None)."""
    _, p0 = seed_assets(project, n)
    keys = np.random.default_rng(seed).random(n).tolist()
    q0 = reserve_ids(QueueItem, n)
    copy_rows(
        QueueItem,
        n,
        {
            "id": lambda i: q0 + i,
            "project_id": project.pk,
            "project_asset_id": lambda i: p0 + i,
            "required_annotations": required,
            "random_key": keys,
        },
    )


def analyze() -> None:
    """Fresh planner statistics of the tables the queue reads and writes."""
    with connection.cursor() as cursor:
        for model in (Asset, ProjectAsset, QueueItem, Lease, Annotation):
            cursor.execute(f'ANALYZE "{model._meta.db_table}"')


def run_pool(worker: Callable[[], None], n: int, *, beside: Callable[[], None], stop: threading.Event) -> None:
    """Run `n` threads of `worker` with one thread of `beside` (a scheduler, a janitor) started first; once
    the workers have returned, set `stop` and wait for `beside` to end."""
    side = threading.Thread(target=beside)
    threads = [threading.Thread(target=worker) for _ in range(n)]
    side.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    side.join()
