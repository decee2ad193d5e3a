"""Import sources beyond class folders: manifests, DIGITS text files, URL lists, S3 prefixes, texts from a
CSV column, and COCO / YOLO / Pascal VOC zips.

Each image source lists its files as `_Entry` rows and reads them one at a time, exactly as the zip and
folder sources do, so the same decode / hash / store code imports them all: a second import adds
nothing, and a job that is run again after a crash resumes (rows are unique by content).

What a job needs to read its source is kept as JSON in `ImportJob.source`: `path` (a server file under
CRUCIBLE_IMPORT_ROOTS) or `upload` (a stored upload), and the source's own fields.
"""

from __future__ import annotations

import codecs
import csv
import io
import ipaddress
import json
import logging
import os
import posixpath
import socket
import stat
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import charset_normalizer
import requests
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import DEFAULT_STORAGE_ALIAS, default_storage, storages
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from crucible.core.errors import ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import require_write
from crucible.core.services import audit
from curation import imaging, services
from curation.models import ImportJob
from curation.selectors import storage_root
from curation.services import MAX_FILE_BYTES, _Entry

logger = logging.getLogger(__name__)

Source = ImportJob.Source
# Kinds handled here; zip and folder imports stay in curation.services.
KINDS = (
    Source.MANIFEST,
    Source.DIGITS,
    Source.URLS,
    Source.S3,
    Source.TEXT_CSV,
    Source.COCO,
    Source.YOLO,
    Source.VOC,
)
ANNOTATION_FORMATS = (Source.COCO, Source.YOLO, Source.VOC)
MANIFEST_COLUMNS = ("path", "label")
MAX_LIST_BYTES = 64 * 1024 * 1024  # a manifest, a DIGITS list, a URL list or a text CSV
# A zip member whose real size is far above its compressed size is a decompression bomb; small members
# (below the floor) may compress well for honest reasons (a blank image).
MAX_ZIP_RATIO = 200
ZIP_RATIO_FLOOR = 1024 * 1024
URL_TIMEOUT = (5, 30)  # seconds to connect, seconds between bytes
URL_RETRIES = 3
URL_MAX_REDIRECTS = 5
TEXT_BATCH = 2000


# Reading lists in any encoding


def decode_text(data: bytes) -> tuple[str, str]:
    """The text of a list file and the encoding it was read in.

    UTF-8 (with or without BOM) and UTF-16 with a BOM are read as such; anything else is guessed by
    charset-normalizer, first among the Western single-byte encodings (cp1252, latin-1) that
    spreadsheets write, then among all it knows.
    """
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    else:
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    best = charset_normalizer.from_bytes(data, cp_isolation=["cp1252", "latin_1"]).best()
    if best is None:
        best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise ValidationFailed(
            "the file's text encoding could not be recognised; save it as UTF-8",
            code="unknown_encoding",
            fields={"file": "unknown encoding"},
        )
    return str(best), best.encoding


def _csv_rows(text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The lower-cased column names of a CSV and its non-blank rows as (line, {column: cell})."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip().lower() for c in next(reader, [])]
        rows = [
            (reader.line_num, dict(zip(columns, row, strict=False))) for row in reader if any(c.strip() for c in row)
        ]
    except csv.Error as exc:
        raise ValidationFailed(f"the CSV cannot be read ({exc})", code="invalid_csv") from None
    return columns, rows


def parse_manifest(data: bytes, name: str) -> tuple[list[tuple[int, str, str]], str]:
    """(line, path, label) per entry of a CSV or JSON manifest, and the encoding it was read in."""
    text, encoding = decode_text(data)
    if name.lower().endswith(".json"):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ValidationFailed(f"the manifest is not valid JSON ({exc})", code="invalid_manifest") from None
        if not isinstance(items, list):
            raise ValidationFailed(
                'a JSON manifest is a list of paths or of {"path": ..., "label": ...} objects',
                code="invalid_manifest",
            )
        rows: list[tuple[int, str, str]] = []
        for i, item in enumerate(items, start=1):
            if isinstance(item, str):
                rows.append((i, item, ""))
                continue
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise ValidationFailed(f"manifest entry {i} has no path", code="invalid_manifest")
            unknown = sorted(set(item) - set(MANIFEST_COLUMNS))
            if unknown:
                raise ValidationFailed(
                    f"unknown manifest fields {', '.join(unknown)}; a manifest has the fields path and label",
                    code="manifest_unknown_columns",
                    fields={"file": f"unknown fields: {', '.join(unknown)}"},
                )
            rows.append((i, item["path"], str(item.get("label") or "")))
        return rows, encoding
    columns, raw = _csv_rows(text)
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise ValidationFailed(
            f"unknown manifest columns {', '.join(unknown)}; a manifest has the columns path and label",
            code="manifest_unknown_columns",
            fields={"file": f"unknown columns: {', '.join(unknown)}"},
        )
    if "path" not in columns:
        raise ValidationFailed(
            "the manifest has no path column (its first line names the columns: path,label)",
            code="invalid_manifest",
            fields={"file": "no path column"},
        )
    return [(i, r.get("path", "").strip(), r.get("label", "").strip()) for i, r in raw], encoding


def parse_digits(listing: bytes, labels: bytes) -> tuple[list[tuple[int, str, str]], list[dict]]:
    """DIGITS' `path label_index` lines with the class names of labels.txt: (line, path, label), errors."""
    names = [line.strip() for line in decode_text(labels)[0].splitlines() if line.strip()]
    rows: list[tuple[int, str, str]] = []
    errors: list[dict] = []
    for number, line in enumerate(decode_text(listing)[0].splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            errors.append({"path": f"line {number}", "reason": "not a 'path label_index' line"})
            continue
        index = int(parts[1])
        if not 0 <= index < len(names):
            errors.append(
                {
                    "path": parts[0],
                    "reason": f"label index {index} is out of range (labels.txt has {len(names)} classes)",
                }
            )
            continue
        rows.append((number, parts[0], names[index]))
    return rows, errors


# Starting an import


def _spec(job: ImportJob) -> dict[str, Any]:
    return json.loads(job.source)


def _save_upload(upload: UploadedFile, suffix: str) -> str:
    upload.seek(0)
    return default_storage.save(f"imports/{uuid.uuid4().hex}{suffix}", upload)


def _resolve_file(path: str) -> Path:
    """A file on the server under the import roots (links resolved), or a clear error."""
    resolved = services._resolve_under_roots(path, noun="path")
    if not resolved.is_file():
        raise ValidationFailed(f"{path} is not a file", code="not_a_file", fields={"path": "not a file"})
    if resolved.stat().st_size > MAX_LIST_BYTES:
        raise ValidationFailed(
            f"{path} is larger than {MAX_LIST_BYTES} bytes", code="file_too_large", fields={"path": "too large"}
        )
    return resolved


def _check_upload(upload: UploadedFile, *, zip_required: bool) -> None:
    is_zip = services._upload_is_zip(upload)
    if zip_required and not is_zip:
        raise ValidationFailed(f"{upload.name} is not a zip file", code="not_a_zip", fields={"file": "not a zip"})
    if not zip_required and upload.size is not None and upload.size > MAX_LIST_BYTES:
        raise ValidationFailed(
            f"the list is larger than {MAX_LIST_BYTES} bytes", code="file_too_large", fields={"file": "too large"}
        )


def _parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValidationFailed(
            f"{url!r} is not an s3://bucket/prefix address",
            code="invalid_s3_url",
            fields={"bucket": "s3://bucket/prefix"},
        )
    return parts.netloc, parts.path.lstrip("/")


def import_source_start(
    *,
    project: Project,
    user: User,
    source_kind: str,
    upload: UploadedFile | None = None,
    path: str | None = None,
    urls: list[str] | None = None,
    column: str | None = None,
    label_column: str | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
) -> ImportJob:
    """Check an import from a manifest, a DIGITS list, URLs, an S3 prefix, a text CSV or an annotated zip,
    and queue it on the `ingest` queue.

    `path` names a file on the server (under CRUCIBLE_IMPORT_ROOTS); `upload` a file sent with the request
    (a zip for manifest, digits, coco, yolo and voc; a list or CSV for urls and text_csv). `urls` may
    give the URLs inline; `bucket` and `prefix` the S3 objects (or `path` as s3://bucket/prefix).
    Nothing is created when a check fails.
    """
    require_write(user=user, project=project)
    if source_kind not in KINDS:
        raise ValidationFailed(
            f"unknown source kind {source_kind!r}; one of zip, folder, {', '.join(KINDS)}",
            code="unknown_source_kind",
            fields={"source_kind": "unknown"},
        )
    spec: dict[str, Any] = {}
    label = ""
    pending_upload: tuple[UploadedFile | ContentFile, str] | None = None
    if source_kind == Source.S3:
        if path and not bucket:
            bucket, prefix = _parse_s3_url(path)
        if not bucket:
            raise ValidationFailed("an S3 import needs a bucket", code="bucket_required", fields={"bucket": "required"})
        prefix = (prefix or "").lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        spec = {"bucket": bucket, "prefix": prefix}
        label = f"s3://{bucket}/{prefix}"
    elif source_kind == Source.URLS and urls:
        if upload is not None or path:
            raise ValidationFailed(
                "give the URLs inline, as a file or as a server path, not several",
                code="import_source_required",
                fields={"urls": "one of urls, file or path"},
            )
        bad = [u for u in urls if not isinstance(u, str) or urlsplit(u.strip()).scheme not in ("http", "https")]
        if bad:
            raise ValidationFailed(
                f"only http and https URLs can be imported; {str(bad[0])[:200]!r} is not one",
                code="unsupported_url_scheme",
                fields={"urls": "http or https only"},
            )
        pending_upload = (ContentFile("\n".join(u.strip() for u in urls).encode()), ".txt")
        label = f"{len(urls)} URLs"
    else:
        if (upload is None) == (not path):
            raise ValidationFailed(
                "give either a file or a server path",
                code="import_source_required",
                fields={"file": "one of file or path", "path": "one of file or path"},
            )
        zipped = source_kind in (Source.MANIFEST, Source.DIGITS, *ANNOTATION_FORMATS)
        if upload is not None:
            # A manifest, DIGITS list or annotated set arrives as a zip holding its files.
            _check_upload(upload, zip_required=zipped)
            name = upload.name or "upload"
            pending_upload = (upload, ".zip" if zipped else Path(name).suffix.lower()[:8] or ".txt")
            label = name
            if zipped:
                _check_zip_listing(upload, source_kind)
        else:
            if source_kind in ANNOTATION_FORMATS:
                raise ValidationFailed(
                    f"a {source_kind} import is an uploaded zip of images and annotations",
                    code="import_source_required",
                    fields={"file": "required"},
                )
            resolved = _resolve_file(path or "")
            spec["path"] = str(resolved)
            label = path or ""
            _check_server_list(resolved, source_kind, column=column, label_column=label_column)
    if source_kind == Source.TEXT_CSV:
        if not column:
            raise ValidationFailed(
                "a text CSV import needs the column that holds the texts",
                code="column_required",
                fields={"column": "required"},
            )
        spec.update(column=column, label_column=label_column or "")
        if pending_upload is not None and isinstance(pending_upload[0], UploadedFile):
            _check_text_columns(_read_upload(pending_upload[0]), column=column, label_column=label_column)

    from curation.tasks import import_run as import_run_task

    with transaction.atomic():
        if pending_upload is not None:
            content, suffix = pending_upload
            spec["upload"] = (
                _save_upload(content, suffix)
                if isinstance(content, UploadedFile)
                else default_storage.save(f"imports/{uuid.uuid4().hex}{suffix}", content)
            )
        source = json.dumps(spec)
        if len(source) > 1000:
            raise ValidationFailed("the source description is too long", code="source_too_long")
        job = ImportJob.objects.create(
            project=project, created_by=user, source_kind=source_kind, source=source, source_label=label[:300]
        )
        audit(actor=user, project=project, verb="import.start", target=str(job.pk), source=label, kind=source_kind)
        transaction.on_commit(lambda: import_run_task.delay(job_id=job.pk))
    return job


def _read_upload(upload: UploadedFile) -> bytes:
    upload.seek(0)
    data = upload.read(MAX_LIST_BYTES + 1)
    upload.seek(0)
    return data


def _check_text_columns(data: bytes, *, column: str, label_column: str | None) -> None:
    columns, _rows = _csv_rows(decode_text(data)[0])
    for field, name in (("column", column), ("label_column", label_column)):
        if name and name.strip().lower() not in columns:
            raise ValidationFailed(
                f"the CSV has no column {name!r}; its columns are {', '.join(columns) or 'none'}",
                code="unknown_column",
                fields={field: "not a column of the CSV"},
            )


def _check_server_list(path: Path, kind: str, *, column: str | None, label_column: str | None) -> None:
    data = path.read_bytes()
    if kind == Source.MANIFEST:
        parse_manifest(data, path.name)
    elif kind == Source.DIGITS:
        if not (path.parent / "labels.txt").is_file():
            raise ValidationFailed(
                f"{path.name} needs a labels.txt beside it (one class name per line)",
                code="labels_missing",
                fields={"path": "no labels.txt beside it"},
            )
    elif kind == Source.TEXT_CSV and column:
        _check_text_columns(data, column=column, label_column=label_column)


def _check_zip_listing(upload: UploadedFile, kind: str) -> None:
    try:
        with zipfile.ZipFile(upload) as zf:
            members, _errors = zip_members(zf)
            if kind == Source.MANIFEST:
                name = _find_member(members, (".csv", ".json"), "manifest")
                info = members[name]
                if info.file_size > MAX_LIST_BYTES:
                    raise ValidationFailed("the manifest is too large", code="file_too_large")
                parse_manifest(zf.read(info), name)
            elif kind == Source.DIGITS:
                name = _find_member(members, (".txt",), "train.txt", exclude=("labels.txt",))
                if posixpath.join(posixpath.dirname(name), "labels.txt").lstrip("/") not in members:
                    raise ValidationFailed(
                        f"{name} needs a labels.txt beside it in the zip",
                        code="labels_missing",
                        fields={"file": "no labels.txt"},
                    )
            elif not members:
                raise ValidationFailed(f"{upload.name} has no files", code="empty_zip", fields={"file": "empty"})
    except zipfile.BadZipFile as exc:
        raise ValidationFailed(f"{upload.name} is a damaged zip file ({exc})", code="not_a_zip") from None
    finally:
        upload.seek(0)


# Zips: members by normalised name, unsafe ones reported


def zip_members(zf: zipfile.ZipFile) -> tuple[dict[str, zipfile.ZipInfo], list[dict]]:
    """The zip's files by normalised name; entries that climb out or are links are errors, not files."""
    members: dict[str, zipfile.ZipInfo] = {}
    errors: list[dict] = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = services._zip_entry_parts(info.filename)
        if parts is None:
            errors.append(
                {"path": info.filename[:300], "reason": "zip entry points outside the archive, not extracted"}
            )
            continue
        if not parts or services._is_ignored(parts):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            errors.append({"path": "/".join(parts), "reason": "symbolic link inside the zip, not followed"})
            continue
        members["/".join(parts)] = info
    return members, errors


def _find_member(
    members: dict[str, zipfile.ZipInfo], suffixes: tuple[str, ...], preferred: str, exclude: tuple[str, ...] = ()
) -> str:
    """The list file of a zip: `preferred` (e.g. train.txt) at the shallowest level, else the only one there."""
    candidates = [n for n in members if n.lower().endswith(suffixes) and posixpath.basename(n).lower() not in exclude]
    if not candidates:
        raise ValidationFailed(
            f"the zip holds no {preferred} ({' or '.join(suffixes)})",
            code="list_missing",
            fields={"file": f"no {preferred}"},
        )
    depth = min(n.count("/") for n in candidates)
    shallow = sorted(n for n in candidates if n.count("/") == depth)
    named = [n for n in shallow if posixpath.basename(n).lower().startswith(preferred.split(".")[0])]
    if len(named) == 1:
        return named[0]
    if len(shallow) == 1:
        return shallow[0]
    raise ValidationFailed(
        f"the zip holds several possible lists ({', '.join(shallow[:5])}); keep one at its top level",
        code="ambiguous_list",
        fields={"file": "several lists"},
    )


# Reading a job's source


class _ListedSource(services._Source):
    """Base of the sources of this module: entries from the subclass, labels checked against the schema."""

    def __init__(self, job: ImportJob):
        super().__init__(job)
        self.spec = _spec(job)
        self.upload: str | None = self.spec.get("upload")
        self.notes: list[str] = []

    @contextmanager
    def open(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        with self.listing() as (entries, errors):
            entries, schema_errors = _check_labels(self.job.project_id, entries)
            yield entries, errors + schema_errors

    @contextmanager
    def listing(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        raise NotImplementedError

    @contextmanager
    def open_upload_zip(self) -> Iterator[zipfile.ZipFile]:
        self._fileobj = _open_stored(self.upload or "")
        try:
            self._zip = zipfile.ZipFile(self._fileobj)
            yield self._zip
        except zipfile.BadZipFile as exc:
            raise ValidationFailed(f"the uploaded zip is damaged ({exc})") from None
        finally:
            if self._zip is not None:
                self._zip.close()
            self._fileobj.close()

    def read_list(self) -> bytes:
        if self.upload:
            with _open_stored(self.upload) as f:
                return f.read(MAX_LIST_BYTES + 1)
        return Path(self.spec["path"]).read_bytes()

    def read(self, entry: _Entry) -> bytes:
        if isinstance(entry.key, zipfile.ZipInfo):
            info = entry.key
            if info.file_size > ZIP_RATIO_FLOOR and info.file_size > MAX_ZIP_RATIO * max(1, info.compress_size):
                raise imaging.ImageError(
                    f"declared {info.file_size} bytes from {info.compress_size} compressed: a compression ratio "
                    f"above {MAX_ZIP_RATIO}, not extracted"
                )
        return super().read(entry)

    def finish(self, errors: list[dict]) -> list[str]:
        """Work after the files are stored (box labels); extra parts of the job's message."""
        return self.notes


def _open_stored(name: str):
    root = storage_root(storages[DEFAULT_STORAGE_ALIAS])
    return open(root / name, "rb") if root else default_storage.open(name, "rb")


def _check_labels(project_id: int, entries: list[_Entry]) -> tuple[list[_Entry], list[dict]]:
    """Entries whose label is no class of the project's label schema become errors (when it has classes)."""
    from labeling.models import LabelClass

    classes = set(LabelClass.objects.filter(schema__project_id=project_id).values_list("name", flat=True))
    if not classes:
        return entries, []
    kept, errors = [], []
    for entry in entries:
        if entry.label and entry.label not in classes:
            errors.append({"path": entry.path, "reason": f"label {entry.label!r} is not a class of the project"})
        else:
            kept.append(entry)
    return kept, errors


class _PathListSource(_ListedSource):
    """A list of (line, path, label) resolved against the list's folder on the server or in the zip."""

    def rows(self, data: bytes, read_member, name: str) -> tuple[list[tuple[int, str, str]], list[dict]]:
        raise NotImplementedError

    def list_name(self, members: dict[str, zipfile.ZipInfo]) -> str:
        raise NotImplementedError

    @contextmanager
    def listing(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        if self.upload:
            with self.open_upload_zip() as zf:
                members, errors = zip_members(zf)
                name = self.list_name(members)
                base = posixpath.dirname(name)
                rows, row_errors = self.rows(zf.read(members[name]), lambda n: zf.read(members[n]), name)
                entries = []
                refused = {e["path"] for e in errors}  # reported once, by the zip listing
                for _line, rel, label in rows:
                    key = _zip_path(base, rel)
                    if key in refused or rel in refused:
                        continue
                    if key is None:
                        row_errors.append({"path": rel, "reason": "path leaves the zip, not read"})
                    elif key not in members:
                        row_errors.append({"path": rel, "reason": "file not found in the zip"})
                    else:
                        entries.append(_Entry(label, key, members[key]))
                yield entries, errors + row_errors
        else:
            listing = Path(self.spec["path"])
            roots = services._import_roots()
            if not services._under_roots(listing.resolve(), roots) or not listing.is_file():
                raise ValidationFailed(f"{self.job.source_label} is no longer a file under the import roots")
            base = listing.parent
            rows, row_errors = self.rows(listing.read_bytes(), lambda n: (base / n).read_bytes(), listing.name)
            entries = []
            for _line, rel, label in rows:
                raw = Path(rel)
                target = (raw if raw.is_absolute() else base / raw).resolve()
                if not services._under_roots(target, roots):
                    row_errors.append({"path": rel, "reason": "path leaves the import roots, not read"})
                elif not target.exists():
                    row_errors.append({"path": rel, "reason": "file not found"})
                elif not target.is_file():
                    row_errors.append({"path": rel, "reason": "not a file"})
                else:
                    entries.append(_Entry(label, rel, str(target)))
            yield entries, row_errors


def _zip_path(base: str, rel: str) -> str | None:
    rel = rel.replace("\\", "/")
    if rel.startswith("/") or "\x00" in rel:
        return None
    joined = posixpath.normpath(posixpath.join(base, rel)) if base else posixpath.normpath(rel)
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        return None
    return joined


class ManifestSource(_PathListSource):
    def list_name(self, members: dict[str, zipfile.ZipInfo]) -> str:
        return _find_member(members, (".csv", ".json"), "manifest")

    def rows(self, data: bytes, read_member, name: str) -> tuple[list[tuple[int, str, str]], list[dict]]:
        rows, encoding = parse_manifest(data, name)
        if encoding != "utf-8":
            self.notes.append(f"the manifest was read as {encoding}")
        errors = [{"path": f"line {line}", "reason": "no path"} for line, path, _ in rows if not path]
        return [r for r in rows if r[1]], errors


class DigitsSource(_PathListSource):
    def list_name(self, members: dict[str, zipfile.ZipInfo]) -> str:
        return _find_member(members, (".txt",), "train.txt", exclude=("labels.txt",))

    def rows(self, data: bytes, read_member, name: str) -> tuple[list[tuple[int, str, str]], list[dict]]:
        labels_name = posixpath.join(posixpath.dirname(name), "labels.txt") if self.upload else "labels.txt"
        try:
            labels = read_member(labels_name)
        except (KeyError, OSError):
            raise ValidationFailed(f"{name} needs a labels.txt beside it (one class name per line)") from None
        return parse_digits(data, labels)


class AnnotatedZipSource(_ListedSource):
    """Every image of a COCO, YOLO or VOC zip, unlabelled; the boxes are applied once they are stored."""

    @contextmanager
    def listing(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        with self.open_upload_zip() as zf:
            members, errors = zip_members(zf)
            entries = [
                _Entry("", name, info)
                for name, info in sorted(members.items())
                if posixpath.splitext(name)[1].lower() in imaging.IMAGE_EXTENSIONS
            ]
            yield entries, errors

    def finish(self, errors: list[dict]) -> list[str]:
        return [*self.notes, *apply_annotations(self.job, self.upload or "", errors)]


def apply_annotations(job: ImportJob, upload: str, errors: list[dict]) -> list[str]:
    """Apply the boxes (or labels) of a COCO / YOLO / VOC zip to the images just imported, through
    labeling.imports.labels_import_apply (matched by the source paths the import recorded); its bad
    entries join the job's errors. The parts of the job's message that say what happened."""
    import tempfile

    from labeling import formats
    from labeling.imports import labels_import_apply

    with tempfile.TemporaryDirectory(prefix="crucible-annotations-") as tmp:
        local = Path(tmp) / f"annotations.{'json' if job.source_kind == Source.COCO else 'zip'}"
        with _open_stored(upload) as stored:
            if job.source_kind == Source.COCO:
                try:
                    with zipfile.ZipFile(stored) as zf:
                        members, _errors = zip_members(zf)
                        name = _find_member(members, (".json",), "annotations")
                        if members[name].file_size > MAX_LIST_BYTES:
                            return [f"the boxes were not applied: {name} is larger than {MAX_LIST_BYTES} bytes"]
                        local.write_bytes(zf.read(members[name]))
                except ValidationFailed as exc:
                    return [f"the boxes were not applied: {exc.message}"]
            else:
                with open(local, "wb") as out:
                    for block in iter(lambda: stored.read(1 << 20), b""):
                        out.write(block)
        try:
            outcome = labels_import_apply(project=job.project, user=job.created_by, format=job.source_kind, path=local)
        except formats.FormatError as exc:
            return [f"the boxes were not applied: {exc}"]
    errors.extend({"path": e["entry"], "reason": e["reason"]} for e in outcome.errors)
    parts = [f"{job.source_kind.upper()} labels set on {outcome.labelled} images"]
    if outcome.unmatched:
        parts.append(f"{outcome.unmatched} annotated images not found")
    if outcome.error_count:
        parts.append(f"{outcome.error_count} annotations could not be used")
    return parts


class UrlSource(_ListedSource):
    """http(s) URLs, one per line or a JSON list, or a `url,label` CSV; each fetched when read."""

    def __init__(self, job: ImportJob):
        super().__init__(job)
        self.session = url_session()

    @contextmanager
    def listing(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        rows = parse_url_list(self.read_list())
        entries, errors, seen = [], [], set()
        for url, label in rows:
            if url in seen:
                continue
            seen.add(url)
            scheme = urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                errors.append(
                    {"path": url[:300], "reason": f"{scheme or 'no'} scheme: only http and https are fetched"}
                )
            else:
                entries.append(_Entry(label, url[:1000], url))
        try:
            yield entries, errors
        finally:
            self.session.close()

    def read(self, entry: _Entry) -> bytes:
        return fetch_url(self.session, str(entry.key))


def parse_url_list(data: bytes) -> list[tuple[str, str]]:
    """(url, label) from a JSON list, a `url,label` CSV (with a header naming url) or one URL a line."""
    text, _encoding = decode_text(data)
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError as exc:
            raise ValidationFailed(f"the URL list is not valid JSON ({exc})", code="invalid_url_list") from None
        return [(str(i).strip(), "") for i in items if str(i).strip()]
    first = stripped.splitlines()[0].strip().lower() if stripped else ""
    if first.split(",")[0].strip().strip('"') == "url":
        columns, rows = _csv_rows(stripped)
        unknown = [c for c in columns if c not in ("url", "label")]
        if unknown:
            raise ValidationFailed(
                f"unknown URL list columns {', '.join(unknown)}; the columns are url and label",
                code="manifest_unknown_columns",
            )
        return [(r.get("url", "").strip(), r.get("label", "").strip()) for _i, r in rows if r.get("url", "").strip()]
    return [(line.strip(), "") for line in stripped.splitlines() if line.strip() and not line.startswith("#")]


def url_session() -> requests.Session:
    """A session that retries connection failures and 429/5xx answers (GET only), with back-off."""
    session = requests.Session()
    retry = Retry(
        total=URL_RETRIES,
        connect=URL_RETRIES,
        read=URL_RETRIES,
        status=URL_RETRIES,
        backoff_factor=0.2,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        redirect=0,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _allow_private_urls() -> bool:
    """settings.CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS: off by default, so that a URL import cannot reach the
    server's own network (metadata services, internal APIs)."""
    return bool(settings.CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS)


def _check_host(url: str) -> None:
    """Refuse hosts on private, loopback, link-local or reserved addresses unless the server allows them."""
    if _allow_private_urls():
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        raise imaging.ImageError(f"host {host!r} cannot be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise imaging.ImageError(
                f"host {host!r} is a private address ({address}); not fetched (CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS)"
            )


def fetch_url(session: requests.Session, url: str) -> bytes:
    """The body of an http(s) URL, at most MAX_FILE_BYTES; every redirect is checked like the first URL."""
    for _hop in range(URL_MAX_REDIRECTS + 1):
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise imaging.ImageError("redirected to a URL that is not http or https; not fetched")
        _check_host(url)
        try:
            with session.get(url, timeout=URL_TIMEOUT, stream=True, allow_redirects=False) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("Location", ""))
                    continue
                if response.status_code != 200:
                    raise imaging.ImageError(f"HTTP {response.status_code}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > MAX_FILE_BYTES:
                    raise imaging.ImageError(f"file of {declared} bytes exceeds the limit of {MAX_FILE_BYTES}")
                chunks, size = [], 0
                for chunk in response.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        raise imaging.ImageError(f"more than {MAX_FILE_BYTES} bytes; not fetched further")
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.RequestException as exc:
            raise imaging.ImageError(f"cannot be fetched ({type(exc).__name__})") from None
    raise imaging.ImageError(f"more than {URL_MAX_REDIRECTS} redirects")


def s3_client():
    """A boto3 S3 client: credentials from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE) or the AWS configuration, boto3's usual chain; the endpoint from
    CRUCIBLE_IMPORT_S3_ENDPOINT_URL, else CRUCIBLE_S3_ENDPOINT_URL, for S3-compatible stores."""
    import boto3

    endpoint = settings.CRUCIBLE_IMPORT_S3_ENDPOINT_URL or os.environ.get("CRUCIBLE_S3_ENDPOINT_URL")
    region = os.environ.get("CRUCIBLE_S3_REGION") or None
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region)


class S3Source(_ListedSource):
    """The objects under an S3 prefix; the folder below the prefix is the class, as in a class-folder tree."""

    @contextmanager
    def listing(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        from botocore.exceptions import BotoCoreError, ClientError

        self.client = s3_client()
        bucket, prefix = self.spec["bucket"], self.spec["prefix"]
        items: list[tuple[tuple[str, ...], object]] = []
        errors: list[dict] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    parts = tuple(p for p in key[len(prefix) :].split("/") if p)
                    if not parts or key.endswith("/") or services._is_ignored(parts):
                        continue
                    if obj.get("Size", 0) > MAX_FILE_BYTES:
                        errors.append(
                            {"path": "/".join(parts), "reason": f"file of {obj['Size']} bytes exceeds the limit"}
                        )
                        continue
                    items.append((parts, key))
        except (BotoCoreError, ClientError) as exc:
            raise ValidationFailed(f"s3://{bucket}/{prefix} cannot be listed ({exc})") from None
        entries, layout_errors = services._layout(items)
        yield entries, errors + layout_errors

    def read(self, entry: _Entry) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.spec["bucket"], Key=str(entry.key))
            if response.get("ContentLength", 0) > MAX_FILE_BYTES:
                raise imaging.ImageError(f"file of {response['ContentLength']} bytes exceeds the limit")
            return response["Body"].read(MAX_FILE_BYTES + 1)[: MAX_FILE_BYTES + 1]
        except (BotoCoreError, ClientError) as exc:
            raise imaging.ImageError(f"cannot be read from S3 ({exc})") from None


_SOURCES: dict[str, type[_ListedSource]] = {
    Source.MANIFEST: ManifestSource,
    Source.DIGITS: DigitsSource,
    Source.URLS: UrlSource,
    Source.S3: S3Source,
    Source.COCO: AnnotatedZipSource,
    Source.YOLO: AnnotatedZipSource,
    Source.VOC: AnnotatedZipSource,
}


def source_for(job: ImportJob) -> _ListedSource:
    """The reader of an image import job of one of this module's kinds."""
    return _SOURCES[job.source_kind](job)


# Texts from a CSV column


def import_texts(job: ImportJob) -> None:
    """Import a text CSV job: one text asset per non-empty cell of the column; rerunning adds nothing."""
    from curation.texts import MAX_TEXT_CHARS, text_assets_import

    source = _ListedSource(job)
    text, encoding = decode_text(source.read_list())
    column = source.spec["column"].strip().lower()
    label_column = (source.spec.get("label_column") or "").strip().lower()
    columns, rows = _csv_rows(text)
    for name in (column, label_column):
        if name and name not in columns:
            raise ValidationFailed(f"the CSV has no column {name!r}; its columns are {', '.join(columns) or 'none'}")
    errors: list[dict] = []
    entries: list[_Entry] = []
    for line, row in rows:
        value = row.get(column, "")
        if not value.strip():
            errors.append({"path": f"line {line}", "reason": f"empty {column}"})
        elif len(value) > MAX_TEXT_CHARS:
            errors.append({"path": f"line {line}", "reason": f"{len(value)} characters; at most {MAX_TEXT_CHARS}"})
        elif label_column and len(row.get(label_column, "").strip()) > 200:
            errors.append({"path": f"line {line}", "reason": "a label of more than 200 characters"})
        else:
            entries.append(_Entry(row.get(label_column, "").strip() if label_column else "", f"line {line}", value))
    entries, schema_errors = _check_labels(job.project_id, entries)
    errors.extend(schema_errors)
    total = len(rows)
    processed = total - len(entries)
    stored_errors = errors[: services.MAX_STORED_ERRORS]
    ImportJob.objects.filter(pk=job.pk).update(total=total, processed=processed, errors=stored_errors)
    imported = 0
    for start in range(0, len(entries), TEXT_BATCH):
        batch = entries[start : start + TEXT_BATCH]
        _ids, created = text_assets_import(
            project=job.project,
            user=job.created_by,
            texts=[str(e.key) for e in batch],
            labels=[e.label for e in batch] if label_column else None,
        )
        imported += created
        processed += len(batch)
        ImportJob.objects.filter(pk=job.pk).update(processed=processed)
    # A rerun after a crash finds the texts of finished batches already there: counted as duplicates.
    duplicates = len(entries) - imported
    parts = [f"imported {imported} texts"]
    if duplicates:
        parts.append(f"{duplicates} already in the project")
    if errors:
        parts.append(f"{len(errors)} rows could not be used")
    if encoding != "utf-8":
        parts.append(f"the CSV was read as {encoding}")
    services._finish_import(
        job.pk,
        status=ImportJob.Status.DONE if entries or not rows else ImportJob.Status.FAILED,
        processed=total,
        imported=imported,
        duplicates=duplicates,
        errors=stored_errors,
        message="; ".join(parts),
    )
    if source.upload:
        default_storage.delete(source.upload)
