"""Freezing (content hash + leak guard) and diffing a dataset version of a million items.

Against the database DATABASE_URL names (PostgreSQL: the goal is under 30 s for each step), in a
fresh project that is deleted at the end:
  1. writes N assets with random perceptual hashes, their project assets (10 classes; E of them in
     the evaluation set) and version v1 (80 % train, 20 % val; the evaluation images in val), all
     with INSERT ... SELECT in the database;
  2. writes v2: v1 with 1 % of the items relabelled, each change logged as a LabelEvent;
  3. times `dataset_version_freeze` on v1 (recomputes the content hash over the manifest, checks
     the train split against the evaluation set within the leak radius) and `dataset_version_diff`
     of v1 -> v2 (with who changed each listed relabel).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench CRUCIBLE_MODE=server SECRET_KEY=x \\
        .venv/bin/python bench/bench_freeze.py --n 1000000
"""

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from crucible.core.models import Project, User  # noqa: E402
from curation import selectors, services  # noqa: E402
from curation.models import Asset, AssetHash, DatasetItem, DatasetVersion, LabelEvent, ProjectAsset  # noqa: E402

SPEC = {"channels": 1, "width": 28, "height": 28, "resize_mode": "squash"}


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def populate(project: Project, user: User, n: int, evaluation: int) -> tuple[DatasetVersion, DatasetVersion]:
    tag = hashlib.sha256(project.name.encode()).hexdigest()[:8]
    now = timezone.now()
    with connection.cursor() as c:
        c.execute(
            f"""INSERT INTO {table(Asset)} (sha256, kind, storage_name, size_bytes, width, height, mode, format,
                                            created_at)
                SELECT md5(%s || i::text) || md5(%s || (-i)::text), 'image', 'bench', 1, 28, 28, 'L', 'PNG', %s
                FROM generate_series(1, %s) AS i""",
            [tag, tag, now, n],
        )
        c.execute(
            f"""INSERT INTO {table(AssetHash)} (asset_id, phash, band0, band1, band2, band3, pixel_sha256, error,
                                                created_at)
                SELECT id, h, (h >> 48) & 65535, (h >> 32) & 65535, (h >> 16) & 65535, h & 65535, '', '', %s
                FROM (SELECT id, ('x' || substr(md5(sha256), 1, 16))::bit(64)::bigint AS h
                      FROM {table(Asset)} WHERE storage_name = 'bench') AS s
                ON CONFLICT DO NOTHING""",
            [now],
        )
        c.execute(
            f"""INSERT INTO {table(ProjectAsset)} (project_id, asset_id, label, source_path, excluded, evaluation,
                                                   created_at)
                SELECT %s, id, 'c' || (id %% 10)::text, '', false, (id %% 5 = 0 AND (id / 5) %% %s = 0), %s
                FROM {table(Asset)} WHERE storage_name = 'bench'""",
            [project.pk, max(1, n // 5 // max(1, evaluation)), now],
        )
    versions = []
    for name in ("v1", "v2"):
        versions.append(
            DatasetVersion.objects.create(
                project=project,
                name=name,
                split_seed=1,
                val_percent=20,
                class_names=[f"c{i}" for i in range(10)],
                status=DatasetVersion.Status.READY,
                created_by=user,
                **SPEC,
            )
        )
    v1, v2 = versions
    DatasetVersion.objects.filter(pk=v1.pk).update(created_at=now - timedelta(hours=2))
    with connection.cursor() as c:
        for version, relabel in ((v1, False), (v2, True)):
            label = (
                "CASE WHEN pa.id %% 100 = 7 THEN 'c' || ((pa.id + 1) %% 10)::text ELSE pa.label END"
                if relabel
                else "pa.label"
            )
            c.execute(
                f"""INSERT INTO {table(DatasetItem)} (version_id, asset_id, label, label_index, split, position)
                    SELECT %s, asset_id, lab, 0, split, row_number() OVER (PARTITION BY split ORDER BY asset_id) - 1
                    FROM (SELECT pa.asset_id, {label} AS lab,
                                 CASE WHEN pa.asset_id %% 5 = 0 THEN 'val' ELSE 'train' END AS split
                          FROM {table(ProjectAsset)} pa WHERE pa.project_id = %s) AS s""",
                [version.pk, project.pk],
            )
        c.execute(
            f"""INSERT INTO {table(LabelEvent)} (project_asset_id, old_label, new_label, actor_id, via, ref, created_at)
                SELECT pa.id, pa.label, 'c' || ((pa.id + 1) %% 10)::text, %s, 'review', pa.id, %s
                FROM {table(ProjectAsset)} pa WHERE pa.project_id = %s AND pa.id %% 100 = 7""",
            [user.pk, now - timedelta(hours=1), project.pk],
        )
    for version in (v1, v2):
        version.refresh_from_db()
        DatasetVersion.objects.filter(pk=version.pk).update(
            content_hash=services.dataset_version_manifest_hash(version=version)
        )
        version.refresh_from_db()
    return v1, v2


def cleanup(project: Project) -> None:
    with connection.cursor() as c:
        c.execute(f"DELETE FROM {table(DatasetItem)} WHERE version_id IN "
                  f"(SELECT id FROM {table(DatasetVersion)} WHERE project_id = %s)", [project.pk])  # fmt: skip
        c.execute(f"DELETE FROM {table(LabelEvent)} WHERE project_asset_id IN "
                  f"(SELECT id FROM {table(ProjectAsset)} WHERE project_id = %s)", [project.pk])  # fmt: skip
        c.execute(f"DELETE FROM {table(DatasetVersion)} WHERE project_id = %s", [project.pk])
        c.execute(f"DELETE FROM {table(ProjectAsset)} WHERE project_id = %s", [project.pk])
        c.execute(f"DELETE FROM {table(AssetHash)} WHERE asset_id IN "
                  f"(SELECT id FROM {table(Asset)} WHERE storage_name = 'bench')")  # fmt: skip
        c.execute(f"DELETE FROM {table(Asset)} WHERE storage_name = 'bench'")
    project.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--evaluation", type=int, default=1000, help="about this many evaluation-set images")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print(f"note: measuring on {connection.vendor}; the goal is set for PostgreSQL")
    call_command("migrate", verbosity=0)
    user = User.objects.filter(is_superuser=True).first() or User.objects.create_superuser("bench", password="x")
    project = Project.objects.create(name=f"bench-freeze-{int(time.time())}-{os.getpid()}", created_by=user)
    try:
        start = time.perf_counter()
        v1, v2 = populate(project, user, args.n, args.evaluation)
        members = ProjectAsset.objects.filter(project=project, evaluation=True).count()
        print(f"wrote {args.n} assets, 2 versions of {args.n} items, {members} evaluation images "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip

        start = time.perf_counter()
        frozen = services.dataset_version_freeze(version=v1, user=user)
        freeze_s = time.perf_counter() - start
        print(f"freeze (content hash + leak guard, radius {services.leak_radius()}): {freeze_s:.2f} s; "
              f"frozen {frozen.is_frozen}")  # fmt: skip

        start = time.perf_counter()
        diff = selectors.dataset_version_diff(user=user, a=v1, b=v2)
        diff_s = time.perf_counter() - start
        listed = diff["items"]["relabelled"]
        with_history = sum(1 for i in listed if i.get("changed_by"))
        print(f"diff v1 -> v2: {diff_s:.2f} s; {json.dumps(diff['summary'])}; "
              f"{with_history} of {len(listed)} listed relabels say who changed them")  # fmt: skip
        return 0 if freeze_s < 30 and diff_s < 30 else 1
    finally:
        cleanup(project)


if __name__ == "__main__":
    sys.exit(main())
