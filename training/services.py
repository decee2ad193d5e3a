"""Writes and workflows of training: start, abort, clone and execute runs; classify; export models.

The training itself is `training.engine` (plain PyTorch); this module connects it to the database,
the file storage and Celery. Images to classify go through the dataset version's own preprocessing
(`curation.imaging`), the code that made the training shards, never a second path.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import secrets
import tarfile
import tempfile
import time
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from crucible.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crucible.core.models import User
from crucible.core.selectors import require_read, require_write
from crucible.core.services import audit
from curation.imaging import ImageError, compare_to_stats, decode, preprocess
from curation.models import DatasetVersion
from training.engine import SCALE, EpochResult, Predictor, TrainConfig, TrainData, load_checkpoint, train
from training.engine.loop import device_name, resolve_device
from training.engine.networks import NETWORKS, min_size
from training.models import Epoch, TrainingRun
from training.selectors import training_run_epoch_get, training_run_get

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**63 - 1
PROGRESS_WRITE_INTERVAL_S = 1.0
ABORT_POLL_INTERVAL_S = 1.0
MAX_CLASSIFY_FILES = 10_000
TOP_K = 5
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_CONFIG_TYPES: dict[str, type] = {
    "network": str,
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "lr_policy": str,
    "lr_step_epochs": int,
    "lr_gamma": float,
    "optimizer": str,
    "momentum": float,
    "weight_decay": float,
    "mean_subtraction": str,
    "augmentation": str,
}


# --- configuration -------------------------------------------------------------------------------


def _config_clean(config: dict[str, Any]) -> TrainConfig:
    """The engine configuration from user input: defaults filled in, types and ranges checked."""
    unknown = sorted(set(config) - set(_CONFIG_TYPES))
    if unknown:
        raise ValidationFailed(
            f"unknown setting {unknown[0]!r}", code="invalid_config", fields={k: "unknown setting" for k in unknown}
        )
    values: dict[str, Any] = {}
    for key, kind in _CONFIG_TYPES.items():
        if config.get(key) is None:
            continue
        value = config[key]
        try:
            if kind is int and (isinstance(value, bool) or float(value) != int(value)):
                raise ValueError
            values[key] = kind(value)
        except (TypeError, ValueError):
            raise ValidationFailed(f"{key}: expected {kind.__name__}", code="invalid_config", fields={key: "invalid"})
    if "network" not in values:
        raise ValidationFailed("network: required", code="invalid_config", fields={"network": "required"})
    cfg = TrainConfig.from_dict(values)
    problems = cfg.check()
    if problems:
        key, message = next(iter(problems.items()))
        code = "unknown_network" if key == "network" else "invalid_config"
        raise ValidationFailed(message, code=code, fields=problems)
    return cfg


def _recorded_config(run: TrainingRun) -> dict[str, Any]:
    """The configuration `run` was started with. A run recorded before mean subtraction or
    augmentation was a setting trained without them, so a missing value is "none", not today's
    default: such runs resume, clone and describe themselves exactly as they trained."""
    return {"mean_subtraction": "none", "augmentation": "none", **run.config}


def _name_clean(name: str) -> str:
    name = (name or "").strip()
    if not _NAME_RE.fullmatch(name):
        raise ValidationFailed(
            "a run name is 1 to 100 letters, digits, '.', '_' or '-' and starts with a letter or digit",
            code="invalid_name",
            fields={"name": "invalid name"},
        )
    return name


def _name_taken(project_id: int, name: str) -> bool:
    return TrainingRun.objects.filter(project_id=project_id, name=name).exists()


def _duplicate(name: str) -> Conflict:
    return Conflict(
        f"a run named {name!r} already exists in this project", code="duplicate_name", fields={"name": "taken"}
    )


# --- start, clone, abort -------------------------------------------------------------------------


def _run_create(
    *,
    dataset_version: DatasetVersion,
    user: User,
    name: str,
    config: TrainConfig,
    seed: int,
    device: str,
    parent_run: TrainingRun | None,
    parent_epoch: int | None,
    cloned_from: TrainingRun | None,
) -> TrainingRun:
    from training.tasks import run_task

    if _name_taken(dataset_version.project_id, name):
        raise _duplicate(name)
    task_id = str(uuid.uuid4())
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                project_id=dataset_version.project_id,
                dataset_version=dataset_version,
                name=name,
                config=config.to_dict(),
                seed=seed,
                device=device,
                parent_run=parent_run,
                parent_epoch=parent_epoch,
                cloned_from=cloned_from,
                task_id=task_id,
                created_by=user,
            )
            audit(
                actor=user,
                project=dataset_version.project,
                verb="run.clone" if cloned_from else "run.start",
                target=name,
                run=run.pk,
                seed=seed,
                config=run.config,
                dataset=dataset_version.pk,
            )
            transaction.on_commit(lambda: run_task.apply_async(kwargs={"run_id": run.pk}, task_id=task_id))
    except IntegrityError:
        raise _duplicate(name) from None
    return run


def _parent_clean(
    *, user: User, from_run: TrainingRun | int | None, from_epoch: int | None, network: str
) -> tuple[TrainingRun | None, int | None]:
    if from_run is None:
        if from_epoch is not None:
            raise ValidationFailed("from_epoch needs from_run", code="invalid", fields={"from_epoch": "needs from_run"})
        return None, None
    if not isinstance(from_run, TrainingRun):
        try:
            from_run = training_run_get(user=user, run_id=from_run)
        except (NotFound, Forbidden) as exc:  # the reference itself is the bad input
            raise ValidationFailed(f"from_run: {exc}", code="run_not_found", fields={"from_run": "not found"}) from None
    else:
        require_read(user=user, project=from_run.project)
    epoch = training_run_epoch_get(run=from_run, epoch=from_epoch)
    parent_network = from_run.config.get("network")
    if parent_network != network:
        raise ValidationFailed(
            f"cannot continue a {network} from {from_run.name!r}, a {parent_network}",
            code="network_mismatch",
            fields={"network": f"must be {parent_network}"},
        )
    return from_run, epoch.epoch


def training_run_start(
    *,
    dataset_version: DatasetVersion,
    user: User,
    name: str,
    config: dict[str, Any],
    seed: int | None,
    device: str = "auto",
    from_run: TrainingRun | int | None = None,
    from_epoch: int | None = None,
) -> TrainingRun:
    """Create a queued run and enqueue `training.run` once the transaction commits.

    `config` holds network (required), epochs, batch_size, lr, lr_policy, lr_step_epochs, lr_gamma,
    optimizer, momentum, weight_decay, mean_subtraction and augmentation; missing values take the
    defaults of `TrainConfig`.
    A `seed` of None draws a random one, recorded on the run. With `from_run`, the new run starts
    from that run's weights at `from_epoch` (its last epoch when None) with a fresh optimizer.
    Everything is checked before anything is written.
    """
    require_write(user=user, project=dataset_version.project)
    name = _name_clean(name)
    cfg = _config_clean(config)
    if device not in DEVICES:
        raise ValidationFailed(f"unknown device {device!r}; one of {', '.join(DEVICES)}", fields={"device": "invalid"})
    if seed is None:
        seed = secrets.randbelow(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValidationFailed("seed must be an integer from 0 to 2**63-1", fields={"seed": "invalid"})
    if dataset_version.status != DatasetVersion.Status.READY:
        raise Conflict(
            f"dataset {dataset_version.name!r} is {dataset_version.status}, not ready", code="dataset_not_ready"
        )
    if len(dataset_version.class_names) < 2:
        raise ValidationFailed(f"dataset {dataset_version.name!r} has fewer than two classes", code="too_few_classes")
    smallest = min_size(cfg.network)
    if min(dataset_version.width, dataset_version.height) < smallest:
        raise ValidationFailed(
            f"{cfg.network} needs images of at least {smallest}x{smallest}; the dataset's are "
            f"{dataset_version.width}x{dataset_version.height}",
            code="images_too_small",
            fields={"network": "images too small"},
        )
    parent_run, parent_epoch = _parent_clean(user=user, from_run=from_run, from_epoch=from_epoch, network=cfg.network)
    return _run_create(
        dataset_version=dataset_version,
        user=user,
        name=name,
        config=cfg,
        seed=seed,
        device=device,
        parent_run=parent_run,
        parent_epoch=parent_epoch,
        cloned_from=None,
    )


def _clone_name(run: TrainingRun) -> str:
    base = f"{run.name[:90]}-clone"
    taken = set(
        TrainingRun.objects.filter(project_id=run.project_id, name__startswith=base).values_list("name", flat=True)
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def training_run_clone(*, run: TrainingRun, user: User, name: str | None = None, new_seed: bool = False) -> TrainingRun:
    """A new queued run with the same dataset, configuration, device, starting weights and (unless
    `new_seed`) seed: on CPU it repeats the original's metrics exactly. Named "<name>-clone",
    "<name>-clone-2", ... when no name is given."""
    require_write(user=user, project=run.project)
    name = _name_clean(name) if name else _clone_name(run)
    cfg = _config_clean(_recorded_config(run))
    dataset_version = run.dataset_version
    if dataset_version.status != DatasetVersion.Status.READY:
        raise Conflict(
            f"dataset {dataset_version.name!r} is {dataset_version.status}, not ready", code="dataset_not_ready"
        )
    return _run_create(
        dataset_version=dataset_version,
        user=user,
        name=name,
        config=cfg,
        seed=secrets.randbelow(2**31) if new_seed else run.seed,
        device=run.device,
        parent_run=run.parent_run,
        parent_epoch=run.parent_epoch if run.parent_run_id else None,
        cloned_from=run,
    )


def _revoke(task_id: str) -> None:
    from crucible.celery_app import app

    try:
        app.control.revoke(task_id)
    except OSError:
        # The task checks the run's status before doing anything, so a lost revoke costs nothing.
        logger.warning("could not revoke task %s", task_id, exc_info=True)


def training_run_abort(*, run: TrainingRun, user: User) -> TrainingRun:
    """Abort a run: a queued run at once (its task is revoked), a running one after its current batch."""
    require_write(user=user, project=run.project)
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status in TrainingRun.FINISHED:
            raise Conflict(f"run {locked.name!r} is already {locked.status}", code="run_finished")
        locked.abort_requested = True
        fields = ["abort_requested"]
        if locked.status == TrainingRun.Status.QUEUED:
            locked.status = TrainingRun.Status.ABORTED
            locked.finished_at = timezone.now()
            locked.eta_seconds = None
            fields += ["status", "finished_at", "eta_seconds"]
            if locked.task_id:
                task_id = locked.task_id
                transaction.on_commit(lambda: _revoke(task_id))
        locked.save(update_fields=fields)
        audit(actor=user, project=run.project, verb="run.abort", target=locked.name, run=locked.pk)
    return training_run_get(user=user, run_id=run.pk)


# --- checkpoints in storage ----------------------------------------------------------------------


def checkpoint_name(*, run_id: int, epoch: int) -> str:
    return f"runs/{run_id}/epoch-{epoch}.pt"


def _work_dir(run_id: int) -> Path:
    return Path(settings.CRUCIBLE_CACHE_DIR) / "runs" / str(run_id)


def _storage_path(name: str) -> Path | None:
    """The local file behind a storage name (file-system storage), None for remote storage."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None


def checkpoint_local_path(*, name: str) -> Path:
    """A local file holding the stored checkpoint `name`; remote checkpoints are cached on this host."""
    local = _storage_path(name)
    if local is not None:
        if not local.exists():
            raise FileNotFoundError(f"checkpoint {name} is missing from storage")
        return local
    cached = Path(settings.CRUCIBLE_CACHE_DIR) / name
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.name}.{uuid.uuid4().hex}.tmp")
        with default_storage.open(name, "rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(tmp, cached)
    return cached


def _checkpoint_store(*, local: Path, name: str) -> None:
    """Put a checkpoint written by the engine under its storage name (replacing one from an earlier
    delivery of the same task)."""
    target = _storage_path(name)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
        return
    if default_storage.exists(name):
        default_storage.delete(name)
    with local.open("rb") as fh:
        saved = default_storage.save(name, File(fh))
    if saved != name:
        raise RuntimeError(f"storage saved checkpoint {name} as {saved}")
    # The engine's file stays as this worker's cached copy.
    cached = Path(settings.CRUCIBLE_CACHE_DIR) / name
    if cached != local:
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, cached)


# --- execution (the Celery task's body) ----------------------------------------------------------


class _RunReporter:
    """The engine's callbacks for one run: throttled progress writes, abort polls, epoch rows."""

    def __init__(self, run: TrainingRun, config: TrainConfig):
        self.run_id = run.pk
        self.config = config
        self.next_write = 0.0
        self.next_poll = 0.0

    def on_progress(self, done: int, total: int, images_per_sec: float) -> None:
        now = time.monotonic()
        if now < self.next_write:
            return
        self.next_write = now + PROGRESS_WRITE_INTERVAL_S
        remaining = max(total - done, 0) * self.config.batch_size
        TrainingRun.objects.filter(pk=self.run_id).update(
            progress=min(max(done / total, 0.0), 1.0) if total else 0.0,
            images_per_sec=images_per_sec or None,
            eta_seconds=remaining / images_per_sec if images_per_sec > 0 else None,
        )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now < self.next_poll:
            return False
        self.next_poll = now + ABORT_POLL_INTERVAL_S
        return TrainingRun.objects.filter(pk=self.run_id, abort_requested=True).exists()

    def on_epoch(self, result: EpochResult, path: Path) -> None:
        name = checkpoint_name(run_id=self.run_id, epoch=result.epoch)
        _checkpoint_store(local=path, name=name)
        metrics = asdict(result)
        epoch = metrics.pop("epoch")
        with transaction.atomic():
            Epoch.objects.update_or_create(
                run_id=self.run_id, epoch=epoch, defaults={**metrics, "checkpoint_name": name}
            )
            TrainingRun.objects.filter(pk=self.run_id).update(
                current_epoch=epoch, progress=min(epoch / self.config.epochs, 1.0)
            )


def _run_claim(run_id: int) -> TrainingRun | None:
    """Lock the run and mark it running; None when there is nothing to do."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in TrainingRun.FINISHED:
            return None
        if run.abort_requested:
            run.status = TrainingRun.Status.ABORTED
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "finished_at"])
            return None
        run.status = TrainingRun.Status.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.error = ""
        run.save(update_fields=["status", "started_at", "error"])
    return run


def _run_finish(run_id: int, *, status: str, error: str = "") -> None:
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "eta_seconds": None, "error": error}
    if status == TrainingRun.Status.DONE:
        fields["progress"] = 1.0
    TrainingRun.objects.filter(pk=run_id).exclude(status__in=TrainingRun.FINISHED).update(**fields)


def _readable_error(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"a file the run needs is missing: {exc.filename or exc}"
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "the GPU ran out of memory: use a smaller batch_size"
    if isinstance(exc, MemoryError):
        return "the worker ran out of memory: use a smaller batch_size"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def training_run_execute(*, run_id: int) -> None:
    """Train run `run_id` on this worker (the body of the `training.run` task).

    Idempotent: a finished run is left alone, and a run whose worker died is resumed from its last
    checkpoint when the task is delivered again. Failures end the run as failed with a readable
    error; the traceback goes to the worker's log only.
    """
    from curation.selectors import dataset_shard_dir

    run = _run_claim(run_id)
    if run is None:
        return
    torch.set_num_threads(settings.CRUCIBLE_TORCH_THREADS)
    try:
        config = TrainConfig.from_dict(_recorded_config(run))
        version = DatasetVersion.objects.get(pk=run.dataset_version_id)
        data = TrainData.from_dir(dataset_shard_dir(version=version), num_classes=len(version.class_names))
        resume_from = init_from = None
        last = Epoch.objects.filter(run_id=run_id).order_by("-epoch").first()
        if last is not None:
            resume_from = checkpoint_local_path(name=last.checkpoint_name)
        elif run.parent_run_id is not None:
            parent = Epoch.objects.get(run_id=run.parent_run_id, epoch=run.parent_epoch)
            init_from = checkpoint_local_path(name=parent.checkpoint_name)
        TrainingRun.objects.filter(pk=run_id).update(device_used=device_name(resolve_device(run.device)))
        reporter = _RunReporter(run, config)
        work_dir = _work_dir(run_id)
        result = train(
            data=data,
            config=config,
            seed=run.seed,
            checkpoint_dir=work_dir,
            device=run.device,
            init_from=init_from,
            resume_from=resume_from,
            on_progress=reporter.on_progress,
            should_stop=reporter.should_stop,
            on_epoch=reporter.on_epoch,
        )
    except Exception as exc:
        logger.exception("training run %s failed", run_id)
        _run_finish(run_id, status=TrainingRun.Status.FAILED, error=_readable_error(exc))
        return
    if result.skipped_weights:
        logger.info("run %s: layers not taken from the parent: %s", run_id, ", ".join(result.skipped_weights))
    _run_finish(run_id, status=TrainingRun.Status.ABORTED if result.stopped else TrainingRun.Status.DONE)


# --- classification ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _predictor(path: str, mtime_ns: int) -> Predictor:
    return Predictor.load(Path(path), device="cpu")


def _predictor_for(epoch: Epoch) -> Predictor:
    path = checkpoint_local_path(name=epoch.checkpoint_name)
    return _predictor(str(path), path.stat().st_mtime_ns)


def _prepare(version: DatasetVersion, data: bytes) -> tuple[np.ndarray, list[str], list[dict[str, str]]]:
    """Decode and preprocess one uploaded image exactly as the dataset's shards were made."""
    decoded = decode(data, max_pixels=settings.CRUCIBLE_MAX_IMAGE_PIXELS)
    array, steps = preprocess(
        decoded.image,
        channels=version.channels,
        width=version.width,
        height=version.height,
        resize_mode=version.resize_mode,
        fill_seed=hashlib.sha256(data).digest(),  # as the shards: the same file gives the same noise
    )
    warnings = compare_to_stats(decoded, array, version.stats, channels=version.channels)
    return array, steps, warnings


def _top(probs: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[:TOP_K]
    return [{"label": class_names[i], "probability": float(probs[i])} for i in order]


def training_run_classify(*, run: TrainingRun, user: User, data: bytes, epoch: int | None = None) -> dict[str, Any]:
    """Classify one image with `run` at `epoch` (the last finished one when None).

    Returns {run, epoch, top (5 or fewer labels with probabilities), preprocessing (the steps the
    image needed to look like the training data), warnings (how it differs from the training data)}.
    """
    require_read(user=user, project=run.project)
    found = training_run_epoch_get(run=run, epoch=epoch)
    version = run.dataset_version
    try:
        array, steps, warnings = _prepare(version, data)
    except ImageError as exc:
        raise ValidationFailed(f"image: {exc.reason}", code="unreadable_image", fields={"image": exc.reason})
    probs = _predictor_for(found).predict_proba(array[None])[0]
    return {
        "run": run.pk,
        "epoch": found.epoch,
        "top": _top(probs, version.class_names),
        "preprocessing": steps,
        "warnings": warnings,
    }


def _zip_members(archive: IO[bytes], class_names: list[str]) -> list[tuple[str, bytes, str | None]]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise ValidationFailed("file: not a zip archive", code="not_a_zip", fields={"file": "not a zip archive"})
    members = []
    total = 0
    known = set(class_names)
    with zf:
        for info in zf.infolist():
            path = PurePosixPath(info.filename)
            if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
                continue
            total += info.file_size
            if len(members) >= MAX_CLASSIFY_FILES or total > settings.CRUCIBLE_MAX_UPLOAD_BYTES:
                raise ValidationFailed(
                    f"file: more than {MAX_CLASSIFY_FILES} images or {settings.CRUCIBLE_MAX_UPLOAD_BYTES} bytes",
                    code="too_large",
                    fields={"file": "too large"},
                )
            folder = path.parent.name if len(path.parts) > 1 else ""
            members.append((info.filename, zf.read(info), folder if folder in known else None))
    return members


def training_run_classify_many(
    *,
    run: TrainingRun,
    user: User,
    archive: IO[bytes] | None = None,
    files: list[tuple[str, bytes]] | None = None,
    epoch: int | None = None,
) -> dict[str, Any]:
    """Classify a zip of images (a class subfolder gives an image its label) or several files.

    Returns {run, epoch, results: [{name, label, top, warnings}], accuracy, confusion: {labels, matrix}};
    accuracy and confusion cover the images whose folder names one of the dataset's classes, and are
    None when there are none. An unreadable file gets an `unreadable` warning and no prediction.
    """
    require_read(user=user, project=run.project)
    found = training_run_epoch_get(run=run, epoch=epoch)
    version = run.dataset_version
    class_names = list(version.class_names)
    if archive is not None:
        items = _zip_members(archive, class_names)
    else:
        items = [(name, data, None) for name, data in files or []]
    if not items:
        raise ValidationFailed("no images given", code="no_images", fields={"file": "no images"})
    if len(items) > MAX_CLASSIFY_FILES:
        raise ValidationFailed(f"more than {MAX_CLASSIFY_FILES} images", code="too_large")
    predictor = _predictor_for(found)
    index = {name: i for i, name in enumerate(class_names)}
    k = len(class_names)
    matrix = np.zeros((k, k), dtype=np.int64)
    results: list[dict[str, Any]] = []
    chunk = 256
    for start in range(0, len(items), chunk):
        arrays, slots = [], []
        for name, data, label in items[start : start + chunk]:
            try:
                array, _, warnings = _prepare(version, data)
            except ImageError as exc:
                results.append(
                    {
                        "name": name,
                        "label": label,
                        "top": [],
                        "warnings": [
                            {"code": "unreadable", "message": exc.reason, "advice": "use a PNG, JPEG, BMP or PPM image"}
                        ],
                    }
                )
                continue
            results.append({"name": name, "label": label, "top": [], "warnings": warnings})
            arrays.append(array)
            slots.append(len(results) - 1)
        if arrays:
            probs = predictor.predict_proba(np.stack(arrays))
            for slot, p in zip(slots, probs, strict=True):
                results[slot]["top"] = _top(p, class_names)
                label = results[slot]["label"]
                if label is not None:
                    matrix[index[label], int(np.argmax(p))] += 1
    labelled = int(matrix.sum())
    return {
        "run": run.pk,
        "epoch": found.epoch,
        "results": results,
        "accuracy": float(np.trace(matrix)) / labelled if labelled else None,
        "confusion": {"labels": class_names, "matrix": matrix.tolist()} if labelled else None,
    }


# --- model archive -------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def training_run_model_archive(*, run: TrainingRun, user: User, epoch: int | None = None) -> tuple[str, IO[bytes]]:
    """The model of `run` at `epoch` as a tar.gz: weights.pt (a state_dict), preprocessing.json (how
    to prepare an input: the dataset's spec, the mean subtracted and the 1/255 scale), mean.npy (that
    mean, when the run subtracted one), labels.txt (class names by output index) and info.json (run,
    epoch, metrics, seed, dataset hash, network, config, lineage).
    Returns the file name and an open temporary file positioned at its start."""
    require_read(user=user, project=run.project)
    found = training_run_epoch_get(run=run, epoch=epoch)
    ckpt = load_checkpoint(checkpoint_local_path(name=found.checkpoint_name))
    version = run.dataset_version
    weights = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in ckpt["model"].items()}, weights)  # plain layout for any reader
    mean = ckpt.get("mean")  # None: trained without one (or before checkpoints kept it)
    mean_bytes = io.BytesIO()
    if mean is not None:
        np.save(mean_bytes, mean.numpy().astype(np.float32))
    preprocessing = {
        **version.spec,
        "mean_subtraction": "none" if mean is None else ckpt["config"]["mean_subtraction"],
        "mean_file": None if mean is None else "mean.npy",
        "scale": SCALE,
        "layout": "NCHW",
        "input_dtype": "uint8",
        "note": (
            "decode, convert to the channels, resize with resize_mode, convert to float32, subtract "
            "mean_file (float32 in pixel units 0-255, shaped C x H x W or C x 1 x 1) when there is one, "
            "then multiply by scale; nothing else: the run's augmentation (info.json config) applied to "
            "its training batches only, never to validation or inference"
        ),
    }
    info = {
        "run": {"id": run.pk, "name": run.name, "project": run.project.name},
        "epoch": found.epoch,
        "metrics": {
            "train_loss": found.train_loss,
            "val_loss": found.val_loss,
            "val_accuracy": found.val_accuracy,
            "learning_rate": found.learning_rate,
        },
        "seed": run.seed,
        "network": run.config.get("network"),
        "config": _recorded_config(run),
        "dataset": {"id": version.pk, "name": version.name, "content_hash": version.content_hash},
        "num_classes": ckpt["meta"]["num_classes"],
        "lineage": {
            "cloned_from": run.cloned_from_id,
            "parent_run": run.parent_run_id,
            "parent_epoch": run.parent_epoch,
        },
        "device_used": run.device_used,
    }
    out = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the response, which closes it
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        _add_bytes(tar, "weights.pt", weights.getvalue())
        _add_bytes(tar, "preprocessing.json", json.dumps(preprocessing, indent=2).encode())
        if mean is not None:
            _add_bytes(tar, "mean.npy", mean_bytes.getvalue())
        _add_bytes(tar, "labels.txt", "".join(f"{c}\n" for c in version.class_names).encode())
        _add_bytes(tar, "info.json", json.dumps(info, indent=2).encode())
    out.seek(0)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run.name)
    return f"{safe}-ep{found.epoch}.tar.gz", out


__all__ = [
    "NETWORKS",
    "checkpoint_local_path",
    "checkpoint_name",
    "training_run_abort",
    "training_run_classify",
    "training_run_classify_many",
    "training_run_clone",
    "training_run_execute",
    "training_run_model_archive",
    "training_run_start",
]
