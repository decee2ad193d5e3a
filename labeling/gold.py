"""Gold items (items with a known answer, handed out at the project's gold rate) and the pausing of
annotators whose gold accuracy falls under the project's threshold."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max

from crucible.core.errors import NotFound, ValidationFailed
from crucible.core.models import Membership, Project, User
from crucible.core.selectors import require_write
from crucible.core.services import audit
from curation.models import ProjectAsset
from labeling import results
from labeling.models import Annotation, AnnotatorStatus, LabelSchema, Lease, QueueItem, QueueSettings


def gold_items_add(*, project: Project, user: User, items: list[dict[str, Any]]) -> int:
    """Add gold items ([{"project_asset_id", "result"}]): each result is validated against the schema
    (as a submission is) and becomes the item's known answer. A gold item is an item of its own: the
    asset may also have an ordinary one. Returns how many were created; nothing is created when any
    entry is refused."""
    require_write(user=user, project=project)
    schema = LabelSchema.objects.filter(project=project).first()
    if schema is None:
        raise ValidationFailed("set the project's label schema first", code="no_label_schema")
    if not items:
        raise ValidationFailed("items: at least one", code="invalid_gold", fields={"items": "at least one"})
    names = list(schema.classes.values_list("name", flat=True))
    wanted = [entry.get("project_asset_id") for entry in items]
    assets = {
        pa.pk: pa.asset
        for pa in ProjectAsset.objects.filter(project=project, pk__in=[w for w in wanted if isinstance(w, int)])
        .select_related("asset")
        .only("pk", "asset__width", "asset__height", "asset__kind")
    }
    errors: dict[str, str] = {}
    code = "invalid_gold"
    new: list[QueueItem] = []
    for i, entry in enumerate(items):
        asset = assets.get(entry.get("project_asset_id"))
        if asset is None:
            errors[f"items[{i}].project_asset_id"] = "not an asset of the project"
            code = "unknown_asset"
            continue
        try:
            answer = results.validate_result(
                schema.kind, entry.get("result"), names, asset.width, asset.height, item_kind=asset.kind
            )
        except results.ResultError as exc:
            errors[f"items[{i}].result"] = exc.message
            code = exc.code
            continue
        new.append(
            QueueItem(project=project, project_asset_id=entry["project_asset_id"], is_gold=True, gold_result=answer)
        )
    if errors:
        first = next(iter(errors.items()))
        raise ValidationFailed(f"{first[0]}: {first[1]}", code=code, fields=errors)
    with transaction.atomic():
        # Gold items are never "open" for the one-open-item-per-asset rule: they are kept in state done,
        # which the ordinary claim never looks at, and claimed only by gold_pick.
        for item in new:
            item.state = QueueItem.State.DONE
        QueueItem.objects.bulk_create(new)
        audit(actor=user, project=project, verb="gold.add", target=project.name, created=len(new))
    return len(new)


def gold_item_delete(*, item_id: int, user: User) -> None:
    """Delete a gold item with its leases and answers (engineers)."""
    item = QueueItem.objects.select_related("project").filter(pk=item_id, is_gold=True).first()
    if item is None:
        raise NotFound(f"gold item {item_id} not found")
    require_write(user=user, project=item.project)
    with transaction.atomic():
        QueueItem.objects.filter(pk=item.pk).delete()
        audit(actor=user, project=item.project, verb="gold.delete", target=item.project.name, item=item_id)


def gold_pick(*, project_id: int, annotator_id: int, n: int) -> list[int]:
    """Up to `n` gold items for the annotator: ones they have neither answered (a withdrawn answer does
    not count) nor hold nor skipped, in a random order. Nothing is locked or counted: a gold item may be
    held by many annotators at once."""
    if n <= 0:
        return []
    answered = Annotation.objects.filter(annotator_id=annotator_id, is_gold=True, item__project_id=project_id).exclude(
        status=Annotation.Status.WITHDRAWN
    )
    seen = Lease.objects.filter(annotator_id=annotator_id, item__project_id=project_id, item__is_gold=True).exclude(
        release_reason__in=[Lease.Reason.SUBMITTED, Lease.Reason.EXPIRED]
    )
    return list(
        QueueItem.objects.filter(project_id=project_id, is_gold=True)
        .exclude(pk__in=answered.values("item_id"))
        .exclude(pk__in=seen.values("item_id"))
        .order_by("random_key", "pk")
        .values_list("pk", flat=True)[:n]
    )


def _pause_reason(accuracy: float, n: int, threshold: float) -> str:
    return (
        f"gold accuracy {accuracy:.0%} over your last {n} gold items is under the project's {threshold:.0%}; "
        "an engineer can resume you"
    )


def gold_pause_check(*, project: Project, annotator_id: int) -> bool:
    """Pause the annotator when their last `gold_window` gold answers since their window began number at
    least `gold_min_answers` and their accuracy is under `gold_min_accuracy`; True when paused now."""
    conf = QueueSettings.objects.filter(project=project).first() or QueueSettings(project=project)
    status = AnnotatorStatus.objects.filter(project=project, annotator_id=annotator_id).first()
    if status is not None and status.paused:
        return False
    since = status.gold_since_id if status is not None else 0
    answers = list(
        Annotation.objects.filter(
            item__project=project, annotator_id=annotator_id, is_gold=True, pk__gt=since, gold_correct__isnull=False
        )
        .exclude(status=Annotation.Status.WITHDRAWN)
        .order_by("-pk")
        .values_list("gold_correct", flat=True)[: conf.gold_window]
    )
    if len(answers) < conf.gold_min_answers:
        return False
    accuracy = sum(answers) / len(answers)
    if accuracy >= conf.gold_min_accuracy:
        return False
    AnnotatorStatus.objects.update_or_create(
        project=project,
        annotator_id=annotator_id,
        defaults={"paused": True, "reason": _pause_reason(accuracy, len(answers), conf.gold_min_accuracy)},
    )
    return True


def _member(project: Project, annotator_id: int) -> None:
    if not Membership.objects.filter(project=project, user_id=annotator_id).exists():
        raise NotFound(f"user {annotator_id} is not a member of {project.name!r}")


@transaction.atomic
def annotator_pause(*, project: Project, user: User, annotator_id: int, reason: str) -> AnnotatorStatus:
    """Pause an annotator in the project (engineers): they get no new items until resumed."""
    require_write(user=user, project=project)
    reason = str(reason or "").strip()
    if not reason or len(reason) > 500:
        raise ValidationFailed("a reason of 1 to 500 characters", code="invalid_reason", fields={"reason": "required"})
    _member(project, annotator_id)
    status, _ = AnnotatorStatus.objects.update_or_create(
        project=project, annotator_id=annotator_id, defaults={"paused": True, "reason": reason, "changed_by": user}
    )
    audit(actor=user, project=project, verb="annotator.pause", target=project.name, annotator=annotator_id)
    return status


@transaction.atomic
def annotator_resume(*, project: Project, user: User, annotator_id: int) -> AnnotatorStatus:
    """Resume an annotator (engineers); their gold window starts afresh from now."""
    require_write(user=user, project=project)
    _member(project, annotator_id)
    latest = Annotation.objects.aggregate(m=Max("pk"))["m"] or 0
    status, _ = AnnotatorStatus.objects.update_or_create(
        project=project,
        annotator_id=annotator_id,
        defaults={"paused": False, "reason": "", "changed_by": user, "gold_since_id": latest},
    )
    audit(actor=user, project=project, verb="annotator.resume", target=project.name, annotator=annotator_id)
    return status
