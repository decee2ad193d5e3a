"""Writes of labelling: label schemas, queue items, leases (claim, heartbeat, release, expiry), annotations.

Lock order, the same everywhere so that no two of these can deadlock: lease rows, then queue item rows,
then the project asset. A claim locks queue items only and inserts new lease rows.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from crucible.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crucible.core.models import Project, Role, User
from crucible.core.selectors import require_role, require_write
from crucible.core.services import audit
from curation.labels import LabelChange, asset_label_set, asset_labels_set
from curation.models import LabelEvent, ProjectAsset
from labeling import gold, results
from labeling.models import (
    Annotation,
    AnnotationStatus,
    AnnotatorStatus,
    LabelClass,
    LabelSchema,
    Lease,
    QueueItem,
    QueueOrder,
    QueueSettings,
    ReleaseReason,
    ReviewTask,
)

# How many live leases an annotator holds in a project: the item on screen and two prefetched.
LEASES_PER_ANNOTATOR = 3
_ALL_ROLES = set(Role.values)
# First key of pg_advisory_xact_lock(int, int): claims of one annotator run one at a time.
_CLAIM_LOCK_CLASS = 0x1ABE
# Draws which free places are gold and which submissions are sampled for review (not security).
_rng = random.Random()


def lease_ttl_seconds() -> int:
    return int(settings.LABELING_LEASE_TTL)


# Label schemas


def _schema_input(classes: list[dict[str, str]]) -> tuple[list[str], list[str], dict[str, str]]:
    """Names, keys and {old name: new name} of the requested classes; raises on bad input."""
    errors: dict[str, Any] = {}
    names: list[str] = []
    keys: list[str] = []
    renames: dict[str, str] = {}
    if not classes:
        errors["classes"] = "at least one class"
    for i, cls in enumerate(classes):
        name = str(cls.get("name", "")).strip() if isinstance(cls, dict) else ""
        key = str(cls.get("key", "")) if isinstance(cls, dict) else ""
        old = cls.get("renamed_from") if isinstance(cls, dict) else None
        if not name or len(name) > 200:
            errors[f"classes[{i}].name"] = "a name of 1 to 200 characters"
        elif name in names:
            errors[f"classes[{i}].name"] = f"duplicate name {name!r}"
        if len(key) != 1 or key.isspace():
            errors[f"classes[{i}].key"] = "one keyboard character"
        elif key in keys:
            errors[f"classes[{i}].key"] = f"duplicate key {key!r}"
        if old not in (None, "") and str(old).strip() != name:
            old = str(old).strip()
            if old in renames:
                errors[f"classes[{i}].renamed_from"] = f"{old!r} is renamed twice"
            renames[old] = name
        names.append(name)
        keys.append(key)
    if errors:
        raise ValidationFailed("invalid label classes", code="invalid_schema", fields=errors)
    return names, keys, renames


def _used_classes(project: Project) -> set[str]:
    """Every class name an annotation, a consensus or a gold answer of the project uses."""
    used: set[str] = set()
    rows = Annotation.objects.filter(item__project=project).exclude(status=Annotation.Status.WITHDRAWN)
    for result in rows.values_list("result", flat=True).iterator(chunk_size=5000):
        if isinstance(result, dict):
            used |= results.result_classes(_kind_of_result(result), result)
    items = QueueItem.objects.filter(project=project).filter(
        Q(consensus_result__isnull=False) | Q(gold_result__isnull=False)
    )
    for pair in items.values_list("consensus_result", "gold_result").iterator(chunk_size=5000):
        for result in pair:
            if isinstance(result, dict):
                used |= results.result_classes(_kind_of_result(result), result)
    return used


def _kind_of_result(result: dict) -> str:
    if "labels" in result:
        return results.MULTI_LABEL
    if "boxes" in result:
        return results.BOXES
    return results.SINGLE_LABEL


@transaction.atomic
def label_schema_set(
    *,
    project: Project,
    user: User,
    classes: list[dict[str, str]],
    kind: str = results.SINGLE_LABEL,
    removed: dict[str, dict[str, str]] | None = None,
) -> LabelSchema:
    """Replace the project's schema: its kind and classes ([{"name", "key", "renamed_from"?}], in order).

    A class with `renamed_from` takes over an existing class: annotations, consensus, gold answers and
    asset labels are rewritten to the new name. A class that is used and neither kept, renamed nor
    named in `removed` (`{"old": {"action": "drop"}}` or `{"old": {"action": "merge", "into": "other"}}`)
    is refused with 409 `class_in_use`; changing the kind once annotations exist with 409 `kind_in_use`.
    Dropping a class removes it from results; a single-label annotation of a dropped class is withdrawn.
    """
    require_write(user=user, project=project)
    if kind not in results.KINDS:
        raise ValidationFailed(
            f"unknown schema kind {kind!r}",
            code="invalid_schema",
            fields={"kind": f"one of {', '.join(results.KINDS)}"},
        )
    names, keys, renames = _schema_input(classes)
    removed = removed or {}
    schema, _ = LabelSchema.objects.select_for_update().get_or_create(project=project)
    old_names = set(schema.classes.values_list("name", flat=True))
    errors: dict[str, str] = {}
    for old in renames:
        if old not in old_names:
            errors[f"renamed_from.{old}"] = f"{old!r} is not a class of the schema"
        elif old in names:
            errors[f"renamed_from.{old}"] = f"{old!r} is still a class; rename it to a new name"
    mapping: dict[str, str | None] = dict(renames)
    for old, spec in removed.items():
        action = spec.get("action") if isinstance(spec, dict) else None
        if old in names:
            errors[f"removed.{old}"] = f"{old!r} is still a class"
        elif action == "drop":
            mapping[old] = None
        elif action == "merge":
            into = spec.get("into")
            if into not in names:
                errors[f"removed.{old}"] = f"merge into one of the new classes, not {into!r}"
            else:
                mapping[old] = into
        else:
            errors[f"removed.{old}"] = 'one of {"action": "drop"} or {"action": "merge", "into": CLASS}'
    if errors:
        raise ValidationFailed("invalid label schema change", code="invalid_schema", fields=errors)
    used = _used_classes(project)
    in_use = (
        Annotation.objects.filter(item__project=project).exists()
        or QueueItem.objects.filter(project=project, is_gold=True).exists()
    )
    if kind != schema.kind and in_use:
        raise Conflict(
            f"annotations of kind {schema.kind} exist; the schema's kind cannot change to {kind}",
            code="kind_in_use",
            fields={"kind": schema.kind},
        )
    orphans = sorted(name for name in used if name not in names and name not in mapping)
    if orphans:
        raise Conflict(
            f"annotations use the class(es) {', '.join(orphans)}; rename, merge or drop them",
            code="class_in_use",
            fields={"classes": orphans},
        )
    if mapping:
        _rewrite_classes(project=project, user=user, kind=kind, mapping=mapping)
    schema.kind = kind
    LabelClass.objects.filter(schema=schema).delete()
    LabelClass.objects.bulk_create(
        LabelClass(schema=schema, name=name, key=key, position=i)
        for i, (name, key) in enumerate(zip(names, keys, strict=True))
    )
    schema.save(update_fields=["kind", "updated_at"])
    audit(
        actor=user,
        project=project,
        verb="label_schema.set",
        target=project.name,
        kind=kind,
        classes=names,
        renamed=renames,
        removed={old: new for old, new in mapping.items() if old not in renames},
    )
    return schema


def _rewrite_classes(*, project: Project, user: User, kind: str, mapping: dict[str, str | None]) -> None:
    """Apply renames, merges and drops to annotations, queue items and asset labels of the project."""
    annotations = list(Annotation.objects.filter(item__project=project).only("pk", "result", "status"))
    changed: list[Annotation] = []
    for a in annotations:
        if not isinstance(a.result, dict) or not results.result_classes(kind, a.result) & set(mapping):
            continue
        new = results.rename_classes(kind, a.result, mapping)
        if new is None:  # a single label dropped: nothing of the answer is left
            a.status = Annotation.Status.WITHDRAWN
        else:
            a.result = new
        changed.append(a)
    Annotation.objects.bulk_update(changed, ["result", "status"], batch_size=1000)
    items = list(
        QueueItem.objects.filter(project=project)
        .filter(Q(consensus_result__isnull=False) | Q(gold_result__isnull=False) | Q(consensus_label__isnull=False))
        .only("pk", "consensus_result", "gold_result", "consensus_label", "is_gold")
    )
    for item in items:
        if item.consensus_label is not None and item.consensus_label in mapping:
            item.consensus_label = mapping[item.consensus_label]
        if isinstance(item.consensus_result, dict):
            item.consensus_result = results.rename_classes(kind, item.consensus_result, mapping)
        if isinstance(item.gold_result, dict):
            gold = results.rename_classes(kind, item.gold_result, mapping)
            # A gold item whose answer was dropped has no answer left: it stops being gold.
            item.gold_result, item.is_gold = (gold, item.is_gold) if gold is not None else (None, False)
    QueueItem.objects.bulk_update(
        items, ["consensus_label", "consensus_result", "gold_result", "is_gold"], batch_size=1000
    )
    changes: list[LabelChange] = []
    assets = ProjectAsset.objects.filter(project=project).filter(
        Q(label__in=list(mapping)) | Q(annotation__isnull=False)
    )
    for pa in assets.only("pk", "label", "annotation").iterator(chunk_size=5000):
        label = mapping.get(pa.label, pa.label) if pa.label else ""
        annotation = pa.annotation
        if isinstance(annotation, dict):
            annotation = results.rename_classes(kind, annotation, mapping)
        changes.append(LabelChange(project_asset_id=pa.pk, label=label or "", annotation=annotation))
    asset_labels_set(changes=changes, actor=user, via="edit")


# Queue items


@transaction.atomic
def queue_items_add(
    *,
    project: Project,
    user: User,
    project_asset_ids: list[int] | None = None,
    priority: int = 0,
    required_annotations: int = 1,
) -> int:
    """Queue assets of the project for labelling; returns how many items were added.

    `project_asset_ids=None` queues every unlabelled asset of the project. Assets that already have
    an open item are skipped.
    """
    require_write(user=user, project=project)
    if not LabelSchema.objects.filter(project=project).exists():
        raise ValidationFailed("set the project's label schema first", code="no_label_schema")
    if required_annotations < 1 or required_annotations > 100:
        raise ValidationFailed(
            "required_annotations is between 1 and 100", fields={"required_annotations": "between 1 and 100"}
        )
    assets = ProjectAsset.objects.filter(project=project)
    if project_asset_ids is None:
        assets = assets.filter(label="")
    else:
        wanted = set(project_asset_ids)
        found = set(assets.filter(pk__in=wanted).values_list("pk", flat=True))
        missing = sorted(wanted - found)
        if missing:
            raise ValidationFailed(
                f"{len(missing)} asset id(s) are not in {project.name!r}",
                code="unknown_asset",
                fields={"project_asset_ids": missing[:20]},
            )
        assets = assets.filter(pk__in=wanted)
    ids = assets.exclude(queue_items__state=QueueItem.State.OPEN).order_by("pk").values_list("pk", flat=True)
    added = 0
    batch: list[QueueItem] = []
    for asset_id in ids.iterator(chunk_size=5000):
        batch.append(
            QueueItem(
                project=project,
                project_asset_id=asset_id,
                priority=priority,
                required_annotations=required_annotations,
            )
        )
        if len(batch) >= 5000:
            added += _insert_items(batch)
            batch = []
    added += _insert_items(batch)
    audit(actor=user, project=project, verb="queue.items_add", target=project.name, added=added, priority=priority)
    return added


def _insert_items(batch: list[QueueItem]) -> int:
    if not batch:
        return 0
    # A concurrent add of the same asset loses to the one-open-item-per-asset constraint.
    QueueItem.objects.bulk_create(batch, ignore_conflicts=True)
    return len(batch)


@transaction.atomic
def queue_settings_set(
    *,
    project: Project,
    user: User,
    order: str = QueueOrder.SEQUENTIAL,
    lease_ttl_seconds: int | None = None,
    gold_rate: float | None = None,
    gold_min_accuracy: float | None = None,
    gold_min_answers: int | None = None,
    gold_window: int | None = None,
    review_rate: float | None = None,
) -> QueueSettings:
    """Set the project's queue order, lease TTL (null: the server's default), gold and review settings
    (None keeps the current value). Engineers and admins."""
    require_write(user=user, project=project)
    errors: dict[str, str] = {}
    if order not in QueueOrder.values:
        errors["order"] = f"one of {', '.join(QueueOrder.values)}"
    if lease_ttl_seconds is not None and not 30 <= lease_ttl_seconds <= 86400:
        errors["lease_ttl_seconds"] = "between 30 and 86400 seconds, or null"
    for name, value in (
        ("gold_rate", gold_rate),
        ("gold_min_accuracy", gold_min_accuracy),
        ("review_rate", review_rate),
    ):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            errors[name] = "between 0 and 1"
    if gold_min_answers is not None and not 1 <= gold_min_answers <= 10000:
        errors["gold_min_answers"] = "between 1 and 10000"
    if gold_window is not None and not 1 <= gold_window <= 10000:
        errors["gold_window"] = "between 1 and 10000"
    if errors:
        code = "invalid_order" if "order" in errors else "invalid_queue_settings"
        raise ValidationFailed("invalid queue settings", code=code, fields=errors)
    defaults: dict[str, Any] = {"order": order, "lease_ttl_seconds": lease_ttl_seconds}
    optional = {
        "gold_rate": gold_rate,
        "gold_min_accuracy": gold_min_accuracy,
        "gold_min_answers": gold_min_answers,
        "gold_window": gold_window,
        "review_rate": review_rate,
    }
    defaults.update({k: v for k, v in optional.items() if v is not None})
    obj, _ = QueueSettings.objects.update_or_create(project=project, defaults=defaults)
    audit(
        actor=user,
        project=project,
        verb="queue.settings_set",
        target=project.name,
        order=order,
        ttl=lease_ttl_seconds,
        **{k: v for k, v in optional.items() if v is not None},
    )
    return obj


def queue_uncertainty_set(*, project: Project, scores: dict[int, float]) -> int:
    """Store the training side's uncertainty per project asset on its open item (higher: less confident,
    claimed first under the `uncertainty` order); returns how many items were updated. Assets without an
    open item are ignored. No user: this is called by the training code, not through the API.
    """
    clean: dict[int, float] = {}
    for asset_id, score in scores.items():
        value = float(score)
        if not math.isfinite(value):
            raise ValidationFailed(
                f"uncertainty of asset {asset_id} is not a finite number",
                code="invalid_uncertainty",
                fields={"scores": [asset_id]},
            )
        clean[int(asset_id)] = value
    updated = 0
    asset_ids = sorted(clean)
    for start in range(0, len(asset_ids), 5000):
        chunk = asset_ids[start : start + 5000]
        with transaction.atomic():
            items = list(
                QueueItem.objects.filter(project=project, state=QueueItem.State.OPEN, project_asset_id__in=chunk)
                .order_by("pk")
                .only("pk", "project_asset_id")
            )
            for item in items:
                item.uncertainty = clean[item.project_asset_id]
            QueueItem.objects.bulk_update(items, ["uncertainty"], batch_size=1000)
            updated += len(items)
    return updated


@transaction.atomic
def queue_items_relabel(*, project: Project, user: User, project_asset_ids: list[int], reason: str) -> int:
    """Send assets back for relabelling; returns how many items were marked.

    An open item is marked `relabel`; a done item is re-opened, marked, and requires one annotation more
    (so `claimed` stays under `required_annotations` and earlier annotators, who annotated it already,
    are not asked again); an asset without an item gets a new one, marked.
    """
    require_write(user=user, project=project)
    if not LabelSchema.objects.filter(project=project).exists():
        raise ValidationFailed("set the project's label schema first", code="no_label_schema")
    reason = str(reason or "").strip()
    if not reason or len(reason) > 500:
        raise ValidationFailed("a reason of 1 to 500 characters", code="invalid_reason", fields={"reason": "required"})
    wanted = sorted(set(project_asset_ids))
    found = set(ProjectAsset.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True))
    missing = [pk for pk in wanted if pk not in found]
    if missing:
        raise ValidationFailed(
            f"{len(missing)} asset id(s) are not in {project.name!r}",
            code="unknown_asset",
            fields={"project_asset_ids": missing[:20]},
        )
    items = (
        QueueItem.objects.select_for_update()
        .filter(project=project, project_asset_id__in=wanted, is_gold=False)
        .order_by("pk")
    )
    latest: dict[int, QueueItem] = {}
    for item in items:
        current = latest.get(item.project_asset_id)
        # The open item if there is one, else the newest done one.
        if current is None or current.state != QueueItem.State.OPEN:
            latest[item.project_asset_id] = item
    marked = 0
    new: list[QueueItem] = []
    for asset_id in wanted:
        item = latest.get(asset_id)
        if item is None:
            new.append(QueueItem(project=project, project_asset_id=asset_id, relabel=True))
            continue
        if item.state == QueueItem.State.OPEN:
            marked += QueueItem.objects.filter(pk=item.pk).update(relabel=True)
        else:
            marked += QueueItem.objects.filter(pk=item.pk, state=QueueItem.State.DONE).update(
                relabel=True, state=QueueItem.State.OPEN, required_annotations=F("required_annotations") + 1
            )
    marked += _insert_items(new)
    audit(actor=user, project=project, verb="queue.items_relabel", target=project.name, marked=marked, reason=reason)
    return marked


# Leases

# The claim's ORDER BY per queue order: chosen from this whitelist by the project's stored order, never
# built from request text. Each has a partial index on open items in the same column order
# (labeling.models.QueueItem.Meta.indexes).
_ORDER_BY = {
    QueueOrder.SEQUENTIAL: "q.priority DESC, q.id",
    QueueOrder.RANDOM: "q.priority DESC, q.random_key, q.id",
    QueueOrder.UNCERTAINTY: "q.uncertainty DESC NULLS LAST, q.priority DESC, q.id",
    QueueOrder.RELABEL_FIRST: "q.relabel DESC, q.priority DESC, q.id",
}

# One statement. `fresh` are items the annotator has not seen, in the project's order; `later` are items
# they skipped with mode "later", taken only for the places `fresh` leaves empty. A lease of the annotator
# that is live, or skipped with "requeue" or "drop", keeps an item from them for good; so does their
# annotation.
_CLAIM_SQL = """
WITH fresh AS (
    SELECT q.id FROM {item} q
    WHERE q.project_id = %(project)s AND q.state = 'open' AND NOT q.is_gold AND q.claimed < q.required_annotations
      AND NOT EXISTS (
          SELECT 1 FROM {lease} l
          WHERE l.item_id = q.id AND l.annotator_id = %(annotator)s
            AND (l.released_at IS NULL OR l.release_reason IN ('skipped', 'dropped', 'skipped_later'))
      )
      AND NOT EXISTS (SELECT 1 FROM {annotation} a WHERE a.item_id = q.id AND a.annotator_id = %(annotator)s)
    ORDER BY {order}
    LIMIT %(n)s{lock}
), later AS (
    SELECT q.id FROM {item} q
    WHERE q.project_id = %(project)s AND q.state = 'open' AND NOT q.is_gold AND q.claimed < q.required_annotations
      AND EXISTS (
          SELECT 1 FROM {lease} l
          WHERE l.item_id = q.id AND l.annotator_id = %(annotator)s AND l.release_reason = 'skipped_later'
      )
      AND NOT EXISTS (
          SELECT 1 FROM {lease} l
          WHERE l.item_id = q.id AND l.annotator_id = %(annotator)s
            AND (l.released_at IS NULL OR l.release_reason IN ('skipped', 'dropped'))
      )
      AND NOT EXISTS (SELECT 1 FROM {annotation} a WHERE a.item_id = q.id AND a.annotator_id = %(annotator)s)
    ORDER BY {order}
    LIMIT (SELECT CASE WHEN %(n)s > c THEN %(n)s - c ELSE 0 END FROM (SELECT count(*) AS c FROM fresh) f){lock}
)
UPDATE {item} SET claimed = claimed + 1
WHERE id IN (SELECT id FROM fresh UNION ALL SELECT id FROM later)
RETURNING id, priority, random_key, uncertainty, relabel
"""


def _sort_key(order: str, later: set[int]):
    def key(row: tuple) -> tuple:
        item_id, priority, rkey, uncertainty, relabel = row
        first = item_id in later
        if order == QueueOrder.RANDOM:
            return (first, -priority, rkey, item_id)
        if order == QueueOrder.UNCERTAINTY:
            return (first, uncertainty is None, -(uncertainty or 0.0), -priority, item_id)
        if order == QueueOrder.RELABEL_FIRST:
            return (first, not relabel, -priority, item_id)
        return (first, -priority, item_id)

    return key


def _claim_items(*, project_id: int, annotator_id: int, n: int, skip_locked: bool, order: str) -> list[int]:
    lock = ""
    if connection.vendor == "postgresql":
        lock = " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
    sql = _CLAIM_SQL.format(
        item=QueueItem._meta.db_table,
        lease=Lease._meta.db_table,
        annotation=Annotation._meta.db_table,
        lock=lock,
        order=_ORDER_BY[QueueOrder(order)],
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"project": project_id, "annotator": annotator_id, "n": n})
        rows = cursor.fetchall()
    if not rows:
        return []
    later = set(
        Lease.objects.filter(
            item_id__in=[row[0] for row in rows], annotator_id=annotator_id, release_reason=Lease.Reason.SKIPPED_LATER
        ).values_list("item_id", flat=True)
    )
    # RETURNING follows no order: put them back in queue order, so lease ids follow it too.
    return [row[0] for row in sorted(rows, key=_sort_key(order, later))]


def _queue_settings(project_id: int) -> tuple[str, int]:
    """The project's queue order and lease TTL (seconds), defaults where it has set none."""
    row = QueueSettings.objects.filter(project_id=project_id).values_list("order", "lease_ttl_seconds").first()
    order, ttl = row if row is not None else (QueueOrder.SEQUENTIAL, None)
    return order, lease_ttl_seconds() if ttl is None else ttl


def queue_settings_of(project_id: int) -> QueueSettings:
    """The project's settings row, or an unsaved one with the defaults."""
    return QueueSettings.objects.filter(project_id=project_id).first() or QueueSettings(project_id=project_id)


def annotator_paused_check(*, project: Project, annotator: User) -> None:
    """403 `annotator_paused` (with the reason) when the annotator is paused in the project."""
    reason = (
        AnnotatorStatus.objects.filter(project=project, annotator=annotator, paused=True)
        .values_list("reason", flat=True)
        .first()
    )
    if reason is not None:
        raise Forbidden(reason, code="annotator_paused")


def lease_claim_next(*, project: Project, annotator: User, ttl_seconds: int | None = None) -> list[Lease]:
    """The annotator's live leases in the project, topped up to three (one to label, two prefetched).

    Asking twice gives the same leases (each renewed for `ttl_seconds`). New items are claimed by one
    statement: on PostgreSQL an UPDATE of the queue items picked by a `FOR UPDATE SKIP LOCKED`
    subquery, on SQLite the same statement inside the IMMEDIATE transaction that serializes writers.
    Each free place is a gold item with the project's gold rate when the annotator has one they have
    neither answered nor hold (gold items are never counted in `claimed`); gold leases take random
    places among the others. The lease rows are inserted in the same transaction. An empty list means
    no item is left for this annotator; a paused annotator gets 403 `annotator_paused`.
    """
    require_role(user=annotator, project=project, roles=_ALL_ROLES, action="label")
    annotator_paused_check(project=project, annotator=annotator)
    conf = queue_settings_of(project.pk)
    order = conf.order
    ttl = (conf.lease_ttl_seconds or lease_ttl_seconds()) if ttl_seconds is None else ttl_seconds
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                lock_sql = "SELECT pg_advisory_xact_lock(%s::integer, %s::integer)"
                cursor.execute(lock_sql, [_CLAIM_LOCK_CLASS, annotator.pk])
        now = timezone.now()
        expires = now + timedelta(seconds=ttl)
        own = Lease.objects.filter(item__project=project, annotator=annotator, released_at__isnull=True)
        own.update(expires_at=expires)
        held = list(own.order_by("pk").select_related("item__project_asset__asset"))
        wanted = LEASES_PER_ANNOTATOR - len(held)
        if wanted <= 0:
            return held
        n_gold = sum(_rng.random() < conf.gold_rate for _ in range(wanted)) if conf.gold_rate > 0 else 0
        if not held:
            # Keep a place for ordinary work: only it tells whether any is left (see below).
            n_gold = min(n_gold, wanted - 1)
        gold_ids = gold.gold_pick(project_id=project.pk, annotator_id=annotator.pk, n=n_gold)
        wanted -= len(gold_ids)
        ids: list[int] = []
        if wanted > 0:
            ids = _claim_items(
                project_id=project.pk, annotator_id=annotator.pk, n=wanted, skip_locked=True, order=order
            )
            if not ids and not held and not gold_ids and connection.vendor == "postgresql":
                # Every candidate was locked by a concurrent claim: wait for them rather than answer
                # "no items" while items remain.
                ids = _claim_items(
                    project_id=project.pk, annotator_id=annotator.pk, n=wanted, skip_locked=False, order=order
                )
        if wanted > 0 and not ids and not held:
            # No ordinary work is left for this annotator: a gold item handed out alone would give itself away.
            gold_ids = []
        # Gold items take random places, so that a lease's position says nothing of it.
        for gold_id in gold_ids:
            ids.insert(_rng.randint(0, len(ids)), gold_id)
        if ids:
            Lease.objects.bulk_create(Lease(item_id=i, annotator=annotator, expires_at=expires) for i in ids)
            new = Lease.objects.filter(item_id__in=ids, annotator=annotator, released_at__isnull=True)
            held += list(new.select_related("item__project_asset__asset").order_by("pk"))
    return held


def _own_lease(*, lease_id: int, annotator: User) -> Lease:
    lease = Lease.objects.select_related("item").filter(pk=lease_id, annotator=annotator).first()
    if lease is None:
        raise NotFound(f"lease {lease_id} not found")
    return lease


def lease_heartbeat(*, lease_id: int, annotator: User, ttl_seconds: int | None = None) -> Lease:
    """Extend a live lease of the annotator by the lease TTL; 409 `not_leased` once it is released."""
    lease = _own_lease(lease_id=lease_id, annotator=annotator)
    ttl = _queue_settings(lease.item.project_id)[1] if ttl_seconds is None else ttl_seconds
    expires = timezone.now() + timedelta(seconds=ttl)
    if not Lease.objects.filter(pk=lease.pk, released_at__isnull=True).update(expires_at=expires):
        raise Conflict(f"lease {lease_id} is no longer held", code="not_leased")
    lease.expires_at = expires
    return lease


SKIP_MODES = {
    "requeue": ReleaseReason.SKIPPED,
    "later": ReleaseReason.SKIPPED_LATER,
    "drop": ReleaseReason.DROPPED,
}
_MODE_OF_REASON = {reason: mode for mode, reason in SKIP_MODES.items()}


def skip_mode(lease: Lease) -> str | None:
    """The skip mode a released lease records ("requeue", "later", "drop"), None for other releases."""
    return _MODE_OF_REASON.get(lease.release_reason)


@transaction.atomic
def lease_release(*, lease_id: int, annotator: User, mode: str = "requeue") -> Lease:
    """Skip. The item goes back to the queue for others in every mode; for the annotator:
    `requeue` never again, `later` once nothing else is left to them, `drop` never again.
    The mode is recorded as the lease's release reason.
    """
    reason = SKIP_MODES.get(mode)
    if reason is None:
        raise ValidationFailed(
            f"unknown skip mode {mode!r}; one of {', '.join(SKIP_MODES)}",
            code="invalid_skip_mode",
            fields={"mode": f"one of {', '.join(SKIP_MODES)}"},
        )
    lease = _own_lease(lease_id=lease_id, annotator=annotator)
    now = timezone.now()
    released = Lease.objects.filter(pk=lease.pk, released_at__isnull=True).update(
        released_at=now, release_reason=reason
    )
    if not released:
        raise Conflict(f"lease {lease_id} is no longer held", code="not_leased")
    # Gold items are never counted in `claimed`.
    QueueItem.objects.filter(pk=lease.item_id, is_gold=False).update(claimed=F("claimed") - 1)
    lease.released_at, lease.release_reason = now, reason
    return lease


def leases_expire() -> int:
    """Release every lease past its expiry and give its item back; returns how many were released."""
    # Raw SQL takes the database's own datetime format (SQLite stores text).
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic():
        with connection.cursor() as cursor:
            # One statement marks and returns them: a lease submitted or heartbeaten meanwhile is not touched.
            cursor.execute(
                f"UPDATE {Lease._meta.db_table} SET released_at = %s, release_reason = %s "  # noqa: S608
                "WHERE released_at IS NULL AND expires_at <= %s RETURNING item_id",
                [now, Lease.Reason.EXPIRED, now],
            )
            per_item = Counter(row[0] for row in cursor.fetchall())
        by_count: dict[int, list[int]] = {}
        for item_id, n in sorted(per_item.items()):
            by_count.setdefault(n, []).append(item_id)
        for n, item_ids in by_count.items():
            QueueItem.objects.filter(pk__in=item_ids, is_gold=False).update(claimed=F("claimed") - n)
    return sum(per_item.values())


# Annotations

_COUNTING = (AnnotationStatus.SUBMITTED, AnnotationStatus.ACCEPTED, AnnotationStatus.FIXED)


def item_kind(item: QueueItem) -> str:
    """The kind of the project's schema (single_label when it has none yet)."""
    return LabelSchema.objects.filter(project_id=item.project_id).values_list("kind", flat=True).first() or (
        results.SINGLE_LABEL
    )


def result_check(*, item: QueueItem, result: Any) -> dict[str, Any]:
    """`result` validated and normalised for the item (see result_check_kind)."""
    return result_check_kind(item=item, result=result)[0]


def result_check_kind(*, item: QueueItem, result: Any) -> tuple[dict[str, Any], str]:
    """`result` validated and normalised for the item (its project's schema kind and classes, its asset's
    size and kind), with the schema's kind; 400 `invalid_result`, `unknown_class` or `box_outside_image`.
    One query."""
    rows = list(LabelClass.objects.filter(schema__project_id=item.project_id).values_list("schema__kind", "name"))
    if not rows:
        raise ValidationFailed("the project has no label schema", code="no_label_schema")
    kind = rows[0][0]
    asset = item.project_asset.asset
    try:
        clean = results.validate_result(
            kind, result, [name for _, name in rows], asset.width, asset.height, item_kind=asset.kind
        )
    except results.ResultError as exc:
        raise ValidationFailed(exc.message, code=exc.code, fields={"result": exc.message}) from None
    return clean, kind


def counting_results(item_id: int) -> list[dict[str, Any]]:
    """The results the item's consensus counts: per annotator, their latest ordinary annotation that is
    submitted, accepted or fixed."""
    rows = (
        Annotation.objects.filter(item_id=item_id, is_gold=False, status__in=_COUNTING)
        .order_by("annotator_id", "-pk")
        .values_list("annotator_id", "result")
    )
    latest: dict[int, dict[str, Any]] = {}
    for annotator_id, result in rows:
        latest.setdefault(annotator_id, result)
    return list(latest.values())


def _label_change(kind: str, project_asset_id: int, result: dict[str, Any] | None) -> LabelChange:
    if result is None:
        return LabelChange(project_asset_id=project_asset_id)
    if kind == results.SINGLE_LABEL:
        return LabelChange(project_asset_id=project_asset_id, label=result["label"])
    return LabelChange(project_asset_id=project_asset_id, annotation=result)


def item_decide(
    *, item: QueueItem, kind: str, decided: dict[str, Any] | None, actor: User | None, via: str, ref: int
) -> None:
    """Record a done item's decided result (None: a tie, it needs review) on the item and, when decided,
    as the asset's label. Runs under the item's row lock."""
    fields: dict[str, Any] = {
        "consensus_result": decided,
        "consensus_label": decided.get("label") if decided is not None and kind == results.SINGLE_LABEL else None,
        "needs_review": decided is None,
    }
    QueueItem.objects.filter(pk=item.pk).update(**fields)
    for name, value in fields.items():
        setattr(item, name, value)
    if decided is None:
        ReviewTask.objects.get_or_create(
            project_id=item.project_id,
            item_id=item.pk,
            reason=ReviewTask.Reason.DISAGREEMENT,
            state=ReviewTask.State.OPEN,
        )
        return
    change = _label_change(kind, item.project_asset_id, decided)
    asset_labels_set(changes=[change], actor=actor, via=via, ref=ref)
    if item.relabel and kind == results.SINGLE_LABEL:
        # An item sent back for relabelling (e.g. a suspected label error): the verdict goes onto its findings.
        from curation.findings import label_error_verdict_record

        label_error_verdict_record(project_asset_id=item.project_asset_id, label=decided["label"], item_id=item.pk)


def annotation_submit(
    *, item_id: int, annotator: User, result: dict[str, Any], time_spent_ms: int, idempotency_key: str
) -> Annotation:
    """Store the annotator's answer for an item they hold a live lease on.

    The same idempotency key again returns the stored annotation (a retried request stores nothing
    new). The result is validated against the schema's kind (see labeling.results). The lease becomes
    a submission (the item's `claimed` is unchanged) and the item is done once it has its required
    annotations. The submission that makes it done decides, under the item's row lock, its consensus
    (labeling.results.consensus): the decided result goes to the item and, through
    `curation.labels.asset_labels_set`, to the asset; a tie leaves the asset as it is, marks the item
    `needs_review` and opens a disagreement review. A share (`review_rate`) of submissions is sampled
    for review. A paused annotator may still submit the items they hold.

    Gold items take no consensus and are never done: the answer is marked correct or not, and the
    annotator is paused when their gold accuracy falls under the project's threshold.
    """
    previous = Annotation.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
    if previous is not None:
        return _same_item(previous, item_id)
    item = QueueItem.objects.select_related("project", "project_asset__asset").filter(pk=item_id).first()
    if item is None:
        raise NotFound(f"item {item_id} not found")
    require_role(user=annotator, project=item.project, roles=_ALL_ROLES, action="label")
    clean, kind = result_check_kind(item=item, result=result)
    review_rate = QueueSettings.objects.filter(project_id=item.project_id).values_list("review_rate", flat=True).first()
    review_rate = QueueSettings._meta.get_field("review_rate").default if review_rate is None else review_rate
    try:
        with transaction.atomic():
            held = Lease.objects.filter(item_id=item_id, annotator=annotator, released_at__isnull=True).update(
                released_at=timezone.now(), release_reason=Lease.Reason.SUBMITTED
            )
            if not held:
                raise Conflict(f"you hold no lease on item {item_id}", code="not_leased")
            # The item's row lock (after the lease row, as everywhere): of two last submissions racing,
            # the second waits here and sees the first's count, so only one of them decides the consensus.
            locked = QueueItem.objects.select_for_update().filter(pk=item_id)
            count, required, is_gold, gold_result = locked.values_list(
                "submitted_count", "required_annotations", "is_gold", "gold_result"
            ).get()
            annotation = Annotation.objects.create(
                item_id=item_id,
                annotator=annotator,
                result=clean,
                time_spent_ms=time_spent_ms,
                idempotency_key=idempotency_key,
                is_gold=is_gold,
                gold_correct=results.matches_gold(kind, clean, gold_result) if is_gold else None,
            )
            if is_gold:
                gold.gold_pause_check(project=item.project, annotator_id=annotator.pk)
                return annotation
            changes: dict[str, Any] = {"submitted_count": F("submitted_count") + 1}
            done = count + 1 >= required
            if done:
                changes["state"] = QueueItem.State.DONE
                # As read with the item; asset_labels_set logs the exact old value in its LabelEvent.
                changes["previous_label"] = item.project_asset.label
            QueueItem.objects.filter(pk=item_id).update(**changes)
            if done:
                decided = results.consensus(kind, counting_results(item_id))
                item_decide(item=item, kind=kind, decided=decided, actor=annotator, via="consensus", ref=item_id)
            if review_rate > 0 and _rng.random() < review_rate:
                ReviewTask.objects.create(
                    project_id=item.project_id, item_id=item_id, annotation=annotation, reason=ReviewTask.Reason.SAMPLE
                )
    except IntegrityError:
        # The same key submitted concurrently: the other request stored it.
        previous = Annotation.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
        if previous is None:
            raise
        return _same_item(previous, item_id)
    return annotation


def consensus_of(labels: list[str]) -> str | None:
    """The label more than half of `labels` agree on; None (a disagreement, for review) when none has."""
    decided = results.consensus(results.SINGLE_LABEL, [{"label": label} for label in labels])
    return decided["label"] if decided is not None else None


def _same_item(annotation: Annotation, item_id: int) -> Annotation:
    if annotation.item_id != item_id:
        raise Conflict("this idempotency key was used for another item", code="idempotency_key_reused")
    return annotation


# Undo


def annotation_undo(*, annotation_id: int, annotator: User) -> tuple[Annotation, Lease]:
    """Take back a submission: the annotation is withdrawn and the lease it was submitted through is live
    again (same expiry), the item back on the annotator's screen.

    Only the annotator, only while that lease's expiry is still ahead (409 `undo_expired`) and while no
    review has decided on it (409 `not_undoable`). An item the submission made done is reopened, its
    consensus cleared and the asset's label put back to what it was before (via "undo"). One
    transaction, in the module's lock order: the lease row, the item row, then the asset.
    """
    annotation = Annotation.objects.select_related("item").filter(pk=annotation_id, annotator=annotator).first()
    if annotation is None:
        raise NotFound(f"annotation {annotation_id} not found")
    item = annotation.item
    lease = (
        Lease.objects.filter(item_id=item.pk, annotator=annotator, release_reason=Lease.Reason.SUBMITTED)
        .order_by("-pk")
        .first()
    )
    if annotation.revision_of_id is not None or lease is None:
        raise Conflict("a revision after review cannot be undone", code="not_undoable")
    with transaction.atomic():
        lease = Lease.objects.select_for_update().get(pk=lease.pk)
        item = QueueItem.objects.select_for_update().get(pk=item.pk)
        annotation.refresh_from_db(fields=["status"])
        now = timezone.now()
        if annotation.status != Annotation.Status.SUBMITTED:
            raise Conflict(
                f"annotation {annotation_id} is {annotation.status}; it cannot be undone", code="not_undoable"
            )
        reviews = list(
            ReviewTask.objects.select_for_update().filter(
                Q(annotation_id=annotation.pk) | Q(item_id=item.pk, reason=ReviewTask.Reason.DISAGREEMENT)
            )
        )
        if any(r.state != ReviewTask.State.OPEN and r.annotation_id == annotation.pk for r in reviews):
            raise Conflict("a review decided on this annotation", code="not_undoable")
        if lease.released_at is None or lease.release_reason != Lease.Reason.SUBMITTED:
            raise Conflict("this submission's lease is live again already", code="not_undoable")
        if lease.expires_at <= now:
            raise Conflict("the time to undo this submission is over", code="undo_expired")
        if (
            item.state == QueueItem.State.DONE
            and ReviewTask.objects.filter(item_id=item.pk, reason=ReviewTask.Reason.DISAGREEMENT)
            .exclude(state=ReviewTask.State.OPEN)
            .exists()
        ):
            raise Conflict("a review decided on this item", code="not_undoable")
        Annotation.objects.filter(pk=annotation.pk).update(status=Annotation.Status.WITHDRAWN)
        annotation.status = Annotation.Status.WITHDRAWN
        # The open reviews of this submission (its sample, the item's tie) have nothing left to decide.
        ReviewTask.objects.filter(pk__in=[r.pk for r in reviews if r.state == ReviewTask.State.OPEN]).delete()
        Lease.objects.filter(pk=lease.pk).update(released_at=None, release_reason="")
        lease.released_at, lease.release_reason = None, ""
        if not item.is_gold:
            was_done = item.state == QueueItem.State.DONE
            changes: dict[str, Any] = {"submitted_count": F("submitted_count") - 1}
            if was_done:
                changes.update(
                    state=QueueItem.State.OPEN, consensus_label=None, consensus_result=None, needs_review=False
                )
            try:
                with transaction.atomic():
                    QueueItem.objects.filter(pk=item.pk).update(**changes)
            except IntegrityError:  # the asset was queued again meanwhile
                raise Conflict("the asset has a new open item; this one cannot reopen", code="not_undoable") from None
            if was_done and item.consensus_result is not None:
                _label_restore(item=item, actor=annotator)
    lease = Lease.objects.select_related("item__project_asset__asset").get(pk=lease.pk)
    return annotation, lease


def _label_restore(*, item: QueueItem, actor: User) -> None:
    """Put the asset's label back to what it was before this item's consensus set it."""
    event = (
        LabelEvent.objects.filter(project_asset_id=item.project_asset_id, via="consensus", ref=item.pk)
        .order_by("-pk")
        .first()
    )
    if event is not None:
        label, annotation = event.old_label, event.old_annotation
    else:
        label, annotation = item.previous_label, None
    asset_label_set(
        project_asset_id=item.project_asset_id, label=label, annotation=annotation, actor=actor, via="undo", ref=item.pk
    )
