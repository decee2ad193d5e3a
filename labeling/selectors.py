"""Reads of labelling: a project's label schema, the queue's state, leased and reviewed items, reviews,
gold items and the annotators' figures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from crucible.core.errors import NotFound
from crucible.core.models import Membership, Project, Role, User
from crucible.core.selectors import require_read, require_role, require_write
from curation.models import Asset
from curation.selectors import AssetUnreadable, asset_read_bytes
from labeling import results
from labeling.models import (
    Annotation,
    AnnotatorStatus,
    LabelClass,
    LabelSchema,
    Lease,
    QueueItem,
    QueueOrder,
    QueueSettings,
    ReviewTask,
)

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
    by_state = dict(
        QueueItem.objects.filter(project=project, is_gold=False).values_list("state").annotate(n=Count("pk")).order_by()
    )
    items = {state: by_state.get(state, 0) for state in QueueItem.State.values}
    unreleased = Lease.objects.filter(item__project=project, released_at__isnull=True)
    now = timezone.now()
    return {
        "items": items,
        "items_total": sum(items.values()),
        # A lease past its expiry that the sweeper has not released yet is no longer anyone's.
        "live_leases": unreleased.filter(expires_at__gt=now).count(),
        "expired_unswept": unreleased.filter(expires_at__lte=now).count(),
        "submissions": Annotation.objects.filter(item__project=project)
        .exclude(status=Annotation.Status.WITHDRAWN)
        .count(),
    }


def queue_settings_get(*, project: Project, user: User) -> dict[str, Any]:
    """The project's queue order and effective lease TTL; any member reads them."""
    require_role(user=user, project=project, roles=_ALL_ROLES, action="label")
    row = QueueSettings.objects.filter(project=project).first()
    ttl = row.lease_ttl_seconds if row is not None else None
    conf = row if row is not None else QueueSettings(project=project)
    return {
        "gold_rate": conf.gold_rate,
        "gold_min_accuracy": conf.gold_min_accuracy,
        "gold_min_answers": conf.gold_min_answers,
        "gold_window": conf.gold_window,
        "review_rate": conf.review_rate,
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
        .values(
            "id", "annotator_id", "annotator__username", "result", "time_spent_ms", "status", "is_gold", "created_at"
        )
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
        "consensus_result": item.consensus_result,
        "is_gold": item.is_gold,
        "needs_review": item.needs_review,
        "label": item.project_asset.label,
        "annotations": [
            {
                "id": a["id"],
                "annotator": a["annotator_id"],
                "annotator_username": a["annotator__username"],
                "label": _label_of(a["result"]),
                "result": a["result"],
                "status": a["status"],
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


# Text, images and the items behind them


def asset_text(asset: Asset) -> str | None:
    """The text of a text asset (None for images); a missing file reads as 404."""
    if asset.kind != Asset.Kind.TEXT:
        return None
    try:
        return asset_read_bytes(asset).decode("utf-8")
    except AssetUnreadable:
        raise NotFound(f"the text of asset {asset.sha256[:12]} is missing from storage") from None


def image_of(asset: Asset) -> Asset:
    """The asset if it is an image; 404 `not_an_image` for a text."""
    if asset.kind != Asset.Kind.IMAGE:
        raise NotFound("this item is a text, not an image", code="not_an_image")
    return asset


def item_asset(*, item_id: int, user: User) -> Asset:
    """The image of a queue item, for reviewers, engineers and admins (not annotators)."""
    item = QueueItem.objects.select_related("project", "project_asset__asset").filter(pk=item_id).first()
    if item is None:
        raise NotFound(f"item {item_id} not found")
    require_read(user=user, project=item.project)
    return image_of(item.project_asset.asset)


def returned_asset(*, annotation_id: int, user: User) -> Asset:
    """The image of one of the user's own rejected annotations (their returned work)."""
    annotation = (
        Annotation.objects.select_related("item__project_asset__asset")
        .filter(pk=annotation_id, annotator=user, status=Annotation.Status.REJECTED)
        .first()
    )
    if annotation is None:
        raise NotFound(f"returned annotation {annotation_id} not found")
    return image_of(annotation.item.project_asset.asset)


def _asset_fields(asset: Asset) -> dict[str, Any]:
    return {"kind": asset.kind, "text": asset_text(asset), "width": asset.width, "height": asset.height}


def returned_list(*, project: Project, user: User) -> list[dict[str, Any]]:
    """The user's rejected annotations in the project not yet revised, oldest first, with the reviewer's
    comment. Two queries: the annotations with their items and assets, then their rejecting reviews."""
    require_role(user=user, project=project, roles=_ALL_ROLES, action="label")
    rows = list(
        Annotation.objects.filter(
            item__project=project, annotator=user, status=Annotation.Status.REJECTED, revised_by__isnull=True
        )
        .select_related("item__project_asset__asset")
        .order_by("pk")[:RETURNED_LIMIT]
    )
    reviews: dict[int, ReviewTask] = {}
    for review in (
        ReviewTask.objects.filter(annotation_id__in=[a.pk for a in rows], state=ReviewTask.State.REJECTED)
        .select_related("reviewer")
        .order_by("decided_at", "pk")
    ):
        reviews[review.annotation_id] = review
    out = []
    for a in rows:
        review = reviews.get(a.pk)
        asset = a.item.project_asset.asset
        out.append(
            {
                "annotation": a.pk,
                "item": a.item_id,
                "result": a.result,
                "comment": review.comment if review else "",
                "reviewer": review.reviewer.username if review and review.reviewer else None,
                **_asset_fields(asset),
                "image_url": None
                if asset.kind == Asset.Kind.TEXT
                else reverse("labeling:returned-image", kwargs={"annotation_id": a.pk}),
            }
        )
    return out


RETURNED_LIMIT = 500
REVIEWS_LIMIT_DEFAULT = 50
REVIEWS_LIMIT_MAX = 200


def reviews_list(
    *, project: Project, user: User, state: str | None = "open", after: int = 0, limit: int = REVIEWS_LIMIT_DEFAULT
) -> tuple[list[dict[str, Any]], int | None]:
    """The project's reviews by id after `after` (optionally of one state), with the reviewed annotation
    and the item's votes. Three queries a page: the reviews with their items, assets, annotations and
    reviewers; then the votes of those items."""
    require_read(user=user, project=project)
    limit = max(1, min(int(limit), REVIEWS_LIMIT_MAX))
    qs = ReviewTask.objects.filter(project=project, pk__gt=after)
    if state:
        qs = qs.filter(state=state)
    reviews = list(
        qs.select_related("item__project_asset__asset", "annotation__annotator", "reviewer").order_by("pk")[: limit + 1]
    )
    more = len(reviews) > limit
    reviews = reviews[:limit]
    votes: dict[int, list[dict[str, Any]]] = {}
    for row in (
        Annotation.objects.filter(
            item_id__in={r.item_id for r in reviews},
            is_gold=False,
            status__in=[Annotation.Status.SUBMITTED, Annotation.Status.ACCEPTED, Annotation.Status.FIXED],
        )
        .order_by("item_id", "pk")
        .values("item_id", "id", "annotator__username", "result")
    ):
        votes.setdefault(row["item_id"], []).append(
            {"annotation": row["id"], "annotator_name": row["annotator__username"], "result": row["result"]}
        )
    out = []
    for r in reviews:
        asset = r.item.project_asset.asset
        a = r.annotation
        out.append(
            {
                "id": r.pk,
                "item": r.item_id,
                "reason": r.reason,
                "state": r.state,
                "annotation": None
                if a is None
                else {
                    "id": a.pk,
                    "annotator": a.annotator_id,
                    "annotator_name": a.annotator.username,
                    "result": a.result,
                },
                "votes": votes.get(r.item_id, []),
                **_asset_fields(asset),
                "image_url": None
                if asset.kind == Asset.Kind.TEXT
                else reverse("labeling:item-image", kwargs={"item_id": r.item_id}),
                "comment": r.comment,
                "reviewer_name": r.reviewer.username if r.reviewer else None,
                "fixed_result": r.fixed_result,
                "created_at": r.created_at,
                "decided_at": r.decided_at,
            }
        )
    return out, (reviews[-1].pk if more else None)


def review_get(*, review_id: int, user: User) -> dict[str, Any]:
    """One review in the shape of the listing."""
    review = ReviewTask.objects.select_related("project").filter(pk=review_id).first()
    if review is None:
        raise NotFound(f"review {review_id} not found")
    rows, _ = reviews_list(project=review.project, user=user, state=None, after=review.pk - 1, limit=1)
    return rows[0]


def reviews_summary(*, project: Project, user: User) -> dict[str, Any]:
    """Reviews by state, and per annotator of reviewed annotations: how many were decided and how."""
    require_read(user=user, project=project)
    by_state = dict(ReviewTask.objects.filter(project=project).values_list("state").annotate(n=Count("pk")).order_by())
    rows = (
        ReviewTask.objects.filter(project=project, annotation__isnull=False)
        .exclude(state=ReviewTask.State.OPEN)
        .values("annotation__annotator_id", "annotation__annotator__username")
        .annotate(
            reviewed=Count("pk"),
            accepted=Count("pk", filter=Q(state=ReviewTask.State.ACCEPTED)),
            rejected=Count("pk", filter=Q(state=ReviewTask.State.REJECTED)),
            fixed=Count("pk", filter=Q(state=ReviewTask.State.FIXED)),
        )
        .order_by("annotation__annotator__username")
    )
    return {
        **{state: by_state.get(state, 0) for state in ReviewTask.State.values},
        "by_annotator": [
            {
                "annotator": r["annotation__annotator_id"],
                "annotator_name": r["annotation__annotator__username"],
                "reviewed": r["reviewed"],
                "accepted": r["accepted"],
                "rejected": r["rejected"],
                "fixed": r["fixed"],
            }
            for r in rows
        ],
    }


# Gold and annotators


def gold_list(*, project: Project, user: User) -> list[dict[str, Any]]:
    """The project's gold items with how often they were answered and answered right (engineers)."""
    require_write(user=user, project=project)
    rows = (
        QueueItem.objects.filter(project=project, is_gold=True)
        .annotate(
            answered=Count("annotations", filter=~Q(annotations__status=Annotation.Status.WITHDRAWN)),
            correct=Count(
                "annotations",
                filter=Q(annotations__gold_correct=True) & ~Q(annotations__status=Annotation.Status.WITHDRAWN),
            ),
        )
        .order_by("pk")
        .values("pk", "project_asset_id", "gold_result", "answered", "correct")
    )
    return [
        {
            "item": r["pk"],
            "project_asset_id": r["project_asset_id"],
            "result": r["gold_result"],
            "answered": r["answered"],
            "correct": r["correct"],
        }
        for r in rows
    ]


def _gold_figures(project: Project, annotator_id: int, kind: str) -> dict[str, Any]:
    rows = (
        Annotation.objects.filter(item__project=project, annotator_id=annotator_id, is_gold=True)
        .exclude(status=Annotation.Status.WITHDRAWN)
        .values_list("result", "gold_correct", "item__gold_result")
    )
    answered = correct = 0
    per_class: dict[str, dict[str, int]] = {}
    for result, is_correct, gold in rows:
        answered += 1
        correct += bool(is_correct)
        if isinstance(gold, dict) and isinstance(result, dict):
            for name, right in results.per_class_gold(kind, result, gold).items():
                entry = per_class.setdefault(name, {"answered": 0, "correct": 0})
                entry["answered"] += 1
                entry["correct"] += int(right)
    return {
        "answered": answered,
        "correct": correct,
        "accuracy": correct / answered if answered else None,
        "per_class": dict(sorted(per_class.items())),
    }


def me_get(*, project: Project, user: User) -> dict[str, Any]:
    """The caller's own figures in the project: submissions today (UTC), in all and in the last hour,
    their gold accuracy (overall and per class), whether they are paused and how much work came back."""
    require_role(user=user, project=project, roles=_ALL_ROLES, action="label")
    now = timezone.now()
    mine = Annotation.objects.filter(item__project=project, annotator=user).exclude(status=Annotation.Status.WITHDRAWN)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    figures = mine.aggregate(
        total=Count("pk"),
        today=Count("pk", filter=Q(created_at__gte=day)),
        last_hour=Count("pk", filter=Q(created_at__gte=now - timedelta(hours=1))),
    )
    kind = LabelSchema.objects.filter(project=project).values_list("kind", flat=True).first() or "single_label"
    status = AnnotatorStatus.objects.filter(project=project, annotator=user).first()
    return {
        "today": figures["today"],
        "total": figures["total"],
        "per_hour": figures["last_hour"],
        "gold": _gold_figures(project, user.pk, kind),
        "paused": bool(status and status.paused),
        "reason": status.reason if status else "",
        "returned": mine.filter(status=Annotation.Status.REJECTED, revised_by__isnull=True).count(),
    }


def annotators_list(*, project: Project, user: User) -> list[dict[str, Any]]:
    """Everyone who annotates in the project (annotator members, and anyone with an annotation): what
    they submitted, their gold accuracy and whether they are paused (engineers). Four queries."""
    require_write(user=user, project=project)
    counts = {
        r["annotator_id"]: r
        for r in Annotation.objects.filter(item__project=project)
        .exclude(status=Annotation.Status.WITHDRAWN)
        .values("annotator_id")
        .annotate(
            submitted=Count("pk", filter=Q(is_gold=False)),
            gold_answered=Count("pk", filter=Q(is_gold=True)),
            gold_correct=Count("pk", filter=Q(is_gold=True, gold_correct=True)),
        )
        .order_by()
    }
    statuses = {s.annotator_id: s for s in AnnotatorStatus.objects.filter(project=project)}
    ids = set(counts) | set(statuses)
    ids |= set(Membership.objects.filter(project=project, role=Role.ANNOTATOR).values_list("user_id", flat=True))
    users = User.objects.filter(pk__in=ids).order_by("username").only("pk", "username")
    out = []
    for u in users:
        c = counts.get(u.pk, {})
        status = statuses.get(u.pk)
        answered = c.get("gold_answered", 0)
        out.append(
            {
                "annotator": u.pk,
                "annotator_name": u.username,
                "submitted": c.get("submitted", 0),
                "gold_answered": answered,
                "gold_accuracy": c["gold_correct"] / answered if answered else None,
                "paused": bool(status and status.paused),
                "reason": status.reason if status else "",
            }
        )
    return out
