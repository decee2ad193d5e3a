"""Exports of a project's labels: JSONL, CSV and an ImageFolder zip, written by a Celery task.

Constant memory whatever the project's size: assets are read in keyset pages of EXPORT_PAGE rows
(`pk > last`, each page streamed with `.iterator(chunk_size=...)`), the annotations of a page in one
more streamed query, and every row goes straight to a temporary local file that is saved through
Django's storage at the end (`exports/<job id>-<project>.<ext>`). Image bytes for the zip come from
curation's readers, a page at a time and pack by pack.

What is exported: the project's labelled assets (ProjectAsset.label, which the queue writes on
submission), each with the annotations submitted for it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from crucible.core.errors import NotFound, ValidationFailed
from crucible.core.models import READ_DATA_ROLES, Project, User
from crucible.core.selectors import require_read, require_role
from crucible.core.services import audit
from curation.models import ProjectAsset
from curation.selectors import AssetUnreadable, assets_read_bytes
from labeling.models import Annotation, ExportJob

logger = logging.getLogger(__name__)

EXPORT_PAGE = 2000
EXTENSIONS = {ExportJob.Format.JSONL: "jsonl", ExportJob.Format.CSV: "csv", ExportJob.Format.FOLDER: "zip"}
CONTENT_TYPES = {
    ExportJob.Format.JSONL: "application/x-ndjson",
    ExportJob.Format.CSV: "text/csv",
    ExportJob.Format.FOLDER: "application/zip",
}
CSV_FIELDS = [
    "sha256",
    "source_path",
    "label",
    "width",
    "height",
    "annotator",
    "annotation_label",
    "time_spent_ms",
    "annotation_created_at",
]
_IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "PPM": "ppm"}
_ASSET_FIELDS = (
    "pk",
    "label",
    "source_path",
    "asset__sha256",
    "asset__width",
    "asset__height",
    "asset__format",
    "asset__storage_name",
    "asset__offset",
    "asset__length",
)


# Starting and reading jobs


def labels_export_start(*, project: Project, user: User, format: str) -> ExportJob:
    """Queue an export of the project's labels (engineers, reviewers, admins; annotators 403)."""
    require_role(user=user, project=project, roles=READ_DATA_ROLES, action="export its labels")
    if format not in ExportJob.Format.values:
        raise ValidationFailed(
            f"unknown export format {format!r}; choose one of {', '.join(ExportJob.Format.values)}",
            code="unknown_format",
            fields={"format": f"one of {', '.join(ExportJob.Format.values)}"},
        )
    from labeling.tasks import labels_export as labels_export_task

    with transaction.atomic():
        job = ExportJob.objects.create(project=project, created_by=user, format=format)
        audit(actor=user, project=project, verb="labels.export", target=str(job.pk), format=format)
        transaction.on_commit(lambda: labels_export_task.delay(job_id=job.pk))
    return job


def export_job_get(*, user: User, job_id: int) -> ExportJob:
    job = ExportJob.objects.select_related("project").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"export {job_id} not found")
    require_read(user=user, project=job.project)  # 404 outside the caller's projects, 403 for annotators
    return job


# Running a job


def labels_export_run(*, job_id: int) -> None:
    """Write the job's file; safe to run twice (a finished job is skipped, a running one starts over)."""
    with transaction.atomic():
        job = ExportJob.objects.select_for_update().select_related("project").filter(pk=job_id).first()
        if job is None or job.status in (ExportJob.Status.DONE, ExportJob.Status.FAILED):
            return
        job.status = ExportJob.Status.RUNNING
        job.rows = 0
        job.save(update_fields=["status", "rows"])
    try:
        name, rows = _write_export(job)
    except AssetUnreadable as exc:
        _fail(job, f"the export failed: the file of project asset {exc.key} cannot be read ({exc.reason})")
        return
    except Exception as exc:
        logger.exception("export %s failed", job.pk)
        _fail(job, f"the export failed: {exc}")
        raise
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE, rows=rows, file_name=name, finished_at=timezone.now()
    )


def _fail(job: ExportJob, error: str) -> None:
    logger.warning("export %s: %s", job.pk, error)
    ExportJob.objects.filter(pk=job.pk).update(status=ExportJob.Status.FAILED, error=error, finished_at=timezone.now())


def _storage_name(job: ExportJob) -> str:
    project = re.sub(r"[^A-Za-z0-9._-]+", "_", job.project.name).strip("._") or str(job.project_id)
    return f"exports/{job.pk}-{project}.{EXTENSIONS[job.format]}"


def _write_export(job: ExportJob) -> tuple[str, int]:
    writer = {
        ExportJob.Format.JSONL: _write_jsonl,
        ExportJob.Format.CSV: _write_csv,
        ExportJob.Format.FOLDER: _write_folder,
    }[job.format]
    with tempfile.TemporaryFile() as tmp:
        rows = writer(job, tmp)
        tmp.seek(0)
        name = _storage_name(job)
        if default_storage.exists(name):  # left by an earlier, interrupted run of this job
            default_storage.delete(name)
        saved = default_storage.save(name, File(tmp, name=name))
    return saved, rows


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _pages(project_id: int) -> Iterator[list[tuple]]:
    """The project's labelled assets in pages of EXPORT_PAGE, in primary-key (keyset) order."""
    last = 0
    while True:
        page = list(
            ProjectAsset.objects.filter(project_id=project_id, pk__gt=last)
            .exclude(label="")
            .order_by("pk")
            .values_list(*_ASSET_FIELDS)[:EXPORT_PAGE]
            .iterator(chunk_size=EXPORT_PAGE)
        )
        if not page:
            return
        yield page
        last = page[-1][0]


def _annotations(project_id: int, first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    """The annotations of the project's assets with first <= pk <= last, by project asset id."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = (
        Annotation.objects.filter(
            item__project_id=project_id, item__project_asset_id__gte=first, item__project_asset_id__lte=last
        )
        .order_by("item__project_asset_id", "pk")
        .values_list("item__project_asset_id", "annotator__username", "result", "time_spent_ms", "created_at")
        .iterator(chunk_size=EXPORT_PAGE)
    )
    for pa_id, annotator, result, time_spent_ms, created_at in rows:
        found[pa_id].append(
            {
                "annotator": annotator,
                "label": result.get("label") if isinstance(result, dict) else None,
                "time_spent_ms": time_spent_ms,
                "created_at": _iso(created_at),
            }
        )
    return found


def _records(job: ExportJob) -> Iterator[tuple[tuple, dict[str, Any]]]:
    """(asset row, record) for every exported asset; the job's `rows` is updated page by page."""
    done = 0
    for page in _pages(job.project_id):
        annotations = _annotations(job.project_id, page[0][0], page[-1][0])
        for row in page:
            pk, label, source_path, sha256, width, height = row[:6]
            yield (
                row,
                {
                    "sha256": sha256,
                    "source_path": source_path,
                    "label": label,
                    "width": width,
                    "height": height,
                    "annotations": annotations.get(pk, []),
                },
            )
        done += len(page)
        ExportJob.objects.filter(pk=job.pk).update(rows=done)


def _write_jsonl(job: ExportJob, out: IO[bytes]) -> int:
    rows = 0
    for _row, record in _records(job):
        out.write(json.dumps(record, ensure_ascii=False).encode())
        out.write(b"\n")
        rows += 1
    return rows


def _write_csv(job: ExportJob, out: IO[bytes]) -> int:
    """One line per annotation (the asset's fields repeated); an asset without annotations has one line."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(CSV_FIELDS)
    rows = 0
    for _row, record in _records(job):
        base = [record[k] for k in ("sha256", "source_path", "label", "width", "height")]
        for a in record["annotations"] or [None]:
            extra = [a["annotator"], a["label"], a["time_spent_ms"], a["created_at"]] if a else ["", "", "", ""]
            writer.writerow(base + extra)
        rows += 1
    text.flush()
    text.detach()  # leave `out` open for the caller
    return rows


def _folder_name(label: str) -> str:
    name = re.sub(r"[/\\\x00]", "_", label).strip()
    return "_" if name in ("", ".", "..") else name


def _write_folder(job: ExportJob, out: IO[bytes]) -> int:
    """A zip in ImageFolder layout, `<label>/<sha256>.<ext>`; images are stored as they are (no recompression)."""
    rows = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        page: list[tuple] = []
        for row, _record in _records(job):
            page.append(row)
            if len(page) >= EXPORT_PAGE:
                rows += _write_images(zf, page)
                page = []
        rows += _write_images(zf, page)
    return rows


def _write_images(zf: zipfile.ZipFile, page: list[tuple]) -> int:
    names = {}
    locations = []
    for pk, label, _source, sha256, _w, _h, fmt, storage_name, offset, length in page:
        names[pk] = f"{_folder_name(label)}/{sha256}.{_IMAGE_EXTENSIONS.get(fmt, 'bin')}"
        locations.append((pk, storage_name, offset, length))
    for pk, data in assets_read_bytes(locations):  # pack by pack, each pack opened once
        zf.writestr(names[pk], data)
    return len(page)
