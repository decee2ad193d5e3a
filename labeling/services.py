"""Writes of labelling: label schemas, queue items, leases (claim, heartbeat, release, expiry), annotations.

Lock order, the same everywhere so that no two of these can deadlock: lease rows, then queue item rows,
then the project asset. A claim locks queue items only and inserts new lease rows.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from crucible.core.errors import Conflict, NotFound, ValidationFailed
from crucible.core.models import Project, Role, User
from crucible.core.selectors import require_role, require_write
from crucible.core.services import audit
from curation.models import ProjectAsset
from labeling.models import (
    Annotation,
    LabelClass,
    LabelSchema,
    Lease,
    QueueItem,
    QueueOrder,
    QueueSettings,
    ReleaseReason,
)

# How many live leases an annotator holds in a project: the item on screen and two prefetched.
LEASES_PER_ANNOTATOR = 3
_ALL_ROLES = set(Role.values)
# First key of pg_advisory_xact_lock(int, int): claims of one annotator run one at a time.
_CLAIM_LOCK_CLASS = 0x1ABE


def lease_ttl_seconds() -> int:
    return int(settings.LABELING_LEASE_TTL)


# Label schemas


@transaction.atomic
def label_schema_set(*, project: Project, user: User, classes: list[dict[str, str]]) -> LabelSchema:
    """Replace the project's single-label classes with `classes` ([{"name", "key"}], in order).

    Removing a class that annotations already use is refused (code `class_in_use`): this slice
    does not yet migrate annotations between classes.
    """
    require_write(user=user, project=project)
    errors: dict[str, Any] = {}
    names: list[str] = []
    keys: list[str] = []
    if not classes:
        errors["classes"] = "at least one class"
    for i, cls in enumerate(classes):
        name = str(cls.get("name", "")).strip() if isinstance(cls, dict) else ""
        key = str(cls.get("key", "")) if isinstance(cls, dict) else ""
        if not name or len(name) > 200:
            errors[f"classes[{i}].name"] = "a name of 1 to 200 characters"
        elif name in names:
            errors[f"classes[{i}].name"] = f"duplicate name {name!r}"
        if len(key) != 1 or key.isspace():
            errors[f"classes[{i}].key"] = "one keyboard character"
        elif key in keys:
            errors[f"classes[{i}].key"] = f"duplicate key {key!r}"
        names.append(name)
        keys.append(key)
    if errors:
        raise ValidationFailed("invalid label classes", code="invalid_schema", fields=errors)

    schema, _ = LabelSchema.objects.get_or_create(project=project)
    used = set(
        Annotation.objects.filter(item__project=project).values_list("result__label", flat=True).distinct().order_by()
    )
    removed = sorted(str(name) for name in used if name is not None and name not in names)
    if removed:
        raise Conflict(
            f"annotations use the class(es) {', '.join(removed)}; they cannot be removed yet",
            code="class_in_use",
            fields={"classes": removed},
        )
    LabelClass.objects.filter(schema=schema).delete()
    LabelClass.objects.bulk_create(
        LabelClass(schema=schema, name=name, key=key, position=i)
        for i, (name, key) in enumerate(zip(names, keys, strict=True))
    )
    schema.save(update_fields=["updated_at"])
    audit(actor=user, project=project, verb="label_schema.set", target=project.name, classes=names)
    return schema


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
    *, project: Project, user: User, order: str = QueueOrder.SEQUENTIAL, lease_ttl_seconds: int | None = None
) -> QueueSettings:
    """Set the project's queue order and lease TTL (null: the server's default). Engineers and admins."""
    require_write(user=user, project=project)
    errors: dict[str, str] = {}
    if order not in QueueOrder.values:
        errors["order"] = f"one of {', '.join(QueueOrder.values)}"
    if lease_ttl_seconds is not None and not 30 <= lease_ttl_seconds <= 86400:
        errors["lease_ttl_seconds"] = "between 30 and 86400 seconds, or null"
    if errors:
        code = "invalid_order" if "order" in errors else "invalid_queue_settings"
        raise ValidationFailed("invalid queue settings", code=code, fields=errors)
    obj, _ = QueueSettings.objects.update_or_create(
        project=project, defaults={"order": order, "lease_ttl_seconds": lease_ttl_seconds}
    )
    audit(
        actor=user, project=project, verb="queue.settings_set", target=project.name, order=order, ttl=lease_ttl_seconds
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
    items = QueueItem.objects.select_for_update().filter(project=project, project_asset_id__in=wanted).order_by("pk")
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
    WHERE q.project_id = %(project)s AND q.state = 'open' AND q.claimed < q.required_annotations
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
    WHERE q.project_id = %(project)s AND q.state = 'open' AND q.claimed < q.required_annotations
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


def lease_claim_next(*, project: Project, annotator: User, ttl_seconds: int | None = None) -> list[Lease]:
    """The annotator's live leases in the project, topped up to three (one to label, two prefetched).

    Asking twice gives the same leases (each renewed for `ttl_seconds`). New items are claimed by one
    statement: on PostgreSQL an UPDATE of the queue items picked by a `FOR UPDATE SKIP LOCKED`
    subquery, on SQLite the same statement inside the IMMEDIATE transaction that serializes writers.
    The lease rows are inserted in the same transaction. An empty list means no item is left for
    this annotator.
    """
    require_role(user=annotator, project=project, roles=_ALL_ROLES, action="label")
    order, project_ttl = _queue_settings(project.pk)
    ttl = project_ttl if ttl_seconds is None else ttl_seconds
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
        ids = _claim_items(project_id=project.pk, annotator_id=annotator.pk, n=wanted, skip_locked=True, order=order)
        if not ids and not held and connection.vendor == "postgresql":
            # Every candidate was locked by a concurrent claim: wait for them rather than answer
            # "no items" while items remain.
            ids = _claim_items(
                project_id=project.pk, annotator_id=annotator.pk, n=wanted, skip_locked=False, order=order
            )
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
    QueueItem.objects.filter(pk=lease.item_id).update(claimed=F("claimed") - 1)
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
            QueueItem.objects.filter(pk__in=item_ids).update(claimed=F("claimed") - n)
    return sum(per_item.values())


# Annotations


def _check_result(*, project_id: int, result: Any) -> str:
    label = result.get("label") if isinstance(result, dict) else None
    if not isinstance(label, str) or not label:
        raise ValidationFailed('result is {"label": CLASS}', code="invalid_result", fields={"result": "invalid"})
    if not LabelClass.objects.filter(schema__project_id=project_id, name=label).exists():
        raise ValidationFailed(f"unknown class {label!r}", code="unknown_class", fields={"result": "unknown class"})
    return label


def annotation_submit(
    *, item_id: int, annotator: User, result: dict[str, Any], time_spent_ms: int, idempotency_key: str
) -> Annotation:
    """Store the annotator's answer for an item they hold a live lease on.

    The same idempotency key again returns the stored annotation (a retried request stores nothing
    new). The lease becomes a submission (the item's `claimed` is unchanged) and the item is done once
    it has its required annotations. The submission that makes it done decides, under the item's row
    lock, its consensus: the strict majority of its annotations' labels becomes `consensus_label` and
    the asset's label; without one (a tie) the item `needs_review` and the asset's label is left as it is.
    Gold items take no consensus.
    """
    previous = Annotation.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
    if previous is not None:
        return _same_item(previous, item_id)
    item = QueueItem.objects.filter(pk=item_id).first()
    if item is None:
        raise NotFound(f"item {item_id} not found")
    require_role(user=annotator, project=item.project, roles=_ALL_ROLES, action="label")
    label = _check_result(project_id=item.project_id, result=result)
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
            count, required, is_gold = locked.values_list("submitted_count", "required_annotations", "is_gold").get()
            annotation = Annotation.objects.create(
                item_id=item_id,
                annotator=annotator,
                result={"label": label},
                time_spent_ms=time_spent_ms,
                idempotency_key=idempotency_key,
                is_gold=is_gold,
            )
            changes: dict[str, Any] = {"submitted_count": F("submitted_count") + 1}
            decided = None
            if count + 1 >= required:
                changes["state"] = QueueItem.State.DONE
                if not is_gold:
                    decided = consensus_of(_votes(item_id))
                    changes["consensus_label"], changes["needs_review"] = decided, decided is None
            QueueItem.objects.filter(pk=item_id).update(**changes)
            if decided is not None:
                # No curation service sets a label yet: one UPDATE of the asset's row.
                ProjectAsset.objects.filter(pk=item.project_asset_id).update(label=decided)
    except IntegrityError:
        # The same key submitted concurrently: the other request stored it.
        previous = Annotation.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
        if previous is None:
            raise
        return _same_item(previous, item_id)
    return annotation


def _votes(item_id: int) -> list[str]:
    """The labels of the item's ordinary (non-gold) annotations."""
    rows = Annotation.objects.filter(item_id=item_id, is_gold=False).values_list("result", flat=True)
    return [row.get("label") for row in rows if isinstance(row, dict) and row.get("label")]


def consensus_of(labels: list[str]) -> str | None:
    """The label more than half of `labels` agree on; None (a disagreement, for review) when none has."""
    if not labels:
        return None
    label, n = Counter(labels).most_common(1)[0]
    return label if 2 * n > len(labels) else None


def _same_item(annotation: Annotation, item_id: int) -> Annotation:
    if annotation.item_id != item_id:
        raise Conflict("this idempotency key was used for another item", code="idempotency_key_reused")
    return annotation
