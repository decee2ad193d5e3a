"""Writes of curation: imports of class folders, dataset versions and their training shards."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import uuid
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import DEFAULT_STORAGE_ALIAS, Storage, default_storage, storages
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crucible.core.errors import Conflict, ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import require_write
from crucible.core.services import audit
from curation import imaging, shards
from curation.models import Asset, DatasetItem, DatasetVersion, ImportJob, ProjectAsset
from curation.selectors import SPLITS, AssetUnreadable, assets_read_bytes, natural_key, storage_root

logger = logging.getLogger(__name__)

IMPORT_BATCH = 2000  # files per database transaction and progress update (SQLite: 8 x 2000 parameters)
MAX_FILE_BYTES = 256 * 1024 * 1024  # one image file; larger ones are reported, not read
MAX_STORED_ERRORS = 1000  # beyond this the job keeps a count in its message
PACK_MAX_BYTES = 64 * 1024 * 1024  # one pack file; a batch with more small assets than this writes several
_IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_ASSET_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "PPM": ".ppm"}


def asset_storage_name(sha256: str, fmt: str) -> str:
    """Where an asset's file is stored, by content.

    One level of 256 folders: a second level (65,536 folders) made an import of 60,000 files create
    about 40,000 folders besides the files, each an inode and a block. Assets stored under the older
    two-level names keep them (the row records the name).
    """
    return f"assets/{sha256[:2]}/{sha256}{_ASSET_EXTENSIONS.get(fmt, '.bin')}"


def pack_max_asset_bytes() -> int:
    """Assets of at most this many bytes are stored in packs; larger ones in a file each (0: no packs)."""
    return settings.CRUCIBLE_PACK_MAX_ASSET_BYTES


def _umask() -> int:
    """The process umask, read without changing it (Linux); otherwise assume the strictest."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o777


class AssetWriter:
    """Stores asset files and packs once by name.

    On a local folder it writes directly (an asset's file create-exclusive, so an existing file is
    never renamed or rewritten; a pack under a temporary name, then renamed, so a pack's name never
    shows a half-written file); on other storage through the storage API, skipping names that exist.
    Rows are inserted only after their file or pack is written. Nothing is fsynced (as before packs):
    an operating-system crash may lose a recently written pack whose rows were committed.
    """

    def __init__(self, storage: Storage | None = None):
        # The storage itself, not default_storage: that lazy wrapper is empty until first used, and
        # storage_root() would then see no local folder (every file through storage.save).
        self.storage = storage or storages[DEFAULT_STORAGE_ALIAS]
        root = storage_root(self.storage)
        self.root = str(root) if root is not None else None
        mode = getattr(getattr(self.storage, "_wrapped", self.storage), "file_permissions_mode", None)
        # The storage's permissions, set at creation; a chmod only where the umask would strip bits.
        self._create_mode = mode if mode is not None else 0o666
        self._chmod = mode is not None and (mode & ~_umask()) != mode

    def write(self, name: str, data: bytes) -> str:
        """Store one asset's bytes under `name`; the name it is stored under."""
        if self.root is None:
            if not self.storage.exists(name):
                return self.storage.save(name, ContentFile(data))
            return name
        # Plain strings and bare system calls: this runs once per imported file.
        path = f"{self.root}/{name}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(path, flags, self._create_mode)
        except FileExistsError:
            return name  # same name, same bytes
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, flags, self._create_mode)
            except FileExistsError:
                return name
        self._fill(fd, path, data)
        return name

    def write_pack(self, data: bytes) -> str:
        """Store the bytes of many assets, one after another, as `packs/<sha256 of data>.pack`."""
        name = f"packs/{hashlib.sha256(data).hexdigest()}.pack"
        if self.root is None:
            if not self.storage.exists(name):
                return self.storage.save(name, ContentFile(data))
            return name
        path = f"{self.root}/{name}"
        if os.path.exists(path):
            return name  # same name, same bytes
        tmp = f"{self.root}/packs/.tmp-{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, self._create_mode)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            fd = os.open(tmp, flags, self._create_mode)
        self._fill(fd, tmp, data)
        os.replace(tmp, path)  # a concurrent writer of the same pack wrote the same bytes
        return name

    def _fill(self, fd: int, path: str, data: bytes) -> None:
        """Write all of `data` to a new file and close it; on failure the file is removed."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        if self._chmod:
            os.chmod(path, self._create_mode)


# Imports: layout of a class-folder tree


def _is_ignored(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in _IGNORED_NAMES for p in parts)


def _zip_entry_parts(name: str) -> tuple[str, ...] | None:
    """The entry's path parts, or None when it would climb out of the extraction folder."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        return None
    return parts


def _strip_wrappers(paths: list[tuple[str, ...]]) -> int:
    """How many leading folders all files share above the class folders (a zip of "train_small/")."""
    depth = 0
    while paths and all(len(p) >= depth + 3 for p in paths) and len({p[depth] for p in paths}) == 1:
        depth += 1
    return depth


@dataclass(slots=True)
class _Entry:
    label: str
    path: str  # as shown to the user, relative to the import root
    key: object  # how the source reads it: a ZipInfo or an absolute Path


def _layout(items: list[tuple[tuple[str, ...], object]]) -> tuple[list[_Entry], list[dict]]:
    """Class folders from relative paths: the first folder under the root is the class.

    `items` have no ignored names (hidden files, __MACOSX, ...): the listings leave them out.
    """
    depth = _strip_wrappers([parts for parts, _ in items])
    entries: list[_Entry] = []
    errors: list[dict] = []
    extensions = imaging.IMAGE_EXTENSIONS
    for parts, key in items:  # once per file: kept plain
        rel = "/".join(parts)
        name = parts[-1]
        dot = name.rfind(".")
        extension = name[dot:].lower() if dot > 0 else ""  # as os.path.splitext: a leading dot is no extension
        if len(parts) - depth < 2:
            errors.append({"path": rel, "reason": "not inside a class folder"})
        elif extension not in extensions:
            errors.append({"path": rel, "reason": f"not an image file ({extension or 'no extension'})"})
        else:
            entries.append(_Entry(parts[depth], rel, key))
    entries.sort(key=attrgetter("path"))  # a stable order: the first of two equal files is the one kept
    errors.sort(key=lambda e: e["path"])
    return entries, errors


def _require_classes(entries: list[_Entry]) -> None:
    classes = {e.label for e in entries}
    if len(classes) < 2:
        found = f"only {sorted(classes)[0]!r}" if classes else "none"
        raise ValidationFailed(
            f"an import needs at least two class folders with images (the folder name is the class); found {found}",
            code="too_few_classes",
        )


def _zip_items(zf: zipfile.ZipFile) -> list[tuple[tuple[str, ...], object]]:
    items = []
    for info in zf.infolist():
        parts = _zip_entry_parts(info.filename)
        if parts is None:
            raise ValidationFailed(
                f"the zip entry {info.filename!r} points outside the archive",
                code="unsafe_zip_entry",
                fields={"file": "unsafe entry"},
            )
        if not info.is_dir() and parts and not _is_ignored(parts):
            items.append((parts, info))
    return items


def _import_roots() -> list[Path]:
    return [Path(r).resolve() for r in settings.CRUCIBLE_IMPORT_ROOTS]


def _under_roots(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _folder_items(root: Path, roots: list[Path]) -> tuple[list[tuple[tuple[str, ...], object]], list[dict]]:
    """Every file below `root`, without following links to folders; links out of the roots are reported."""
    items: list[tuple[tuple[str, ...], object]] = []
    errors: list[dict] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(str(root), ())]
    while stack:  # os.scandir knows file types and links from the listing, without a stat per file
        folder, rel = stack.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                name = entry.name
                if name[0] == "." or name in _IGNORED_NAMES:  # the folders above were checked already
                    continue
                parts = (*rel, name)
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not _under_roots(target, roots):
                        errors.append(
                            {"path": "/".join(parts), "reason": "symbolic link leaving the import roots, not followed"}
                        )
                    elif target.is_dir():
                        errors.append({"path": "/".join(parts), "reason": "symbolic link to a folder, not followed"})
                    else:
                        items.append((parts, str(target)))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, parts))
                elif entry.is_file(follow_symlinks=False):
                    items.append((parts, entry.path))
    return items, errors


def _resolve_under_roots(path: str, *, noun: str) -> Path:
    """`path` with links resolved when it is absolute, under the import roots and there; else a clear
    error (`noun`, "folder" or "path", names what was asked for)."""
    roots = _import_roots()
    raw = Path(path).expanduser()
    if not raw.is_absolute():
        raise ValidationFailed(
            f"the {noun} must be an absolute path on the server",
            code="path_not_absolute",
            fields={"path": "not absolute"},
        )
    resolved = raw.resolve()
    if not _under_roots(resolved, roots):
        raise ValidationFailed(
            f"{path} is outside the folders that imports may read ({', '.join(str(r) for r in roots)})",
            code="path_outside_roots",
            fields={"path": "outside the import roots"},
        )
    if not resolved.exists():
        raise ValidationFailed(f"{path} does not exist", code="path_not_found", fields={"path": "not found"})
    return resolved


def _upload_is_zip(upload: UploadedFile) -> bool:
    """Whether an upload within the size limit is a zip file (one over it is refused); leaves it at its start."""
    if upload.size is not None and upload.size > settings.CRUCIBLE_MAX_UPLOAD_BYTES:
        raise ValidationFailed(
            f"the upload is {upload.size} bytes; the limit is {settings.CRUCIBLE_MAX_UPLOAD_BYTES}",
            code="upload_too_large",
            fields={"file": "too large"},
        )
    upload.seek(0)
    is_zip = zipfile.is_zipfile(upload)
    upload.seek(0)
    return is_zip


def _resolve_folder(path: str) -> Path:
    resolved = _resolve_under_roots(path, noun="folder")
    if not resolved.is_dir():
        raise ValidationFailed(f"{path} is not a folder", code="not_a_folder", fields={"path": "not a folder"})
    return resolved


def _folder_has_two_classes(root: Path) -> None:
    """Cheap check before a job exists: at least two class folders each holding an image file."""
    level = root
    while True:  # step into lone wrapper folders, as zips are read
        subdirs = sorted(p for p in level.iterdir() if p.is_dir() and not p.is_symlink() and not _is_ignored((p.name,)))
        files = [p for p in level.iterdir() if p.is_file() and not _is_ignored((p.name,))]
        if len(subdirs) == 1 and not files:
            level = subdirs[0]
            continue
        break
    classes = []
    for sub in subdirs:
        for _folder, dirnames, filenames in os.walk(sub):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if any(Path(f).suffix.lower() in imaging.IMAGE_EXTENSIONS and not f.startswith(".") for f in filenames):
                classes.append(sub.name)
                break
        if len(classes) >= 2:
            return
    _require_classes([_Entry(label=c, path="", key=None) for c in classes])


def import_start(
    *, project: Project, user: User, upload: UploadedFile | None = None, path: str | None = None
) -> ImportJob:
    """Check an import (an uploaded zip or a server folder of class subfolders) and queue it.

    Everything that can be checked without reading the images is checked here, before anything is
    created; the images themselves are decoded by the `curation.import_run` task.
    """
    require_write(user=user, project=project)
    if (upload is None) == (path is None or path == ""):
        raise ValidationFailed(
            "give either a zip file or a server folder path",
            code="import_source_required",
            fields={"file": "one of file or path", "path": "one of file or path"},
        )
    if upload is not None:
        if not _upload_is_zip(upload):
            raise ValidationFailed(f"{upload.name} is not a zip file", code="not_a_zip", fields={"file": "not a zip"})
        try:
            with zipfile.ZipFile(upload) as zf:
                items = _zip_items(zf)
        except zipfile.BadZipFile as exc:
            raise ValidationFailed(
                f"{upload.name} is a damaged zip file ({exc})", code="not_a_zip", fields={"file": "damaged zip"}
            )
        if not items:
            raise ValidationFailed(f"{upload.name} has no files", code="empty_zip", fields={"file": "empty"})
        entries, _ = _layout(items)
        _require_classes(entries)
        upload.seek(0)
        kind, label = ImportJob.Source.ZIP, upload.name or "upload.zip"
    else:
        folder = _resolve_folder(path or "")
        _folder_has_two_classes(folder)
        kind, label = ImportJob.Source.FOLDER, path or ""

    from curation.tasks import import_run as import_run_task

    with transaction.atomic():
        if kind == ImportJob.Source.ZIP:
            source = default_storage.save(f"imports/{uuid.uuid4().hex}.zip", upload)
        else:
            source = str(folder)
        job = ImportJob.objects.create(
            project=project, created_by=user, source_kind=kind, source=source, source_label=label[:300]
        )
        audit(actor=user, project=project, verb="import.start", target=str(job.pk), source=label)
        transaction.on_commit(lambda: import_run_task.delay(job_id=job.pk))
    return job


# Imports: the worker side


class _Source:
    """The files of a job's source, read one at a time."""

    def __init__(self, job: ImportJob):
        self.job = job
        self._zip: zipfile.ZipFile | None = None
        self._fileobj = None

    @contextmanager
    def open(self) -> Iterator[tuple[list[_Entry], list[dict]]]:
        if self.job.source_kind == ImportJob.Source.ZIP:
            root = storage_root(storages[DEFAULT_STORAGE_ALIAS])
            self._fileobj = open(root / self.job.source, "rb") if root else default_storage.open(self.job.source, "rb")  # noqa: SIM115
            try:
                self._zip = zipfile.ZipFile(self._fileobj)
                yield _layout(_zip_items(self._zip))
            finally:
                if self._zip is not None:
                    self._zip.close()
                self._fileobj.close()
        else:
            roots = _import_roots()
            folder = Path(self.job.source)
            if not _under_roots(folder.resolve(), roots) or not folder.is_dir():
                raise ValidationFailed(f"{self.job.source_label} is no longer a folder under the import roots")
            items, link_errors = _folder_items(folder, roots)
            entries, errors = _layout(items)
            yield entries, link_errors + errors

    def read(self, entry: _Entry) -> bytes:
        if self._zip is not None:
            info: zipfile.ZipInfo = entry.key  # type: ignore[assignment]
            if info.file_size > MAX_FILE_BYTES:
                raise imaging.ImageError(f"file of {info.file_size} bytes exceeds the limit of {MAX_FILE_BYTES}")
            try:
                with self._zip.open(info) as f:
                    data = f.read()  # bounded: a zip member yields no more than its recorded size
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                raise imaging.ImageError(f"cannot be extracted ({exc})") from None
        else:
            path: str = entry.key  # type: ignore[assignment]
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size > MAX_FILE_BYTES:
                        raise imaging.ImageError(f"file of {size} bytes exceeds the limit of {MAX_FILE_BYTES}")
                    # read() sizes its buffer from the file; read(LIMIT) would allocate LIMIT bytes each time.
                    data = f.read()
            except OSError as exc:
                raise imaging.ImageError(f"cannot be read ({exc.strerror or exc})") from None
        return data


def _finish_import(job_id: int, **fields) -> None:
    ImportJob.objects.filter(pk=job_id).update(finished_at=timezone.now(), **fields)


def import_run(*, job_id: int) -> None:
    """Run an import job: decode, hash and store every file; safe to run again (it resumes)."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
            return
        job.status = ImportJob.Status.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.processed = 0
        job.errors = []
        job.save(update_fields=["status", "started_at", "processed", "errors"])
    try:
        _import_files(job)
    except ValidationFailed as exc:
        _finish_import(job.pk, status=ImportJob.Status.FAILED, message=exc.message)
    except SoftTimeLimitExceeded:
        _finish_import(job.pk, status=ImportJob.Status.FAILED, message="the import took longer than its time limit")
        raise
    except Exception as exc:
        logger.exception("import %s failed", job.pk)
        _finish_import(job.pk, status=ImportJob.Status.FAILED, message=f"the import failed: {exc}")
        raise


class _Decoded(NamedTuple):
    sha256: str
    label: str
    path: str
    data: bytes
    width: int
    height: int
    mode: str
    format: str


def _chunks(entries: list[_Entry]) -> list[list[_Entry]]:
    """Batches of IMPORT_BATCH files, the first ones smaller: the stages start working sooner."""
    chunks, start, size = [], 0, max(1, IMPORT_BATCH // 8)
    while start < len(entries):
        chunks.append(entries[start : start + size])
        start, size = start + size, min(IMPORT_BATCH, size * 2)
    return chunks


def _decode_batch(source: _Source, entries: list[_Entry], max_pixels: int) -> tuple[list[_Decoded], list[dict]]:
    """Read, fully decode and hash some files: pure CPU and reads, no database (it runs in a thread)."""
    batch: list[_Decoded] = []
    errors: list[dict] = []
    read, decode, sha256 = source.read, imaging.decode, hashlib.sha256
    for entry in entries:
        try:
            data = read(entry)
            decoded = decode(data, max_pixels=max_pixels)
        except imaging.ImageError as exc:
            errors.append({"path": entry.path, "reason": exc.reason})
            continue
        batch.append(
            _Decoded(
                sha256(data).hexdigest(),
                entry.label,
                entry.path,
                data,
                decoded.width,
                decoded.height,
                decoded.mode,
                decoded.format,
            )
        )
    return batch, errors


def _import_files(job: ImportJob) -> None:
    max_pixels = settings.CRUCIBLE_MAX_IMAGE_PIXELS
    writer = AssetWriter()
    source = _Source(job)
    if job.source_kind == ImportJob.Source.TEXT_CSV:
        from curation import import_sources

        import_sources.import_texts(job)  # texts are not decoded as images
        return
    if job.source_kind not in (ImportJob.Source.ZIP, ImportJob.Source.FOLDER):
        from curation import import_sources

        source = import_sources.source_for(job)  # manifests, DIGITS lists, URLs, S3, annotated zips
    # Three stages run at once, each on its own thread: files are read, decoded and hashed on one
    # (CPU bound, no database), written on another (waits on the file system), and this thread
    # looks assets up and inserts rows once their files exist (waits on the database). Only this
    # thread uses the database connection.
    with (
        source.open() as (entries, errors),
        ThreadPoolExecutor(max_workers=1) as decoder,
        ThreadPoolExecutor(max_workers=1) as files,
    ):
        total = len(entries) + len(errors)
        processed = len(errors)
        ImportJob.objects.filter(pk=job.pk).update(total=total, processed=processed, errors=errors[:MAX_STORED_ERRORS])
        chunks = _chunks(entries)
        decoding = deque(decoder.submit(_decode_batch, source, chunk, max_pixels) for chunk in chunks[:2])
        readable = 0
        pending = None
        for index, chunk in enumerate(chunks):
            batch, batch_errors = decoding.popleft().result()
            if index + 2 < len(chunks):
                decoding.append(decoder.submit(_decode_batch, source, chunks[index + 2], max_pixels))
            errors.extend(batch_errors)
            readable += len(batch)
            processed += len(chunk)
            unique, ids, new = _prepare_batch(batch)
            written = files.submit(_write_files, writer, new)
            if pending is not None:
                _store_batch(job, *pending)
            pending = (written, unique, ids, new, processed, errors[:MAX_STORED_ERRORS])
        if pending is not None:
            _store_batch(job, *pending)
    imported = ProjectAsset.objects.filter(import_job=job).count()
    duplicates = readable - imported
    classes = len({e.label for e in entries})
    parts = [f"imported {imported} images in {classes} classes"]
    if duplicates:
        parts.append(f"{duplicates} already in the project")
    if errors:
        parts.append(
            f"{len(errors)} files could not be used"
            + (f" (the first {MAX_STORED_ERRORS} are listed)" if len(errors) > MAX_STORED_ERRORS else "")
        )
    finish = getattr(source, "finish", None)
    if finish is not None:  # the sources of curation.import_sources: box labels, notes for the message
        parts.extend(finish(errors))
    status = ImportJob.Status.DONE if readable or not entries else ImportJob.Status.FAILED
    if not readable:
        parts = ["no readable image was found", *parts[1:]]
    _finish_import(
        job.pk,
        status=status,
        processed=total,
        imported=imported,
        duplicates=duplicates,
        errors=errors[:MAX_STORED_ERRORS],
        message="; ".join(parts),
    )
    if job.source_kind == ImportJob.Source.ZIP:
        # The images are stored by content now; the upload itself is no longer needed.
        default_storage.delete(job.source)
    upload = getattr(source, "upload", None)
    if upload:
        default_storage.delete(upload)


def _prepare_batch(batch: list[_Decoded]) -> tuple[dict[str, _Decoded], dict[str, int], list[_Decoded]]:
    """The batch without repeats, the ids of assets stored already, and the assets that are new."""
    unique: dict[str, _Decoded] = {}
    for item in batch:
        unique.setdefault(item.sha256, item)
    ids = _asset_ids(list(unique))
    new = [item for sha, item in unique.items() if sha not in ids]
    return unique, ids, new


class _Location(NamedTuple):
    storage_name: str
    offset: int | None  # None: the asset's own file
    length: int | None


def _write_files(writer: AssetWriter, items: list[_Decoded]) -> dict[str, _Location]:
    """Store the new assets of a batch: small ones appended to a pack, larger ones in a file each.

    Where each asset's bytes now are, by sha256.
    """
    max_packed = pack_max_asset_bytes()
    locations: dict[str, _Location] = {}
    pack: list[_Decoded] = []
    pack_bytes = 0

    def flush() -> None:
        name = writer.write_pack(b"".join(item.data for item in pack))
        offset = 0
        for item in pack:
            locations[item.sha256] = _Location(name, offset, len(item.data))
            offset += len(item.data)

    for item in items:
        size = len(item.data)
        if size > max_packed:
            name = writer.write(asset_storage_name(item.sha256, item.format), item.data)
            locations[item.sha256] = _Location(name, None, None)
            continue
        if pack and pack_bytes + size > PACK_MAX_BYTES:
            flush()
            pack, pack_bytes = [], 0
        pack.append(item)
        pack_bytes += size
    if pack:
        flush()
    return locations


def _store_batch(
    job: ImportJob,
    written: Future,
    unique: dict[str, _Decoded],
    ids: dict[str, int],
    new: list[_Decoded],
    processed: int,
    errors: list[dict],
) -> None:
    locations: dict[str, _Location] = written.result()  # files first: a row never points at a missing file
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A batch lost in a crash is redone when the task runs again (its files are kept), so
            # its commit need not wait for the WAL flush.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        if new:
            ids.update(
                _insert_ignoring_conflicts(
                    Asset,
                    [
                        "sha256",
                        "storage_name",
                        "offset",
                        "length",
                        "size_bytes",
                        "width",
                        "height",
                        "mode",
                        "format",
                        "created_at",
                        "kind",  # plain SQL: the model's default is not applied
                    ],
                    [
                        (
                            item.sha256,
                            *locations[item.sha256],
                            len(item.data),
                            item.width,
                            item.height,
                            item.mode,
                            item.format,
                            now,
                            Asset.Kind.IMAGE.value,
                        )
                        for item in new
                    ],
                    returning=("sha256", "id"),
                )
            )
            missing = [item.sha256 for item in new if item.sha256 not in ids]
            if missing:  # stored meanwhile by another import: not returned by the insert
                ids.update(_asset_ids(missing))
        _insert_ignoring_conflicts(
            ProjectAsset,
            ["project_id", "asset_id", "label", "source_path", "import_job_id", "created_at"],
            [
                (job.project_id, ids[item.sha256], item.label[:200], item.path[:1000], job.pk, now)
                for item in unique.values()
            ],
        )
        ImportJob.objects.filter(pk=job.pk).update(processed=processed, errors=errors)


def _asset_ids(shas: list[str]) -> dict[str, int]:
    """Ids of the stored assets among `shas` (at most one batch); plain SQL, as for the inserts."""
    if not shas:
        return {}
    quote = connection.ops.quote_name
    sql = f"SELECT {quote('sha256')}, {quote('id')} FROM {quote(Asset._meta.db_table)} WHERE {quote('sha256')} "  # noqa: S608 - names from the model
    if connection.vendor == "postgresql":
        # One string parameter: PostgreSQL parsed and planned 2000 literals in 10-50 ms, this in 6-9.
        sql += "= ANY(string_to_array(%s, ','))"
        params: list[str] = [",".join(shas)]  # hex digests: never a comma
    else:
        sql += f"IN ({', '.join(['%s'] * len(shas))})"
        params = shas
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())


def _insert_ignoring_conflicts(
    model, columns: list[str], rows: list[tuple], *, returning: tuple[str, ...] = ()
) -> list[tuple]:
    """INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL) for many rows.

    bulk_create(ignore_conflicts=True) does the same but prepares every field of every row in
    Python, which was half the import's time (and a batch's id lookup through the ORM cost more
    than the query); the unique constraints still decide what is kept.
    """
    if not rows:
        return []
    # Columns the caller does not name get their model defaults: plain SQL applies none, and a column
    # added to the model later (a flag with a default) would otherwise be inserted as NULL.
    unnamed = [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key and f.column not in columns and f.has_default() and not callable(f.default)
    ]
    if unnamed:
        defaults = tuple(f.get_db_prep_save(f.default, connection) for f in unnamed)
        columns = [*columns, *(f.column for f in unnamed)]
        rows = [(*r, *defaults) for r in rows]
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in columns)
    table = f"{quote(model._meta.db_table)} ({names})"
    suffix = f" RETURNING {', '.join(quote(c) for c in returning)}" if returning else ""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY into a temporary table, then one INSERT ... SELECT: psycopg formats COPY rows in C,
            # where binding the rows as parameters (even one array per column) quoted every value in
            # Python, a third of the import's time. The table is dropped after use (and at commit in any case).
            staging = quote(f"_staging_{model._meta.db_table}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "  # noqa: S608 - names from the model
                f"SELECT {names} FROM {quote(model._meta.db_table)} WITH NO DATA"
            )
            with cursor.cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                write_row = copy.write_row
                for r in rows:
                    write_row(r)
            sql = f"INSERT INTO {table} SELECT {names} FROM {staging} ON CONFLICT DO NOTHING{suffix}"  # noqa: S608
            cursor.execute(sql)
            rows_back = cursor.fetchall() if returning else []
            cursor.execute(f"DROP TABLE {staging}")  # a second call in the same transaction creates it again
            return rows_back
        row = f"({', '.join(['%s'] * len(columns))})"
        # One statement per batch; a batch stays far below SQLite's parameter limit.
        sql = f"INSERT INTO {table} VALUES {', '.join([row] * len(rows))} ON CONFLICT DO NOTHING{suffix}"  # noqa: S608
        cursor.execute(sql, [value for r in rows for value in r])
        return cursor.fetchall() if returning else []


# Dataset versions


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_SIDE = 1024


def _split_keys(seed: int, sha256: str) -> tuple[float, float]:
    """Two independent numbers in [0, 1) from the seed and the asset: one picks the split, the
    other the order in which max_per_class keeps items."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:16], "big") / 2**64


def _check_spec(
    *,
    name: str,
    channels: int,
    width: int,
    height: int,
    resize_mode: str,
    val_percent: int,
    test_percent: int,
    min_per_class: int | None,
    max_per_class: int | None,
    split_seed: int | None,
) -> None:
    fields: dict[str, str] = {}
    if not _NAME_RE.fullmatch(name or "") or name.isdigit():
        fields["name"] = "letters, digits, '.', '_' and '-', starting with a letter or digit, not only digits"
    if channels not in (1, 3):
        fields["channels"] = "1 (grayscale) or 3 (colour)"
    for key, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_SIDE:
            fields[key] = f"between 1 and {MAX_SIDE}"
    if resize_mode not in imaging.RESIZE_MODES:
        fields["resize_mode"] = f"one of {', '.join(imaging.RESIZE_MODES)}"
    if val_percent < 0 or test_percent < 0:
        fields["val_percent" if val_percent < 0 else "test_percent"] = "not negative"
    elif val_percent + test_percent >= 100:
        fields["val_percent"] = "val_percent + test_percent must leave room for training (below 100)"
    if min_per_class is not None and min_per_class < 1:
        fields["min_per_class"] = "at least 1"
    if max_per_class is not None and max_per_class < 1:
        fields["max_per_class"] = "at least 1"
    if min_per_class and max_per_class and min_per_class > max_per_class:
        fields["min_per_class"] = "not above max_per_class"
    if split_seed is not None and not 0 <= split_seed < 2**63:
        fields["split_seed"] = "between 0 and 2**63 - 1"
    if fields:
        first = next(iter(fields.items()))
        raise ValidationFailed(f"{first[0]}: {first[1]}", fields=fields)


def dataset_version_create(
    *,
    project: Project,
    user: User,
    name: str,
    channels: int,
    width: int,
    height: int,
    resize_mode: str,
    val_percent: int = 25,
    test_percent: int = 0,
    min_per_class: int | None = None,
    max_per_class: int | None = None,
    split_seed: int | None = None,
    parent: DatasetVersion | int | None = None,
) -> DatasetVersion:
    """Freeze the project's labelled assets into a dataset version and queue its shards.

    `parent` (a version of the same project, or its id) is recorded as the version this one follows.

    Each asset's split comes from a hash of (split_seed, asset sha256), so it depends on nothing
    else; the seed is chosen at random when not given and is always recorded.
    """
    require_write(user=user, project=project)
    _check_spec(
        name=name,
        channels=channels,
        width=width,
        height=height,
        resize_mode=resize_mode,
        val_percent=val_percent,
        test_percent=test_percent,
        min_per_class=min_per_class,
        max_per_class=max_per_class,
        split_seed=split_seed,
    )
    if parent is not None:
        parent_id = parent.pk if isinstance(parent, DatasetVersion) else parent
        parent = DatasetVersion.objects.filter(project=project, pk=parent_id).first()
        if parent is None:
            raise ValidationFailed(
                f"parent dataset {parent_id} is not a version of {project.name!r}",
                code="invalid_parent",
                fields={"parent": "not in this project"},
            )
    if DatasetVersion.objects.filter(project=project, name=name).exists():
        raise Conflict(
            f"a dataset named {name!r} already exists in {project.name!r}",
            code="duplicate_name",
            fields={"name": "taken"},
        )
    seed = split_seed if split_seed is not None else secrets.randbelow(2**31)
    # Dropped assets (cleaning decisions) are left out; evaluation-set members go to the test split
    # whatever their split key says, so they never train (a split key of 2.0 is past every cut).
    rows = list(
        ProjectAsset.objects.filter(project=project, excluded=False)
        .exclude(label="")
        .values_list("asset_id", "asset__sha256", "label", "evaluation")
    )
    by_class: dict[str, list[tuple[float, float, int, str]]] = {}
    for asset_id, sha, label, evaluation in rows:
        split_key, order_key = _split_keys(seed, sha)
        if evaluation:
            split_key = 2.0
        by_class.setdefault(label, []).append((order_key, split_key, asset_id, sha))
    excluded = []
    for label in list(by_class):
        if min_per_class and len(by_class[label]) < min_per_class:
            excluded.append(label)
            del by_class[label]
        elif max_per_class:
            by_class[label] = sorted(by_class[label])[:max_per_class]
    if len(by_class) < 2:
        detail = f" ({len(excluded)} had fewer than {min_per_class} images)" if excluded else ""
        raise ValidationFailed(
            f"a dataset needs at least two classes with labelled images; {project.name!r} has {len(by_class)}{detail}",
            code="too_few_classes",
        )
    class_names = sorted(by_class, key=natural_key)
    index = {label: i for i, label in enumerate(class_names)}
    val_cut, test_cut = val_percent / 100, (val_percent + test_percent) / 100
    manifest: dict[str, list[tuple[str, int, str]]] = {split: [] for split in SPLITS}
    for label, items in by_class.items():
        for _order_key, split_key, asset_id, sha in items:
            if split_key > 1.0:
                split = "test"  # an evaluation-set member
            else:
                split = "val" if split_key < val_cut else "test" if split_key < test_cut else "train"
            manifest[split].append((sha, asset_id, label))
    if not manifest["train"]:
        raise ValidationFailed(
            "no image would be left for training; lower val_percent or test_percent",
            code="empty_train_split",
            fields={"val_percent": "too high for this data"},
        )
    counts = {split: dict.fromkeys(class_names, 0) for split in SPLITS}
    for split in SPLITS:
        # Shard rows follow the asset hash: a pure function of the manifest, so equal manifests share shards.
        manifest[split].sort()
        for _sha, _asset_id, label in manifest[split]:
            counts[split][label] += 1
    spec = {"channels": channels, "width": width, "height": height, "resize_mode": resize_mode}
    digest = hashlib.sha256(json.dumps(_hashed_spec(spec), sort_keys=True).encode())
    for line in sorted(f"{sha}\t{label}\t{split}\n" for split in SPLITS for sha, _, label in manifest[split]):
        digest.update(line.encode())

    from curation.tasks import dataset_materialize as dataset_materialize_task

    try:
        with transaction.atomic():
            version = DatasetVersion.objects.create(
                project=project,
                name=name,
                parent=parent,
                channels=channels,
                width=width,
                height=height,
                resize_mode=resize_mode,
                val_percent=val_percent,
                test_percent=test_percent,
                min_per_class=min_per_class,
                max_per_class=max_per_class,
                split_seed=seed,
                class_names=class_names,
                counts=counts,
                content_hash=digest.hexdigest(),
                created_by=user,
            )
            DatasetItem.objects.bulk_create(
                (
                    DatasetItem(
                        version=version,
                        asset_id=asset_id,
                        label=label,
                        label_index=index[label],
                        split=split,
                        position=position,
                    )
                    for split in SPLITS
                    for position, (_sha, asset_id, label) in enumerate(manifest[split])
                ),
                batch_size=2000,
            )
            audit(
                actor=user,
                project=project,
                verb="dataset.create",
                target=name,
                content_hash=version.content_hash,
                split_seed=seed,
                excluded_classes=excluded,
            )
            transaction.on_commit(lambda: dataset_materialize_task.delay(version_id=version.pk))
    except IntegrityError:
        raise Conflict(
            f"a dataset named {name!r} already exists in {project.name!r}",
            code="duplicate_name",
            fields={"name": "taken"},
        )
    return version


# Dataset shards


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(prefix: str) -> dict | None:
    """The manifest of complete shards under `prefix`: it is written last, so its presence means done."""
    name = f"{prefix}/manifest.json"
    try:
        if not default_storage.exists(name):
            return None
        with default_storage.open(name, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def dataset_shard_format(*, spec: dict) -> str:
    """How a version of this spec stores its images: "npy" (raw uint8 arrays) when one preprocessed
    image (C*H*W bytes) is at most CRUCIBLE_SHARD_RAW_MAX_BYTES, else "encoded" (lossless PNGs)."""
    return shards.shard_format(
        channels=spec["channels"],
        width=spec["width"],
        height=spec["height"],
        raw_max_bytes=settings.CRUCIBLE_SHARD_RAW_MAX_BYTES,
    )


def _hashed_spec(spec: dict) -> dict:
    """The spec as the content hash sees it: encoded shards add their format, so they never share a
    hash (and a storage folder) with npy shards of the same items; npy versions hash as they always did."""
    if dataset_shard_format(spec=spec) == "encoded":
        return {**spec, "shard_format": "encoded"}
    return spec


def _build_shards(version: DatasetVersion, folder: Path) -> dict:
    """Write the shards of `version` and manifest.json into `folder`: per split {split}_y.npy and either
    {split}_x.npy or, for large images, {split}_x.bin with {split}_offsets.npy (see curation.shards)."""
    shape = (version.channels, version.height, version.width)
    fmt = dataset_shard_format(spec=version.spec)
    files: dict[str, dict] = {}
    stats: dict = {}
    max_pixels = settings.CRUCIBLE_MAX_IMAGE_PIXELS
    for split in SPLITS:
        rows = list(
            DatasetItem.objects.filter(version=version, split=split)
            .order_by("position")
            .values_list(
                "label_index",
                "asset__sha256",
                "asset__storage_name",
                "asset__offset",
                "asset__length",
                "asset__width",
                "asset__height",
                "asset__mode",
            )
        )
        n = len(rows)
        x_path, y_path = folder / f"{split}_x.npy", folder / f"{split}_y.npy"
        y = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        if fmt == "encoded":
            x_paths = [folder / f"{split}_x.bin", folder / f"{split}_offsets.npy"]
            x = shards.EncodedWriter(folder, split, n=n, shape=shape)
        else:
            x_paths = [x_path]
        if n:
            if fmt == "npy":
                x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.uint8, shape=(n, *shape))
            # Rows are filled in storage order (each pack read once, front to back), not row order.
            i = 0
            try:
                for i, data in assets_read_bytes((k, r[2], r[3], r[4]) for k, r in enumerate(rows)):
                    decoded = imaging.decode(data, max_pixels=max_pixels)
                    x[i], _steps = imaging.preprocess(
                        decoded.image,
                        channels=version.channels,
                        width=version.width,
                        height=version.height,
                        resize_mode=version.resize_mode,
                        fill_seed=bytes.fromhex(rows[i][1]),
                    )
            except (imaging.ImageError, AssetUnreadable) as exc:
                failed = rows[exc.key if isinstance(exc, AssetUnreadable) else i][1]
                raise ValidationFailed(f"asset {failed[:12]} could not be read: {exc.reason}") from None
            if fmt == "encoded":
                x.close()
                x = shards.EncodedImages.open(folder, split, shape=shape)
            else:
                x.flush()
            if split == "train":
                stats = imaging.image_stats(x, [(r[5], r[6]) for r in rows], [r[7] for r in rows])
            del x
        elif fmt == "encoded":
            x.close()
        else:
            np.save(x_path, np.zeros((0, *shape), dtype=np.uint8))
        np.save(y_path, y)
        for path in (*x_paths, y_path):
            files[path.name] = {"sha256": _sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": fmt,  # "npy" or "encoded" (manifests written before encoded shards say 1: npy)
        "content_hash": version.content_hash,
        "class_names": version.class_names,
        "spec": version.spec,
        "counts": version.counts,
        "files": files,
        "stats": stats,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _publish_shards(version: DatasetVersion, build: Path, prefix: str) -> dict:
    """Move a finished build into storage under `prefix`; if another worker got there first, keep theirs."""
    root = storage_root()
    if root is not None:
        final = root / prefix
        final.parent.mkdir(parents=True, exist_ok=True)
        existing = _read_manifest(prefix)
        if existing is not None:
            shutil.rmtree(build, ignore_errors=True)
            return existing
        if final.exists():  # a folder without a manifest is an unfinished build: replace it
            shutil.rmtree(final)
        os.rename(build, final)
        return json.loads((final / "manifest.json").read_text())
    manifest = json.loads((build / "manifest.json").read_text())
    for name in [*manifest["files"], "manifest.json"]:  # the manifest last: it marks the shards complete
        target = f"{prefix}/{name}"
        if default_storage.exists(target):
            default_storage.delete(target)
        with open(build / name, "rb") as f:
            default_storage.save(target, f)
    # Keep the build as this worker's local copy of the shards.
    cache = Path(settings.CRUCIBLE_CACHE_DIR) / "shards" / version.content_hash
    (build / ".verified").touch()
    if cache.exists():
        shutil.rmtree(build, ignore_errors=True)
    else:
        os.rename(build, cache)
    return manifest


def dataset_materialize(*, version_id: int) -> None:
    """Write a dataset version's training shards, or reuse shards of the same content; idempotent."""
    version = DatasetVersion.objects.filter(pk=version_id).first()
    if version is None or version.status != DatasetVersion.Status.MATERIALIZING:
        return
    prefix = f"shards/{version.content_hash}"
    build: Path | None = None
    try:
        manifest = _read_manifest(prefix)
        if manifest is None:
            root = storage_root()
            base = root / "shards" if root is not None else Path(settings.CRUCIBLE_CACHE_DIR) / "shards"
            base.mkdir(parents=True, exist_ok=True)
            build = base / f".build-{uuid.uuid4().hex}"
            build.mkdir()
            _build_shards(version, build)
            manifest = _publish_shards(version, build, prefix)
    except ValidationFailed as exc:
        _fail_version(version.pk, exc.message)
        return
    except SoftTimeLimitExceeded:
        _fail_version(version.pk, "writing the shards took longer than the time limit")
        raise
    except Exception as exc:
        logger.exception("dataset version %s failed", version.pk)
        _fail_version(version.pk, f"writing the shards failed: {exc}")
        raise
    finally:
        if build is not None and build.exists():
            shutil.rmtree(build, ignore_errors=True)
    DatasetVersion.objects.filter(pk=version.pk, status=DatasetVersion.Status.MATERIALIZING).update(
        status=DatasetVersion.Status.READY, shard_name=prefix, stats=manifest.get("stats") or {}, error=""
    )


def _fail_version(version_id: int, error: str) -> None:
    DatasetVersion.objects.filter(pk=version_id, status=DatasetVersion.Status.MATERIALIZING).update(
        status=DatasetVersion.Status.FAILED, error=error
    )


# Frozen versions, the evaluation set and the leak guard


def leak_radius() -> int:
    """Hamming radius of pHashes within which a train image counts as a copy of an evaluation image
    (settings: CRUCIBLE_LEAK_RADIUS, default the near-duplicate radius)."""
    from curation.findings import near_duplicate_radius

    return int(getattr(settings, "CRUCIBLE_LEAK_RADIUS", near_duplicate_radius()))


def require_unfrozen(*, version: DatasetVersion) -> None:
    """Refuse to change a frozen version (409 version_frozen): every service that edits one calls this."""
    if version.frozen_at is not None:
        raise Conflict(
            f"dataset {version.name!r} is frozen since {version.frozen_at:%Y-%m-%d %H:%M} UTC and cannot change",
            code="version_frozen",
        )


# Lines "sha256<TAB>label<TAB>split<LF>" in the order Python sorts them: hashes are 64 hex characters and
# unique in a version, so ordering by the hash alone (bytewise: COLLATE "C") orders the whole lines.
_MANIFEST_HASH_SQL = """
    SELECT encode(sha256(convert_to(
        %s || COALESCE(string_agg(s.sha256 || chr(9) || i.label || chr(9) || i.split || chr(10), ''
                                  ORDER BY s.sha256 COLLATE "C"), ''),
        'UTF8')), 'hex')
    FROM {item} i INNER JOIN {asset} s ON s.id = i.asset_id
    WHERE i.version_id = %s
"""


def dataset_version_manifest_hash(*, version: DatasetVersion) -> str:
    """The content hash of a version recomputed from its items: sha256 of the spec, then of every
    "sha256<TAB>label<TAB>split" line in sorted order (as `dataset_version_create` computes it)."""
    spec = json.dumps(_hashed_spec(version.spec), sort_keys=True)
    if connection.vendor == "postgresql":
        # The same digest computed by the database: lines in byte order (COLLATE "C", as Python sorts
        # UTF-8 strings), hashed where they are, instead of a million rows sent over and sorted here.
        with connection.cursor() as cursor:
            cursor.execute(
                _MANIFEST_HASH_SQL.format(
                    item=connection.ops.quote_name(DatasetItem._meta.db_table),
                    asset=connection.ops.quote_name(Asset._meta.db_table),
                ),
                [spec, version.pk],
            )
            return cursor.fetchone()[0]
    digest = hashlib.sha256(spec.encode())
    rows = DatasetItem.objects.filter(version=version).values_list("asset__sha256", "label", "split")
    lines = [f"{sha}\t{label}\t{split}\n" for sha, label, split in rows.iterator(chunk_size=20_000)]
    lines.sort()
    digest.update("".join(lines).encode())
    return digest.hexdigest()


def dataset_version_leaks(*, version: DatasetVersion, radius: int | None = None) -> list[dict]:
    """Train items of `version` that are an evaluation-set member or within `radius` of one.

    Exact: the member's own asset in the train split. Near: pHash within the radius (assets without a
    hash are hashed first). One row per (member, train asset), closest first.
    """
    from curation.findings import asset_hashes_ensure
    from curation.hashing import cross_pairs

    radius = leak_radius() if radius is None else radius
    members = list(
        ProjectAsset.objects.filter(project=version.project_id, evaluation=True).values_list("asset_id", flat=True)
    )
    if not members:
        return []
    unhashed = DatasetItem.objects.filter(version=version, split="train", asset__phash__isnull=True)
    asset_hashes_ensure(asset_ids=[*members, *unhashed.values_list("asset_id", flat=True)])
    # One filter() call: both conditions on the same project asset row, not on any two.
    exact = DatasetItem.objects.filter(
        version=version,
        split="train",
        asset__project_assets__evaluation=True,
        asset__project_assets__project=version.project_id,
    ).values_list("asset__sha256", flat=True)
    offenders = {(sha, sha): 0 for sha in exact}
    queries = list(
        Asset.objects.filter(pk__in=members, phash__phash__isnull=False).values_list("sha256", "phash__phash")
    )
    # Ids and hashes only (two integers a row): the hashes of the few offenders are looked up after.
    train = np.array(
        DatasetItem.objects.filter(version=version, split="train", asset__phash__phash__isnull=False).values_list(
            "asset_id", "asset__phash__phash"
        ),
        dtype=np.int64,
    ).reshape(-1, 2)
    if queries and len(train):
        pairs = cross_pairs(np.array([q[1] for q in queries], dtype=np.int64), train[:, 1], radius)
        train_ids = train[pairs[:, 1], 0].tolist()
        shas = dict(Asset.objects.filter(pk__in=set(train_ids)).values_list("pk", "sha256"))
        for (q, _t, d), asset_id in zip(pairs.tolist(), train_ids, strict=True):
            offenders.setdefault((queries[q][0], shas[asset_id]), d)
    rows = [{"evaluation": e, "train": t, "distance": d} for (e, t), d in offenders.items()]
    return sorted(rows, key=lambda r: (r["distance"], r["evaluation"], r["train"]))


def dataset_version_freeze(*, version: DatasetVersion, user: User) -> DatasetVersion:
    """Freeze a version: check its stored content hash against its items and that no evaluation-set
    member (or a copy within the leak radius) is in its train split, then mark it frozen for good.

    409 version_frozen when it already is; 409 content_mismatch when the items no longer give the
    recorded hash; 409 leak listing the offending (evaluation, train) pairs. Nothing is changed on
    failure.
    """
    require_write(user=user, project=version.project)
    with transaction.atomic():
        locked = DatasetVersion.objects.select_for_update().select_related("project").get(pk=version.pk)
        require_unfrozen(version=locked)
        if locked.status == DatasetVersion.Status.FAILED:
            raise Conflict(f"dataset {locked.name!r} failed and cannot be frozen", code="dataset_failed")
        content_hash = dataset_version_manifest_hash(version=locked)
        if content_hash != locked.content_hash:
            raise Conflict(
                f"the items of dataset {locked.name!r} no longer match its content hash",
                code="content_mismatch",
                fields={"content_hash": locked.content_hash, "computed": content_hash},
            )
        leaks = dataset_version_leaks(version=locked)
        if leaks:
            raise Conflict(
                f"{len(leaks)} train image(s) of dataset {locked.name!r} are evaluation-set images or near "
                f"copies of them (within {leak_radius()} bits)",
                code="leak",
                fields={"offenders": leaks[:100], "count": len(leaks)},
            )
        locked.frozen_at = timezone.now()
        locked.frozen_by = user
        locked.save(update_fields=["frozen_at", "frozen_by"])
        audit(actor=user, project=locked.project, verb="dataset.freeze", target=locked.name, content_hash=content_hash)
    return locked


def dataset_version_create_frozen(**spec) -> DatasetVersion:
    """`dataset_version_create` then `dataset_version_freeze`, all or nothing: a version that would not
    freeze (a leak) is not created, and its shards are queued only once it is frozen."""
    with transaction.atomic():
        version = dataset_version_create(**spec)
        return dataset_version_freeze(version=version, user=spec["user"])


def evaluation_set_update(
    *, project: Project, user: User, add: list[str] | None = None, remove: list[str] | None = None
) -> int:
    """Add assets (by sha256) to the project's evaluation set, or remove them; returns the set's size.

    Members never enter a train split of a new version; freezing a version refuses one whose train
    split holds a member or a near copy of one. Unknown hashes fail the whole update (400 unknown_asset).
    """
    require_write(user=user, project=project)
    add = [s.lower() for s in add or []]
    remove = [s.lower() for s in remove or []]
    wanted = set(add) | set(remove)
    if set(add) & set(remove):
        raise ValidationFailed("an asset cannot be both added and removed", fields={"remove": "also in add"})
    found = set(
        ProjectAsset.objects.filter(project=project, asset__sha256__in=wanted).values_list("asset__sha256", flat=True)
    )
    missing = sorted(wanted - found)
    if missing:
        raise ValidationFailed(
            f"{len(missing)} asset(s) are not in {project.name!r}",
            code="unknown_asset",
            fields={"assets": [m[:12] for m in missing[:20]]},
        )
    with transaction.atomic():
        ProjectAsset.objects.filter(project=project, asset__sha256__in=add).update(evaluation=True)
        ProjectAsset.objects.filter(project=project, asset__sha256__in=remove).update(evaluation=False)
        size = ProjectAsset.objects.filter(project=project, evaluation=True).count()
        audit(actor=user, project=project, verb="evaluation_set.update", added=len(add), removed=len(remove))
    return size
