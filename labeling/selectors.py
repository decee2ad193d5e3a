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
