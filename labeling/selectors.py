"""Reads of labelling: a project's label schema, the queue's state, a leased item's image."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count

from crucible.core.errors import NotFound
from crucible.core.models import Project, Role, User
from crucible.core.selectors import require_read, require_role
from curation.models import Asset
from labeling.models import Annotation, LabelClass, LabelSchema, Lease, QueueItem, QueueOrder, QueueSettings

_ALL_ROLES = set(Role.values)


def label_schema_get(*, project: Project, user: User) -> tuple[LabelSchema, list[LabelClass]]:
    """The project's schema and its classes in order; any member reads it (annotators need the keys)."""
    require_role(user=user, project=project, roles=_ALL_ROLES, action="label")
    schema = LabelSchema.objects.filter(project=project).first()
    if schema is None:
        raise NotFound(f"project {project.name!r} has no label schema", code="no_label_schema")
    return schema, list(schema.classes.order_by("position"))


def queue_status(*, project: Project, user: User) -> dict[str, Any]:
    """Items by state, live leases and submissions of the project's queue (engineers and reviewers)."""
    require_read(user=user, project=project)
    by_state = dict(QueueItem.objects.filter(project=project).values_list("state").annotate(n=Count("pk")).order_by())
    items = {state: by_state.get(state, 0) for state in QueueItem.State.values}
    return {
        "items": items,
        "items_total": sum(items.values()),
        "live_leases": Lease.objects.filter(item__project=project, released_at__isnull=True).count(),
        "submissions": Annotation.objects.filter(item__project=project).count(),
    }


def queue_settings_get(*, project: Project, user: User) -> dict[str, Any]:
    """The project's queue order and effective lease TTL; any member reads them."""
    require_role(user=user, project=project, roles=_ALL_ROLES, action="label")
    row = QueueSettings.objects.filter(project=project).first()
    ttl = row.lease_ttl_seconds if row is not None else None
    return {
        "project": project.pk,
        "order": row.order if row is not None else QueueOrder.SEQUENTIAL,
        "orders": list(QueueOrder.values),
        "lease_ttl_seconds": int(settings.LABELING_LEASE_TTL) if ttl is None else ttl,
        "lease_ttl_default": ttl is None,
    }


def leased_asset(*, lease_id: int, user: User) -> Asset:
    """The asset of a lease the user holds now; nothing once it is released."""
    lease = (
        Lease.objects.select_related("item__project_asset__asset")
        .filter(pk=lease_id, annotator=user, released_at__isnull=True)
        .first()
    )
    if lease is None:
        raise NotFound(f"lease {lease_id} not found or no longer held", code="not_leased")
    return lease.item.project_asset.asset


def item_history(*, item_id: int, user: User) -> dict[str, Any]:
    """An item's state, consensus, annotations and leases in time order (engineers, reviewers, admins).

    Three queries whatever the item's size: the item with its asset, its annotations, its leases.
    """
    item = QueueItem.objects.select_related("project", "project_asset__asset").filter(pk=item_id).first()
    if item is None:
        raise NotFound(f"item {item_id} not found")
    require_read(user=user, project=item.project)
    annotations = (
        Annotation.objects.filter(item_id=item.pk)
        .order_by("created_at", "pk")
        .values("id", "annotator_id", "annotator__username", "result", "time_spent_ms", "created_at")
    )
    leases = (
        Lease.objects.filter(item_id=item.pk)
        .order_by("created_at", "pk")
        .values("id", "annotator_id", "annotator__username", "created_at", "released_at", "release_reason")
    )
    return {
        "item": item.pk,
        "project": item.project_id,
        "sha256": item.project_asset.asset.sha256,
        "state": item.state,
        "required_annotations": item.required_annotations,
        "submitted_count": item.submitted_count,
        "consensus_label": item.consensus_label,
        "needs_review": item.needs_review,
        "label": item.project_asset.label,
        "annotations": [
            {
                "id": a["id"],
                "annotator": a["annotator_id"],
                "annotator_username": a["annotator__username"],
                "label": _label_of(a["result"]),
                "time_spent_ms": a["time_spent_ms"],
                "created_at": a["created_at"],
            }
            for a in annotations
        ],
        "leases": [
            {
                "id": lease["id"],
                "annotator": lease["annotator_id"],
                "annotator_username": lease["annotator__username"],
                "created_at": lease["created_at"],
                "released_at": lease["released_at"],
                "released_reason": lease["release_reason"] or None,
            }
            for lease in leases
        ],
    }


def _label_of(result: Any) -> str | None:
    return result.get("label") if isinstance(result, dict) else None


DISAGREEMENTS_LIMIT_DEFAULT = 50
DISAGREEMENTS_LIMIT_MAX = 500


def queue_disagreements(*, project: Project, user: User, after: int = 0, limit: int = DISAGREEMENTS_LIMIT_DEFAULT):
    """Done items of the project whose annotations reached no majority, by id after `after`, with their votes.

    Two queries a page: the items with their assets, then the annotations of those items.
    Returns `(rows, next_after)`; `next_after` is None on the last page.
    """
    require_read(user=user, project=project)
    limit = max(1, min(int(limit), DISAGREEMENTS_LIMIT_MAX))
    items = list(
        QueueItem.objects.filter(project=project, needs_review=True, state=QueueItem.State.DONE, pk__gt=after)
        .select_related("project_asset__asset")
        .order_by("pk")[: limit + 1]
    )
    more = len(items) > limit
    items = items[:limit]
    by_item: dict[int, list[dict[str, Any]]] = {item.pk: [] for item in items}
    if items:
        rows = (
            Annotation.objects.filter(item_id__in=list(by_item), is_gold=False)
            .order_by("item_id", "created_at", "pk")
            .values("item_id", "id", "annotator_id", "annotator__username", "result", "created_at")
        )
        for a in rows:
            by_item[a["item_id"]].append(
                {
                    "id": a["id"],
                    "annotator": a["annotator_id"],
                    "annotator_username": a["annotator__username"],
                    "label": _label_of(a["result"]),
                    "created_at": a["created_at"],
                }
            )
    results = []
    for item in items:
        votes: dict[str, int] = {}
        for a in by_item[item.pk]:
            if a["label"]:
                votes[a["label"]] = votes.get(a["label"], 0) + 1
        results.append(
            {
                "item": item.pk,
                "sha256": item.project_asset.asset.sha256,
                "required_annotations": item.required_annotations,
                "votes": dict(sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))),
                "annotations": by_item[item.pk],
            }
        )
    return results, (items[-1].pk if more else None)
