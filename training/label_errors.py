"""Label error scans: K-fold cross-validation on the train queue, confident learning on its
out-of-sample probabilities, findings for the suspects and the top ones sent back for relabelling.

The compute is `training.engine.crossval` (plain PyTorch and cleanlab); this module connects it to the
dataset version's shards, curation's findings and labelling's relabel queue.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from crucible.core.errors import Conflict, ValidationFailed
from crucible.core.models import User
from crucible.core.selectors import require_write
from crucible.core.services import audit
from curation.models import DatasetItem, DatasetVersion, ProjectAsset
from training.engine import TrainConfig
from training.engine.crossval import Rows, Stopped, label_suspects, out_of_sample_probs
from training.engine.loop import device_name, resolve_device
from training.models import LabelErrorScan

logger = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1
DEFAULT_CONFIG = {"network": "lenet", "epochs": 5, "lr_step_epochs": 4}
SPLITS = ("train", "val", "test")
_KEYS = "1234567890abcdefghijklmnopqrstuvwxyz"


def label_error_scan_start(
    *,
    version: DatasetVersion,
    user: User,
    folds: int = 5,
    epochs: int = 5,
    network: str = "lenet",
    relabel_top: int = 50,
    seed: int | None = None,
    device: str = "auto",
) -> LabelErrorScan:
    """Queue a scan of `version` on the train queue (engineers and admins)."""
    from training.tasks import label_errors_task

    require_write(user=user, project=version.project)
    errors: dict[str, str] = {}
    if version.status != DatasetVersion.Status.READY:
        raise Conflict(f"dataset {version.name!r} is {version.status}, not ready", code="dataset_not_ready")
    if not 2 <= folds <= 20:
        errors["folds"] = "between 2 and 20"
    if not 1 <= epochs <= 200:
        errors["epochs"] = "between 1 and 200"
    if relabel_top < 0:
        errors["relabel_top"] = "not negative"
    if device not in ("auto", "cpu", "cuda"):
        errors["device"] = "auto, cpu or cuda"
    config = TrainConfig.from_dict({**DEFAULT_CONFIG, "network": network, "epochs": epochs})
    errors.update(config.check())
    if seed is not None and not 0 <= seed <= MAX_SEED:
        errors["seed"] = f"between 0 and {MAX_SEED}"
    if errors:
        raise ValidationFailed("invalid label error scan", code="invalid_scan", fields=errors)
    counts: dict[str, int] = {}
    for split in version.counts.values():
        for label, n in split.items():
            counts[label] = counts.get(label, 0) + int(n)
    present = [n for n in counts.values() if n > 0]
    if len(present) < 2 or min(present) < folds:
        raise ValidationFailed(
            f"every class needs at least {folds} items for {folds} folds",
            code="too_few_items",
            fields={"folds": f"the rarest class has {min(present) if present else 0} items"},
        )
    with transaction.atomic():
        scan = LabelErrorScan.objects.create(
            project=version.project,
            dataset_version=version,
            config=config.to_dict(),
            folds=folds,
            seed=secrets.randbelow(MAX_SEED) if seed is None else seed,
            device=device,
            relabel_top=relabel_top,
            created_by=user,
        )
        audit(actor=user, project=version.project, verb="label_errors.scan", target=version.name, scan=scan.pk)
        transaction.on_commit(lambda: label_errors_task.delay(scan_id=scan.pk))
    return scan


def _claim(scan_id: int) -> LabelErrorScan | None:
    with transaction.atomic():
        scan = LabelErrorScan.objects.select_for_update().filter(pk=scan_id).first()
        if scan is None or scan.status in LabelErrorScan.FINISHED:
            return None
        scan.status = LabelErrorScan.Status.RUNNING
        scan.started_at = timezone.now()
        scan.folds_done = 0
        scan.save(update_fields=["status", "started_at", "folds_done"])
    return scan


def _finish(scan_id: int, **fields: Any) -> None:
    fields.setdefault("status", LabelErrorScan.Status.DONE)
    LabelErrorScan.objects.filter(pk=scan_id).exclude(status__in=LabelErrorScan.FINISHED).update(
        finished_at=timezone.now(), **fields
    )


def _load_items(version: DatasetVersion) -> tuple[Rows, np.ndarray, list[int]]:
    """Every item of the version (train, val and test shards together, npy or encoded): images as a
    lazy view read a batch at a time, label indices, and their project asset ids, in one order."""
    from curation.selectors import dataset_split_arrays

    parts, ys, asset_ids = [], [], []
    for split in SPLITS:
        x, y = dataset_split_arrays(version=version, split=split)
        if len(y) == 0:
            continue
        parts.append(x)
        ys.append(np.asarray(y, dtype=np.int64))
        by_position = dict(
            DatasetItem.objects.filter(version=version, split=split).values_list("position", "asset_id").order_by()
        )
        asset_ids.extend(by_position[i] for i in range(len(y)))
    project_assets = dict(
        ProjectAsset.objects.filter(project_id=version.project_id, asset_id__in=set(asset_ids))
        .values_list("asset_id", "pk")
        .order_by()
    )
    return Rows(parts), np.concatenate(ys), [project_assets[a] for a in asset_ids]


def _ensure_schema(scan: LabelErrorScan, class_names: list[str]) -> bool:
    """A relabel queue needs the project's label schema; a project without one gets a single-label
    schema of the version's classes. False when that is not possible (too many classes for keys)."""
    from labeling.models import LabelSchema
    from labeling.services import label_schema_set

    if LabelSchema.objects.filter(project_id=scan.project_id).exists():
        return True
    if len(class_names) > len(_KEYS) or scan.created_by is None:
        return False
    classes = [{"name": name, "key": key} for name, key in zip(class_names, _KEYS, strict=False)]
    label_schema_set(project=scan.project, user=scan.created_by, classes=classes)
    return True


def _record_findings(*, scan: LabelErrorScan, model: str, records: list[dict], relabelled: set[int]) -> None:
    """One finding of kind label_error per suspect (keyed by the asset's sha256, so a later scan updates
    it), with its provenance: the scan, the model, the score and the suggested class."""
    from curation.findings import findings_upsert

    sha = dict(
        ProjectAsset.objects.filter(pk__in=[r["project_asset_id"] for r in records])
        .values_list("pk", "asset__sha256")
        .order_by()
    )
    for record in records:
        evidence = {
            **record,
            "scan": scan.pk,
            "model": model,
            "reason": f"{model} gives {record['given']!r} a probability of {record['quality']:.3f}; "
            f"it suggests {record['suggested']!r} ({record['confidence']:.3f})",
            "sent_to_relabel": record["project_asset_id"] in relabelled,
        }
        findings_upsert(
            project=scan.project,
            kind="label_error",
            key=sha[record["project_asset_id"]],
            evidence=evidence,
            project_asset_id=record["project_asset_id"],
        )


def label_error_scan_execute(*, scan_id: int) -> None:
    """Run scan `scan_id` on this worker (the body of the `training.label_errors` task). Idempotent:
    a finished scan is left alone; a redelivered one starts again and upserts the same findings."""

    from labeling.services import queue_items_relabel

    scan = _claim(scan_id)
    if scan is None:
        return
    torch.set_num_threads(settings.CRUCIBLE_TORCH_THREADS)
    work_dir = Path(settings.CRUCIBLE_CACHE_DIR) / "label-errors" / str(scan_id)
    started = time.monotonic()
    try:
        version = DatasetVersion.objects.get(pk=scan.dataset_version_id)
        x, y, project_asset_ids = _load_items(version)
        config = TrainConfig.from_dict(scan.config)
        LabelErrorScan.objects.filter(pk=scan_id).update(
            items=len(y), device_used=device_name(resolve_device(scan.device))
        )

        def on_fold(done: int, total: int) -> None:
            LabelErrorScan.objects.filter(pk=scan_id).update(folds_done=done)

        probs = out_of_sample_probs(
            x=x,
            y=y,
            num_classes=len(version.class_names),
            config=config,
            seed=scan.seed,
            work_dir=work_dir,
            folds=scan.folds,
            device=scan.device,
            on_fold=on_fold,
        )
        suspects = label_suspects(labels=y, probs=probs)
        model = f"{config.network}, {config.epochs} epochs, {scan.folds}-fold cross-validation"
        records = [
            {
                "project_asset_id": project_asset_ids[s.index],
                "given": version.class_names[s.given],
                "suggested": version.class_names[s.suggested],
                "quality": round(s.quality, 6),
                "confidence": round(s.confidence, 6),
                "rank": rank,
            }
            for rank, s in enumerate(suspects, start=1)
        ]
        top = [r["project_asset_id"] for r in records[: scan.relabel_top]]
        _record_findings(scan=scan, model=model, records=records, relabelled=set(top))
        sent = 0
        if top and _ensure_schema(scan, version.class_names) and scan.created_by is not None:
            reason = f"label error scan {scan_id} ({model}): the top {len(top)} suspects by label quality"
            sent = queue_items_relabel(project=scan.project, user=scan.created_by, project_asset_ids=top, reason=reason)
    except Stopped:
        _finish(scan_id, status=LabelErrorScan.Status.FAILED, error="stopped")
        return
    except Exception as exc:
        logger.exception("label error scan %s failed", scan_id)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _finish(scan_id, status=LabelErrorScan.Status.FAILED, error=text)
        return
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    logger.info("label error scan %s: %d suspects in %.1f s", scan_id, len(records), time.monotonic() - started)
    _finish(scan_id, suspects=len(records), sent_to_relabel=sent, folds_done=scan.folds)
