"""Reads of curation: imports, classes, assets, dataset versions and their shards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from django.conf import settings
from django.core.files.storage import DEFAULT_STORAGE_ALIAS, FileSystemStorage, Storage, default_storage, storages
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from crucible.core.errors import Conflict, NotFound, ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import project_get, require_read
from curation import shards
from curation.models import Asset, DatasetItem, DatasetVersion, Finding, ImportJob, LabelEvent, ProjectAsset

SPLITS = ("train", "val", "test")
SHARD_FILES = tuple(f"{split}_{kind}.npy" for split in SPLITS for kind in ("x", "y"))


def natural_key(text: str) -> tuple:
    """Sort key that puts "2" before "10" and "img2" before "img10"."""
    parts = re.split(r"(\d+)", text)
    # re.split alternates text and digits, so ints and strings never meet at the same position.
    return (tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), text)


def storage_root(storage: Storage | None = None) -> Path | None:
    """The local folder behind a file-system storage; None for remote storage such as S3."""
    # The storage itself, not default_storage: that lazy wrapper is empty until first used.
    storage = storage or storages[DEFAULT_STORAGE_ALIAS]
    target = getattr(storage, "_wrapped", storage)
    if isinstance(target, FileSystemStorage):
        return Path(target.path(""))
    return None


# Asset bytes


class AssetUnreadable(OSError):
    """The stored bytes of an asset are missing or cut short; `key` says which asset."""

    def __init__(self, key: Hashable, reason: str):
        super().__init__(reason)
        self.key = key
        self.reason = reason


def _open_stored(root: Path | None, name: str) -> IO[bytes]:
    # A local folder is read directly: this runs once per asset file (or pack) read.
    return open(root / name, "rb") if root is not None else default_storage.open(name, "rb")


def _read_slice(f: IO[bytes], offset: int | None, length: int | None) -> bytes:
    if offset is None:
        return f.read()
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise OSError(f"the pack holds {len(data)} of the asset's {length} bytes")
    return data


def asset_read_bytes(asset: Asset) -> bytes:
    """The stored bytes of one asset: its own file, or its slice of a pack."""
    try:
        with _open_stored(storage_root(), asset.storage_name) as f:
            return _read_slice(f, asset.offset, asset.length)
    except OSError as exc:
        raise AssetUnreadable(asset.sha256, exc.strerror or str(exc)) from None


def assets_read_bytes(
    locations: Iterable[tuple[Hashable, str, int | None, int | None]],
) -> Iterator[tuple[Hashable, bytes]]:
    """The bytes of many assets, given as (key, storage_name, offset, length), in storage order.

    Each pack is opened once and read front to back (a dataset of 60,000 packed digits opens about
    30 packs, not 60,000 files); assets of their own come after, one file each. Raises
    AssetUnreadable with the key of the first asset that cannot be read.
    """
    root = storage_root()
    packs: dict[str, list[tuple[int, int, Hashable]]] = {}
    files: list[tuple[str, Hashable]] = []
    for key, name, offset, length in locations:
        if offset is None or length is None:
            files.append((name, key))
        else:
            packs.setdefault(name, []).append((offset, length, key))
    for name, slices in packs.items():
        slices.sort(key=lambda s: s[0])
        key = slices[0][2]
        try:
            with _open_stored(root, name) as f:
                for offset, length, key in slices:  # `key` names the asset being read if one fails
                    yield key, _read_slice(f, offset, length)
        except OSError as exc:
            raise AssetUnreadable(key, exc.strerror or str(exc)) from None
    for name, key in files:
        try:
            with _open_stored(root, name) as f:
                data = f.read()
        except OSError as exc:
            raise AssetUnreadable(key, exc.strerror or str(exc)) from None
        yield key, data


# Imports


def import_job_get(*, user: User, job_id: int) -> ImportJob:
    job = ImportJob.objects.select_related("project").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"import {job_id} not found")
    require_read(user=user, project=job.project)  # 404 outside the caller's projects, 403 for annotators
    return job


def import_job_list(*, user: User, project: Project) -> QuerySet[ImportJob]:
    require_read(user=user, project=project)
    return ImportJob.objects.filter(project=project).order_by("-created_at", "-pk")


def project_class_counts(*, user: User, project: Project) -> list[dict]:
    """The labels of a project's assets with how many assets carry each, in natural order."""
    require_read(user=user, project=project)
    rows = (
        ProjectAsset.objects.filter(project=project)
        .exclude(label="")
        .values("label")
        .annotate(count=Count("pk"))
        .values_list("label", "count")
    )
    return [{"label": label, "count": count} for label, count in sorted(rows, key=lambda r: natural_key(r[0]))]


def project_asset_content(*, user: User, project: Project, sha256: str) -> tuple[Asset, IO[bytes]]:
    """An asset of the project and its stored bytes, open for reading.

    A packed asset (small by definition) is read into memory; an asset of its own is streamed from
    its file.
    """
    require_read(user=user, project=project)
    asset = Asset.objects.filter(sha256=sha256.lower(), project_assets__project=project).first()
    if asset is None:
        raise NotFound(f"asset {sha256[:12]} not found in {project.name!r}")
    try:
        if asset.offset is not None:
            return asset, io.BytesIO(asset_read_bytes(asset))
        return asset, default_storage.open(asset.storage_name, "rb")
    except (FileNotFoundError, AssetUnreadable):
        raise NotFound(f"the file of asset {asset.sha256[:12]} is missing from storage") from None


# Dataset versions


def dataset_version_get(*, user: User, ref: int | str) -> DatasetVersion:
    """A dataset version by id (or "PROJECT/NAME") in a project whose data `user` may read.

    Versions of other projects do not exist for the caller (NotFound); a member whose role may not
    read data (an annotator) gets Forbidden.
    """
    text = str(ref)
    qs = DatasetVersion.objects.select_related("project")
    if text.isdigit():
        version = qs.filter(pk=int(text)).first()
    elif "/" in text:
        project_ref, _, name = text.partition("/")
        project = project_get(user=user, ref=project_ref)
        version = qs.filter(project=project, name=name).first()
    else:
        version = None
    if version is None:
        raise NotFound(f"dataset {text!r} not found")
    require_read(user=user, project=version.project)
    return version


def dataset_version_list(*, user: User, project: Project, name: str | None = None) -> QuerySet[DatasetVersion]:
    require_read(user=user, project=project)
    qs = DatasetVersion.objects.filter(project=project).select_related("project").order_by("-created_at", "-pk")
    if name:
        qs = qs.filter(name=name)
    return qs


def dataset_gallery(*, version: DatasetVersion, split: str, per_class: int) -> dict[str, list[str]]:
    """Up to `per_class` asset hashes of each class in a split, in shard order."""
    if split not in SPLITS:
        raise ValidationFailed(f"unknown split {split!r}; one of {', '.join(SPLITS)}", fields={"split": "invalid"})
    rows = (
        DatasetItem.objects.filter(version=version, split=split)
        .annotate(rank=Window(RowNumber(), partition_by=[F("label")], order_by=F("position").asc()))
        .filter(rank__lte=per_class)
        .order_by("label_index", "position")
        .values_list("label", "asset__sha256")
    )
    classes: dict[str, list[str]] = {name: [] for name in version.class_names}
    for label, sha in rows:
        classes.setdefault(label, []).append(sha)
    return classes


DIFF_LISTS = ("added", "removed", "relabelled", "moved")


def _diff_sql(sql: str) -> str:
    """Fill in the (quoted) table names of a diff query."""
    quote = connection.ops.quote_name
    return sql.format(item=quote(DatasetItem._meta.db_table), asset=quote(Asset._meta.db_table))


# Items of one version (x) with no item for the same asset in the other version (parameters: x, other).
_DIFF_ONLY_IN = """
    FROM {item} x
    WHERE x.version_id = %s
      AND NOT EXISTS (SELECT 1 FROM {item} o WHERE o.version_id = %s AND o.asset_id = x.asset_id)
"""
# Items of both versions, joined on the asset (parameters: a, b).
_DIFF_BOTH = """
    FROM {item} ia
    INNER JOIN {item} ib ON ib.asset_id = ia.asset_id
    WHERE ia.version_id = %s AND ib.version_id = %s
"""


def _version_brief(version: DatasetVersion) -> dict:
    return {
        "id": version.pk,
        "name": version.name,
        "project": version.project_id,
        "content_hash": version.content_hash,
        "spec": version.spec,
    }


def dataset_version_diff(*, user: User, a: DatasetVersion, b: DatasetVersion, limit: int = 200) -> dict:
    """What changed from version `a` to version `b` of a project, label by label.

    Counted in the database (two anti-joins and one join on the asset), so the work grows with the
    manifests but the number of queries does not: `added` (in b only), `removed` (in a only),
    `relabelled` (same asset, another label), `moved` (same asset and label, another split) and
    `unchanged`; the same per class; up to `limit` items of each kind, by asset hash.
    """
    require_read(user=user, project=a.project)
    if a.project_id != b.project_id:
        raise ValidationFailed(f"datasets {a.pk} and {b.pk} belong to different projects", code="different_projects")
    if limit < 0:
        raise ValidationFailed("limit must be 0 or more", fields={"limit": "invalid"})
    with connection.cursor() as cursor:
        cursor.execute(
            _diff_sql(
                "SELECT ia.label, ib.label, CASE WHEN ia.split = ib.split THEN 1 ELSE 0 END, COUNT(*)"
                + _DIFF_BOTH
                + " GROUP BY ia.label, ib.label, CASE WHEN ia.split = ib.split THEN 1 ELSE 0 END"
            ),
            [a.pk, b.pk],
        )
        pairs = cursor.fetchall()
        cursor.execute(_diff_sql("SELECT x.label, COUNT(*)" + _DIFF_ONLY_IN + " GROUP BY x.label"), [b.pk, a.pk])
        added = dict(cursor.fetchall())
        cursor.execute(_diff_sql("SELECT x.label, COUNT(*)" + _DIFF_ONLY_IN + " GROUP BY x.label"), [a.pk, b.pk])
        removed = dict(cursor.fetchall())

    labels = {*a.class_names, *b.class_names, *added, *removed, *(p[0] for p in pairs), *(p[1] for p in pairs)}
    fields = ("added", "removed", "relabelled_in", "relabelled_out", "moved", "unchanged")
    per_class = {label: dict.fromkeys(fields, 0) for label in labels}
    for label, n in added.items():
        per_class[label]["added"] += n
    for label, n in removed.items():
        per_class[label]["removed"] += n
    relabels: dict[tuple[str, str], int] = {}
    for old, new, same_split, n in pairs:
        if old != new:
            per_class[old]["relabelled_out"] += n
            per_class[new]["relabelled_in"] += n
            relabels[(old, new)] = relabels.get((old, new), 0) + n
        else:
            per_class[old]["unchanged" if same_split else "moved"] += n
    summary = {
        "added": sum(added.values()),
        "removed": sum(removed.values()),
        "relabelled": sum(relabels.values()),
        "moved": sum(c["moved"] for c in per_class.values()),
        "unchanged": sum(c["unchanged"] for c in per_class.values()),
    }
    return {
        "a": _version_brief(a),
        "b": _version_brief(b),
        "summary": summary,
        "spec_changed": _spec_changes(a, b),
        "classes": [{"label": label, **per_class[label]} for label in sorted(labels, key=natural_key)],
        "relabels": [
            {"from": old, "to": new, "count": n}
            for (old, new), n in sorted(relabels.items(), key=lambda kv: (-kv[1], natural_key(kv[0][0])))
        ],
        "limit": limit,
        "items": _with_label_changes(
            a, b, {kind: _diff_items(kind, a, b, limit) if summary[kind] else [] for kind in DIFF_LISTS}
        ),
    }


def _with_label_changes(a: DatasetVersion, b: DatasetVersion, items: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Add to each listed relabelled item who changed its label last between the two versions' creation
    and through what (`changed_by`: actor, via, ref, at; None when no change was logged): one query."""
    relabelled = items.get("relabelled") or []
    if not relabelled:
        return items
    since, until = sorted((a.created_at, b.created_at))
    events = (
        LabelEvent.objects.filter(
            project_asset__project_id=a.project_id,
            project_asset__asset__sha256__in=[i["sha256"] for i in relabelled],
            created_at__gt=since,
            created_at__lte=until,
        )
        .order_by("project_asset_id", "-created_at", "-id")
        .values_list("project_asset__asset__sha256", "actor__username", "via", "ref", "new_label", "created_at")
    )
    latest: dict[str, dict] = {}
    for sha, actor, via, ref, new_label, at in events:
        latest.setdefault(sha, {"actor": actor, "via": via, "ref": ref, "label": new_label, "at": at.isoformat()})
    for item in relabelled:
        item["changed_by"] = latest.get(item["sha256"])
    return items


def dataset_explore(
    *,
    version: DatasetVersion,
    label: str | None = None,
    split: str | None = None,
    finding_kind: str | None = None,
    changed_since: DatasetVersion | None = None,
    after: int | None = None,
    limit: int = 60,
) -> tuple[list[dict], int | None]:
    """A page of a version's items filtered by class, split, kind of open finding on the asset, and
    "label changed since version X" (not in X, or in X with another label); keyset pages by item id.

    Returns the items and the `after` of the next page (None at the end). One query per page.
    """
    if split and split not in SPLITS:
        raise ValidationFailed(f"unknown split {split!r}; one of {', '.join(SPLITS)}", fields={"split": "invalid"})
    if finding_kind and finding_kind not in Finding.Kind.values:
        raise ValidationFailed(f"unknown finding kind {finding_kind!r}", fields={"finding_kind": "invalid"})
    if changed_since is not None and changed_since.project_id != version.project_id:
        raise ValidationFailed("changed_since must be a version of the same project", code="different_projects")
    qs = DatasetItem.objects.filter(version=version)
    if label:
        qs = qs.filter(label=label)
    if split:
        qs = qs.filter(split=split)
    if finding_kind:
        qs = qs.filter(
            Exists(
                Finding.objects.filter(
                    project_id=version.project_id,
                    kind=finding_kind,
                    decision=Finding.Decision.OPEN,
                    project_asset__asset_id=OuterRef("asset_id"),
                )
            )
        )
    if changed_since is not None:
        qs = qs.exclude(
            Exists(
                DatasetItem.objects.filter(
                    version=changed_since, asset_id=OuterRef("asset_id"), label=OuterRef("label")
                )
            )
        )
    if after:
        qs = qs.filter(pk__gt=after)
    rows = list(qs.order_by("pk").values("pk", "asset__sha256", "label", "split")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    page = [{"id": r["pk"], "sha256": r["asset__sha256"], "label": r["label"], "split": r["split"]} for r in rows]
    return page, (rows[-1]["pk"] if more and rows else None)


def _spec_changes(a: DatasetVersion, b: DatasetVersion) -> list[dict]:
    changes = []
    for field, old, new in (
        ("channels", a.channels, b.channels),
        ("size", f"{a.width}x{a.height}", f"{b.width}x{b.height}"),
        ("resize_mode", a.resize_mode, b.resize_mode),
    ):
        if old != new:
            changes.append({"field": field, "a": old, "b": new})
    return changes


def _diff_items(kind: str, a: DatasetVersion, b: DatasetVersion, limit: int) -> list[dict]:
    """Up to `limit` items of one kind of change, by asset hash: one query, streamed."""
    if limit == 0:
        return []
    if kind in ("added", "removed"):
        select = (
            "SELECT s.sha256, x.label, x.split"
            + _DIFF_ONLY_IN.replace("WHERE", "INNER JOIN {asset} s ON s.id = x.asset_id WHERE", 1)
            + " ORDER BY s.sha256 LIMIT %s"
        )
        params = [b.pk, a.pk, limit] if kind == "added" else [a.pk, b.pk, limit]
    else:
        condition = "ia.label <> ib.label" if kind == "relabelled" else "ia.label = ib.label AND ia.split <> ib.split"
        select = (
            "SELECT s.sha256, ia.label, ib.label, ia.split, ib.split"
            + _DIFF_BOTH.replace("WHERE", "INNER JOIN {asset} s ON s.id = ia.asset_id WHERE", 1)
            + f" AND {condition} ORDER BY s.sha256 LIMIT %s"
        )
        params = [a.pk, b.pk, limit]
    with connection.cursor() as cursor:
        cursor.execute(_diff_sql(select), params)
        rows = cursor.fetchall()
    if kind == "added":
        return [
            {"sha256": sha, "old_label": None, "new_label": lab, "old_split": None, "new_split": sp}
            for sha, lab, sp in rows
        ]
    if kind == "removed":
        return [
            {"sha256": sha, "old_label": lab, "new_label": None, "old_split": sp, "new_split": None}
            for sha, lab, sp in rows
        ]
    return [
        {"sha256": sha, "old_label": old, "new_label": new, "old_split": old_split, "new_split": new_split}
        for sha, old, new, old_split, new_split in rows
    ]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_shard_dir(*, version: DatasetVersion) -> Path:
    """A local folder holding the version's npy files and manifest.json.

    On a local storage folder this is the storage's own folder; otherwise the shards are downloaded
    once into CRUCIBLE_CACHE_DIR/shards/<content_hash>/ and checked against the manifest.
    """
    if version.status != DatasetVersion.Status.READY or not version.shard_name:
        raise Conflict(f"dataset {version.name!r} is {version.status}, not ready", code="dataset_not_ready")
    root = storage_root()
    if root is not None:
        return root / version.shard_name
    cache = Path(settings.CRUCIBLE_CACHE_DIR) / "shards" / version.content_hash
    if (cache / ".verified").exists():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.parent / f".download-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        with default_storage.open(f"{version.shard_name}/manifest.json", "rb") as f:
            manifest_bytes = f.read()
        manifest = json.loads(manifest_bytes)
        (tmp / "manifest.json").write_bytes(manifest_bytes)
        for name, info in manifest["files"].items():
            with default_storage.open(f"{version.shard_name}/{name}", "rb") as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if _sha256_file(tmp / name) != info["sha256"]:
                raise Conflict(
                    f"shard file {name} of dataset {version.name!r} does not match its checksum", code="shard_corrupt"
                )
        (tmp / ".verified").touch()
        try:
            os.rename(tmp, cache)
        except OSError:
            if not (cache / ".verified").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def dataset_split_arrays(*, version: DatasetVersion, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's images (N, C, H, W) uint8, memory-mapped read-only, and labels (N,) int64."""
    if split not in SPLITS:
        raise ValidationFailed(f"unknown split {split!r}; one of {', '.join(SPLITS)}", fields={"split": "invalid"})
    folder = dataset_shard_dir(version=version)
    if (folder / f"{split}_x.bin").exists():
        # Large images: encoded shards, an array-like that decodes only the rows it is indexed with.
        shape = (version.channels, version.height, version.width)
        return shards.EncodedImages.open(folder, split, shape=shape), np.load(folder / f"{split}_y.npy")
    x_path, y_path = folder / f"{split}_x.npy", folder / f"{split}_y.npy"
    y = np.load(y_path)
    # An empty array cannot be memory-mapped; it costs nothing to load.
    x = np.load(x_path, mmap_mode="r") if len(y) else np.load(x_path)
    return x, y


def evaluation_set(*, user: User, project: Project) -> list[dict]:
    """The project's evaluation-set members: asset hash and label, by hash."""
    require_read(user=user, project=project)
    rows = ProjectAsset.objects.filter(project=project, evaluation=True).order_by("asset__sha256")
    return [{"sha256": sha, "label": label} for sha, label in rows.values_list("asset__sha256", "label")]


def project_assets_near(*, user: User, project: Project, phash: int, radius: int = 3) -> list[dict]:
    """The project's images whose pHash is within `radius` (0-3) of `phash` (signed or unsigned), closest
    first: one indexed query on the four 16-bit bands (within 3 bits, one band matches exactly)."""
    from curation.hashing import bands, to_unsigned

    require_read(user=user, project=project)
    if not 0 <= radius <= 3:
        raise ValidationFailed("radius must be between 0 and 3", fields={"radius": "0 to 3"})
    b = bands(phash)
    rows = (
        ProjectAsset.objects.filter(project=project)
        .filter(
            Q(asset__phash__band0=b[0])
            | Q(asset__phash__band1=b[1])
            | Q(asset__phash__band2=b[2])
            | Q(asset__phash__band3=b[3])
        )
        .values_list("pk", "asset__sha256", "label", "asset__phash__phash")
    )
    target = to_unsigned(phash)
    found = []
    for pk, sha, label, value in rows:
        distance = (to_unsigned(value) ^ target).bit_count()
        if distance <= radius:
            found.append({"project_asset": pk, "sha256": sha, "label": label, "distance": distance})
    return sorted(found, key=lambda r: (r["distance"], r["sha256"]))
