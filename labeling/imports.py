"""Imports of existing labels onto a project's assets, from a file in one of the formats of
labeling/formats.py (jsonl, csv, folder, coco, yolo, voc), run by the task `labeling.labels_import`.

Matching: an entry names its asset by sha256 when it gives one (a `sha256` field, or a file named by its
sha256 as the exports name them), else by file name: the asset's source path, its base name, or (YOLO and
VOC label files, which are named after their image) its stem. A name shared by several assets of the
project is reported, not guessed.

What goes in: the entry's label in the schema's kind, checked like an annotation
(labeling.results.validate_result). A bad entry (unknown class, box outside the image, malformed row) is
recorded in the job's `errors` (the first MAX_STORED_ERRORS) and the rest goes on; entries naming no
asset are counted in `unmatched`. The whole file is read before anything is written, so a file that
cannot be read (not a zip, not JSON, bad XML) fails the job with nothing applied; then the labels are
set through curation.labels.asset_labels_set in batches of APPLY_BATCH, each in one transaction.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from crucible.core.errors import NotFound, ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import require_read, require_write
from crucible.core.services import audit
from curation.labels import LabelChange, asset_labels_set
from curation.models import LabelEvent, ProjectAsset
from labeling import formats
from labeling.exports import class_names, schema_kind
from labeling.models import LabelImportJob, SchemaKind
from labeling.results import ResultError, validate_result

logger = logging.getLogger(__name__)

MAX_STORED_ERRORS = 1000
APPLY_BATCH = 1000
# How far (in pixels) a box read from a normalised or rounded format may stick out of its image and
# still be taken as touching the border.
_EDGE_SLACK = 0.05

_READERS: dict[str, Callable[[IO[bytes]], Any]] = {
    LabelImportJob.Format.JSONL: formats.read_jsonl,
    LabelImportJob.Format.FOLDER: formats.read_folder,
    LabelImportJob.Format.COCO: formats.read_coco,
    LabelImportJob.Format.YOLO: formats.read_yolo,
    LabelImportJob.Format.VOC: formats.read_voc,
}


@dataclass
class LabelImportOutcome:
    """What an import did: assets whose label changed, entries naming no asset, bad entries."""

    labelled: int = 0
    matched: int = 0
    unmatched: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    note: str = ""

    def error(self, entry: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append({"entry": entry, "reason": reason})


# Starting and reading jobs


def labels_import_start(*, project: Project, user: User, format: str, upload: UploadedFile) -> LabelImportJob:
    """Store the uploaded file and queue its import (engineers and admins)."""
    require_write(user=user, project=project)
    if format not in LabelImportJob.Format.values:
        choices = ", ".join(LabelImportJob.Format.values)
        raise ValidationFailed(
            f"unknown label import format {format!r}; choose one of {choices}",
            code="unknown_format",
            fields={"format": f"one of {choices}"},
        )
    if upload.size is not None and upload.size > settings.CRUCIBLE_MAX_UPLOAD_BYTES:
        raise ValidationFailed(
            f"the upload is {upload.size} bytes; the limit is {settings.CRUCIBLE_MAX_UPLOAD_BYTES}",
            code="upload_too_large",
            fields={"file": "too large"},
        )
    from labeling.tasks import labels_import as labels_import_task

    label = (upload.name or "labels")[:300]
    extension = posixpath.splitext(label)[1].lower()[:10] or ".bin"
    with transaction.atomic():
        source = default_storage.save(f"label-imports/{uuid.uuid4().hex}{extension}", upload)
        job = LabelImportJob.objects.create(
            project=project, created_by=user, format=format, source=source, source_label=label
        )
        audit(actor=user, project=project, verb="labels.import", target=str(job.pk), format=format, source=label)
        transaction.on_commit(lambda: labels_import_task.delay(job_id=job.pk))
    return job


def label_import_job_get(*, user: User, job_id: int) -> LabelImportJob:
    job = LabelImportJob.objects.select_related("project").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"label import {job_id} not found")
    require_read(user=user, project=job.project)
    return job


# Running a job


def labels_import_run(*, job_id: int) -> None:
    """Run a queued import; a finished job is skipped, a running one (an interrupted run) starts over,
    which is safe: setting a label twice to the same value changes nothing."""
    with transaction.atomic():
        job = LabelImportJob.objects.select_for_update().select_related("project").filter(pk=job_id).first()
        if job is None or job.status in (LabelImportJob.Status.DONE, LabelImportJob.Status.FAILED):
            return
        job.status = LabelImportJob.Status.RUNNING
        job.save(update_fields=["status"])
    try:
        with tempfile.NamedTemporaryFile(suffix=posixpath.splitext(job.source)[1]) as local:
            with default_storage.open(job.source, "rb") as stored:
                shutil.copyfileobj(stored, local)
            local.flush()
            outcome = labels_import_apply(
                project=job.project, user=job.created_by, format=job.format, path=local.name, job=job
            )
    except formats.FormatError as exc:
        _fail(job, f"{job.source_label}: {exc}")
        return
    except Exception as exc:
        logger.exception("label import %s failed", job.pk)
        _fail(job, f"the label import failed: {exc}")
        raise
    LabelImportJob.objects.filter(pk=job.pk).update(
        status=LabelImportJob.Status.DONE,
        labelled=outcome.labelled,
        unmatched=outcome.unmatched,
        errors=outcome.errors,
        error=outcome.note,
        finished_at=timezone.now(),
    )
    if default_storage.exists(job.source):  # the upload has served its purpose
        default_storage.delete(job.source)


def _fail(job: LabelImportJob, error: str) -> None:
    error = " ".join(error.split())
    logger.warning("label import %s: %s", job.pk, error)
    LabelImportJob.objects.filter(pk=job.pk).update(
        status=LabelImportJob.Status.FAILED, error=error, finished_at=timezone.now()
    )


def labels_import_apply(
    *,
    project: Project,
    user: User | None,
    format: str,
    path: str | Path,
    job: LabelImportJob | None = None,
) -> LabelImportOutcome:
    """Read the label file at `path` (local) in `format` and set the labels of the project's matching
    assets. For an image import that brought the images of a COCO, YOLO or VOC zip in first: call this
    afterwards with the same file, and the labels land on the assets just imported (matched by sha256 or
    by the source paths the image import recorded).

    Raises formats.FormatError (one line) when the file cannot be read, before anything is written.
    Label events are logged with via "label_import" and ref the job's id (None without a job).
    """
    if format not in LabelImportJob.Format.values:
        raise formats.FormatError(f"unknown label format {format!r}")
    kind = schema_kind(project_id=project.pk)
    classes = class_names(project_id=project.pk)
    outcome = LabelImportOutcome()
    index = _AssetIndex(project)
    wanted: dict[int, LabelChange] = {}
    with open(path, "rb") as fh:
        for entry in _entries(format, fh, outcome):
            if entry.error:
                outcome.error(entry.ref, entry.error)
                continue
            found = index.find(entry)
            if found is None:
                outcome.unmatched += 1
                continue
            if isinstance(found, str):
                outcome.error(entry.ref, found)
                continue
            pk, width, height, item_kind = found
            try:
                result = validate_result(kind, _result(kind, entry, width, height), classes, width, height, item_kind)
            except ResultError as exc:
                outcome.error(entry.ref, f"{exc.message} ({exc.code})")
                continue
            if kind == SchemaKind.SINGLE_LABEL:
                wanted[pk] = LabelChange(project_asset_id=pk, label=result["label"], annotation=None)
            else:
                wanted[pk] = LabelChange(project_asset_id=pk, label="", annotation=result)
    outcome.matched = len(wanted)
    ids = sorted(wanted)
    ref = job.pk if job is not None else None
    for start in range(0, len(ids), APPLY_BATCH):
        batch = [wanted[i] for i in ids[start : start + APPLY_BATCH]]
        outcome.labelled += asset_labels_set(changes=batch, actor=user, via=LabelEvent.Via.LABEL_IMPORT, ref=ref)
        if job is not None:
            LabelImportJob.objects.filter(pk=job.pk).update(labelled=outcome.labelled)
    return outcome


def _entries(format: str, fh: IO[bytes], outcome: LabelImportOutcome) -> Iterator[formats.Entry]:
    if format == LabelImportJob.Format.CSV:
        entries, note = formats.read_csv(fh)
        if note:
            outcome.note = note
        return entries
    return _READERS[format](fh)


def _result(kind: str, entry: formats.Entry, width: int, height: int) -> Any:
    """The entry's labels in the shape of the schema's kind (validated by the caller)."""
    if kind == SchemaKind.BOXES:
        if entry.boxes is None:
            raise ResultError("invalid_result", "the entry has no boxes; the project's schema takes boxes")
        if not isinstance(entry.boxes, list):
            return {"boxes": entry.boxes}
        return {"boxes": [_pixels(box, width, height, entry.normalized) for box in entry.boxes]}
    labels = entry.labels
    if labels is None:
        labels = [entry.label] if entry.label is not None else None
    if kind == SchemaKind.MULTI_LABEL:
        if labels is None:
            raise ResultError("invalid_result", "the entry has no labels")
        return {"labels": sorted(set(labels)) if all(isinstance(x, str) for x in labels) else labels}
    if labels is None or (isinstance(labels, list) and len(labels) != 1):
        count = "no label" if not labels else f"{len(labels)} labels"
        raise ResultError("invalid_result", f"the entry has {count}; a single-label schema takes one")
    return {"label": labels[0]}


def _pixels(box: Any, width: int, height: int, normalized: bool) -> Any:
    """A box in pixels, a hair of slack at the borders clamped (normalised formats round)."""
    if not isinstance(box, dict):
        return box
    try:
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return box
    if normalized:
        x, y, w, h = x * width, y * height, w * width, h * height
    if -_EDGE_SLACK < x < 0:
        w, x = w + x, 0.0
    if -_EDGE_SLACK < y < 0:
        h, y = h + y, 0.0
    if width < x + w < width + _EDGE_SLACK:
        w = width - x
    if height < y + h < height + _EDGE_SLACK:
        h = height - y
    return {"label": box.get("label"), "x": round(x, 4), "y": round(y, 4), "w": round(w, 4), "h": round(h, 4)}


class _AssetIndex:
    """The project's assets by sha256, source path, base name and stem (one pass over the project)."""

    def __init__(self, project: Project):
        self.by_sha: dict[str, tuple] = {}
        self.by_path: dict[str, tuple | None] = {}
        self.by_base: dict[str, tuple | None] = {}
        self.by_stem: dict[str, tuple | None] = {}
        rows = (
            ProjectAsset.objects.filter(project=project)
            .values_list("pk", "source_path", "asset__sha256", "asset__width", "asset__height", "asset__kind")
            .iterator(chunk_size=5000)
        )
        for pk, source_path, sha, width, height, item_kind in rows:
            value = (pk, width, height, item_kind)
            self.by_sha[sha] = value
            if source_path:
                path = source_path.replace("\\", "/")
                base = posixpath.basename(path)
                for table, key in ((self.by_path, path), (self.by_base, base), (self.by_stem, _stem(base))):
                    # None marks a name that several assets share.
                    table[key] = None if key in table and table[key] != value else value

    def find(self, entry: formats.Entry) -> tuple | str | None:
        """(pk, width, height, kind), a reason when the name is ambiguous, or None when nothing matches."""
        if entry.sha256:
            found = self.by_sha.get(entry.sha256)
            if found is not None or not (entry.names or entry.stem_names):
                return found
        for name in entry.names:
            path = name.replace("\\", "/")
            for table, key in ((self.by_path, path), (self.by_base, posixpath.basename(path))):
                if key in table:
                    return table[key] or f"several assets of the project are named {key!r}"
        for name in entry.stem_names:
            if name in self.by_stem:
                return self.by_stem[name] or f"several assets of the project have the file name stem {name!r}"
        return None


def _stem(base: str) -> str:
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base
