"""Exports of a project's labels: JSONL, CSV, an ImageFolder zip, COCO, YOLO and Pascal VOC, written by a
Celery task.

Constant memory whatever the project's size: assets are read in keyset pages of EXPORT_PAGE rows
(`pk > last`, each page streamed with `.iterator(chunk_size=...)`), the annotations of a page in one
more streamed query, and every row goes straight to a temporary local file that is saved through
Django's storage at the end (`exports/<job id>-<project>.<ext>`). Image bytes for the zip come from
curation's readers, a page at a time and pack by pack.

What is exported: the project's labelled assets (ProjectAsset.label for single-label schemas,
ProjectAsset.annotation for multi-label and box schemas), each with the annotations submitted for it.
The file layouts live in labeling/formats.py. Which formats fit which schema kind (FORMAT_KINDS):
- jsonl, csv, coco: every kind (csv: a `labels` column holding a JSON list for multi-label; one line per
  box for boxes);
- folder: single-label only (one class folder per image);
- yolo, voc: boxes only (both are detection formats); the zips hold the images too.
Another pairing is refused when the export is asked for (400 `format_unsupported`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from crucible.core.errors import NotFound, ValidationFailed
from crucible.core.models import READ_DATA_ROLES, Project, User
from crucible.core.selectors import require_read, require_role
from crucible.core.services import audit
from curation.models import ProjectAsset
from curation.selectors import AssetUnreadable, assets_read_bytes
from labeling import formats
from labeling.models import Annotation, ExportJob, LabelClass, LabelSchema, SchemaKind

logger = logging.getLogger(__name__)

EXPORT_PAGE = 2000
EXTENSIONS = {
    ExportJob.Format.JSONL: "jsonl",
    ExportJob.Format.CSV: "csv",
    ExportJob.Format.FOLDER: "zip",
    ExportJob.Format.COCO: "json",
    ExportJob.Format.YOLO: "zip",
    ExportJob.Format.VOC: "zip",
}
CONTENT_TYPES = {
    ExportJob.Format.JSONL: "application/x-ndjson",
    ExportJob.Format.CSV: "text/csv",
    ExportJob.Format.FOLDER: "application/zip",
    ExportJob.Format.COCO: "application/json",
    ExportJob.Format.YOLO: "application/zip",
    ExportJob.Format.VOC: "application/zip",
}
_ALL_KINDS = frozenset(SchemaKind.values)
FORMAT_KINDS = {
    ExportJob.Format.JSONL: _ALL_KINDS,
    ExportJob.Format.CSV: _ALL_KINDS,
    ExportJob.Format.COCO: _ALL_KINDS,
    ExportJob.Format.FOLDER: frozenset({SchemaKind.SINGLE_LABEL}),
    ExportJob.Format.YOLO: frozenset({SchemaKind.BOXES}),
    ExportJob.Format.VOC: frozenset({SchemaKind.BOXES}),
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
_IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "PPM": "ppm", "TEXT": "txt"}
_DEPTHS = {"L": 1, "1": 1, "I": 1, "F": 1, "I;16": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
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
    "annotation",
    "asset__mode",
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
    kind = schema_kind(project_id=project.pk)
    if kind not in FORMAT_KINDS[format]:
        fits = ", ".join(f for f, kinds in FORMAT_KINDS.items() if kind in kinds)
        raise ValidationFailed(
            f"a {format} export does not fit a {kind} schema; choose one of {fits}",
            code="format_unsupported",
            fields={"format": f"one of {fits}"},
        )
    from labeling.tasks import labels_export as labels_export_task

    with transaction.atomic():
        job = ExportJob.objects.create(project=project, created_by=user, format=format)
        audit(actor=user, project=project, verb="labels.export", target=str(job.pk), format=format)
        transaction.on_commit(lambda: labels_export_task.delay(job_id=job.pk))
    return job


def schema_kind(*, project_id: int) -> str:
    """The kind of the project's label schema (single-label when it has none yet)."""
    kind = LabelSchema.objects.filter(project_id=project_id).values_list("kind", flat=True).first()
    return kind or SchemaKind.SINGLE_LABEL


def class_names(*, project_id: int) -> list[str]:
    """The project's classes in schema order."""
    return list(
        LabelClass.objects.filter(schema__project_id=project_id).order_by("position").values_list("name", flat=True)
    )


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
        ExportJob.Format.COCO: _write_coco,
        ExportJob.Format.YOLO: _write_yolo,
        ExportJob.Format.VOC: _write_voc,
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
    labelled = ~Q(label="") | Q(annotation__isnull=False)
    while True:
        page = list(
            ProjectAsset.objects.filter(labelled, project_id=project_id, pk__gt=last)
            .order_by("pk")
            .values_list(*_ASSET_FIELDS)[:EXPORT_PAGE]
            .iterator(chunk_size=EXPORT_PAGE)
        )
        if not page:
            return
        yield page
        last = page[-1][0]


def _annotations(project_id: int, first: int, last: int, kind: str) -> dict[int, list[dict[str, Any]]]:
    """The annotations of the project's assets with first <= pk <= last, by project asset id."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = (
        # Answers to gold items test annotators, and undone answers were taken back: neither is a label.
        Annotation.objects.filter(
            item__project_id=project_id,
            item__project_asset_id__gte=first,
            item__project_asset_id__lte=last,
            is_gold=False,
        )
        .exclude(status=Annotation.Status.WITHDRAWN)
        .order_by("item__project_asset_id", "pk")
        .values_list("item__project_asset_id", "annotator__username", "result", "time_spent_ms", "created_at")
        .iterator(chunk_size=EXPORT_PAGE)
    )
    for pa_id, annotator, result, time_spent_ms, created_at in rows:
        body: dict[str, Any] = {"annotator": annotator}
        if kind == SchemaKind.SINGLE_LABEL:
            body["label"] = result.get("label") if isinstance(result, dict) else None
        else:
            body["result"] = result
        body.update(time_spent_ms=time_spent_ms, created_at=_iso(created_at))
        found[pa_id].append(body)
    return found


def _decided(kind: str, label: str, annotation: Any) -> dict[str, Any]:
    """The asset's decided label in the record's shape: {"label"}, {"labels"} or {"boxes"}."""
    if kind == SchemaKind.SINGLE_LABEL:
        return {"label": label}
    key = "labels" if kind == SchemaKind.MULTI_LABEL else "boxes"
    value = annotation.get(key) if isinstance(annotation, dict) else None
    return {key: value if isinstance(value, list) else []}


def _records(job: ExportJob, kind: str, *, with_annotations: bool = True) -> Iterator[tuple[tuple, dict[str, Any]]]:
    """(asset row, record) for every exported asset; the job's `rows` is updated page by page."""
    done = 0
    for page in _pages(job.project_id):
        annotations = _annotations(job.project_id, page[0][0], page[-1][0], kind) if with_annotations else {}
        for row in page:
            pk, label, source_path, sha256, width, height = row[:6]
            record: dict[str, Any] = {"sha256": sha256, "source_path": source_path}
            record.update(_decided(kind, label, row[10]))
            record.update(width=width, height=height, annotations=annotations.get(pk, []))
            yield row, record
        done += len(page)
        ExportJob.objects.filter(pk=job.pk).update(rows=done)


def _write_jsonl(job: ExportJob, out: IO[bytes]) -> int:
    rows = 0
    for _row, record in _records(job, schema_kind(project_id=job.project_id)):
        out.write(json.dumps(record, ensure_ascii=False).encode())
        out.write(b"\n")
        rows += 1
    return rows


def _write_csv(job: ExportJob, out: IO[bytes]) -> int:
    """One line per annotation (the asset's fields repeated); an asset without annotations has one line.
    Multi-label: `labels` (a JSON list) instead of `label`, and the annotation's labels as a JSON list.
    Boxes: one line per box (CSV_BOX_FIELDS); an asset without boxes has one line with them empty."""
    kind = schema_kind(project_id=job.project_id)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    rows = 0
    if kind == SchemaKind.BOXES:
        writer.writerow(formats.CSV_BOX_FIELDS)
        for _row, record in _records(job, kind, with_annotations=False):
            base = [record[k] for k in ("sha256", "source_path", "width", "height")]
            for box in record["boxes"] or [None]:
                writer.writerow(base + ([box[k] for k in ("label", "x", "y", "w", "h")] if box else [""] * 5))
            rows += 1
    else:
        multi = kind == SchemaKind.MULTI_LABEL
        writer.writerow([("labels" if multi and f == "label" else f) for f in CSV_FIELDS])
        for _row, record in _records(job, kind):
            decided = json.dumps(record["labels"], ensure_ascii=False) if multi else record["label"]
            base = [record["sha256"], record["source_path"], decided, record["width"], record["height"]]
            for a in record["annotations"] or [None]:
                if a is None:
                    extra = ["", "", "", ""]
                else:
                    given = json.dumps(a["result"].get("labels"), ensure_ascii=False) if multi else a["label"]
                    extra = [a["annotator"], given, a["time_spent_ms"], a["created_at"]]
                writer.writerow(base + extra)
            rows += 1
    text.flush()
    text.detach()  # leave `out` open for the caller
    return rows


def _folder_name(label: str) -> str:
    name = re.sub(r"[/\\\x00]", "_", label).strip()
    return "_" if name in ("", ".", "..") else name


def _image_name(row: tuple) -> str:
    """An image's file name in the zips: its sha256 (unique, and what imports match first)."""
    return f"{row[3]}.{_IMAGE_EXTENSIONS.get(row[6], 'bin')}"


def _write_folder(job: ExportJob, out: IO[bytes]) -> int:
    """A zip in ImageFolder layout, `<label>/<sha256>.<ext>`; images are stored as they are (no recompression)."""
    rows = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        page: list[tuple] = []
        for row, _record in _records(job, SchemaKind.SINGLE_LABEL, with_annotations=False):
            page.append(row)
            if len(page) >= EXPORT_PAGE:
                rows += _write_images(zf, page, lambda r: f"{_folder_name(r[1])}/{_image_name(r)}")
                page = []
        rows += _write_images(zf, page, lambda r: f"{_folder_name(r[1])}/{_image_name(r)}")
    return rows


def _write_images(zf: zipfile.ZipFile, page: list[tuple], name_of: Any) -> int:
    names = {}
    locations = []
    for row in page:
        pk, storage_name, offset, length = row[0], row[7], row[8], row[9]
        names[pk] = name_of(row)
        locations.append((pk, storage_name, offset, length))
    for pk, data in assets_read_bytes(locations):  # pack by pack, each pack opened once
        zf.writestr(names[pk], data)
    return len(page)


def _write_coco(job: ExportJob, out: IO[bytes]) -> int:
    """A COCO instances JSON (labelling/formats.py): boxes as bbox annotations, classification labels as
    image-level annotations without a bbox. `file_name` is the asset's source path (else its sha256 name)."""
    kind = schema_kind(project_id=job.project_id)
    info = {"description": f"labels of project {job.project.name}", "schema_kind": kind, "export_job": job.pk}
    writer = formats.CocoWriter(out, class_names(project_id=job.project_id), info=info)
    rows = 0
    for row, record in _records(job, kind, with_annotations=False):
        if kind == SchemaKind.SINGLE_LABEL:
            labels, boxes = [record["label"]], []
        elif kind == SchemaKind.MULTI_LABEL:
            labels, boxes = record["labels"], []
        else:
            labels, boxes = [], record["boxes"]
        writer.add(
            file_name=record["source_path"] or _image_name(row),
            width=record["width"],
            height=record["height"],
            sha256=record["sha256"],
            labels=labels,
            boxes=boxes,
        )
        rows += 1
    writer.close()
    return rows


def _write_box_zip(job: ExportJob, out: IO[bytes], *, yolo: bool) -> int:
    """YOLO (`images/`, `labels/`, classes.txt, data.yaml) or VOC (`JPEGImages/`, `Annotations/`,
    ImageSets/Main/default.txt); files are named by the image's sha256."""
    names = class_names(project_id=job.project_id)
    index = {name: i for i, name in enumerate(names)}
    rows = 0
    with (
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf,
        tempfile.TemporaryFile() as stems,
    ):
        page: list[tuple] = []

        def flush() -> int:
            folder = "images" if yolo else "JPEGImages"
            return _write_images(zf, page, lambda r: f"{folder}/{_image_name(r)}")

        for row, record in _records(job, SchemaKind.BOXES, with_annotations=False):
            sha, width, height = record["sha256"], record["width"], record["height"]
            boxes = record["boxes"]
            if yolo:
                for box in boxes:  # a class no longer in the schema still gets an index
                    index.setdefault(box["label"], len(index))
                zf.writestr(f"labels/{sha}.txt", formats.yolo_lines(boxes, width, height, index))
            else:
                body = formats.voc_xml(
                    filename=_image_name(row), width=width, height=height, depth=_DEPTHS.get(row[11], 3), boxes=boxes
                )
                zf.writestr(f"Annotations/{sha}.xml", body)
                stems.write(f"{sha}\n".encode())
            page.append(row)
            if len(page) >= EXPORT_PAGE:
                rows += flush()
                page = []
        rows += flush()
        if yolo:
            for name, text in formats.yolo_class_files(sorted(index, key=index.__getitem__)).items():
                zf.writestr(name, text)
        else:
            stems.seek(0)
            with zf.open("ImageSets/Main/default.txt", "w", force_zip64=True) as member:
                shutil.copyfileobj(stems, member)
    return rows


def _write_yolo(job: ExportJob, out: IO[bytes]) -> int:
    return _write_box_zip(job, out, yolo=True)


def _write_voc(job: ExportJob, out: IO[bytes]) -> int:
    return _write_box_zip(job, out, yolo=False)
