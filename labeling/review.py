"""Review: deciding sampled submissions and disagreements, and the annotators' rework of rejected ones.

Lock order, as in labeling.services: the item row, then the review row, then the asset (through
curation.labels).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from crucible.core.errors import Conflict, NotFound, ValidationFailed
from crucible.core.models import READ_DATA_ROLES, Role, User
from crucible.core.selectors import require_role
from curation.labels import asset_labels_set
from labeling import results, services
from labeling.models import Annotation, QueueItem, ReviewTask

ACTIONS = ("accept", "reject", "fix")
_ALL_ROLES = set(Role.values)


def _recompute(*, item: QueueItem, kind: str, actor: User, via: str, ref: int) -> None:
    """A done item's consensus again, after its counting annotations changed (a rejection, a revision).

    A fix by review is final: once an item has one, its latest fixed result stays the consensus.
    """
    if item.state != QueueItem.State.DONE:
        return
    fixed = (
        ReviewTask.objects.filter(item_id=item.pk, state=ReviewTask.State.FIXED)
        .order_by("-decided_at", "-pk")
        .values_list("fixed_result", flat=True)
        .first()
    )
    if fixed is not None:
        return
    votes = services.counting_results(item.pk)
    if not votes:
        # Nothing counts any more (the only answer was rejected): undecided until its revision comes.
        QueueItem.objects.filter(pk=item.pk).update(consensus_label=None, consensus_result=None, needs_review=False)
        return
    decided = results.consensus(kind, votes)
    services.item_decide(item=item, kind=kind, decided=decided, actor=actor, via=via, ref=ref)


def review_decide(
    *,
    review_id: int,
    user: User,
    action: str,
    comment: str = "",
    result: Any = None,
    annotation_id: int | None = None,
) -> ReviewTask:
    """Decide an open review (reviewers, engineers, admins); 409 `review_decided` when it is decided already.

    - accept: a sampled annotation is accepted; for a disagreement, the annotation chosen
      (`annotation_id`, one of the item's votes) becomes the item's result.
    - reject (sampled only, with a comment): the annotation goes back to its annotator, and the item's
      consensus is decided again without it.
    - fix (with a result): the result becomes the item's consensus and the asset's label.
    """
    review = ReviewTask.objects.select_related("project").filter(pk=review_id).first()
    if review is None:
        raise NotFound(f"review {review_id} not found")
    require_role(user=user, project=review.project, roles=READ_DATA_ROLES, action="review")
    comment = str(comment or "").strip()
    if action not in ACTIONS:
        raise ValidationFailed(
            f"unknown action {action!r}", code="invalid_action", fields={"action": f"one of {', '.join(ACTIONS)}"}
        )
    disagreement = review.reason == ReviewTask.Reason.DISAGREEMENT
    if action == "reject" and disagreement:
        raise ValidationFailed(
            "a disagreement is accepted (with the annotation to keep) or fixed",
            code="invalid_action",
            fields={"action": "accept or fix"},
        )
    if action == "reject" and not comment:
        raise ValidationFailed("a rejection needs a comment", code="comment_required", fields={"comment": "required"})
    if len(comment) > 2000:
        raise ValidationFailed("a comment of at most 2000 characters", fields={"comment": "too long"})
    if action == "accept" and disagreement and annotation_id is None:
        raise ValidationFailed(
            "accepting a disagreement names the annotation to keep",
            code="annotation_required",
            fields={"annotation": "required"},
        )
    item = QueueItem.objects.select_related("project_asset__asset").get(pk=review.item_id)
    kind = services.item_kind(item)
    fixed = None
    if action == "fix":
        if result is None:
            raise ValidationFailed("a fix needs a result", code="result_required", fields={"result": "required"})
        fixed = services.result_check(item=item, result=result)
    now = timezone.now()
    with transaction.atomic():
        item = QueueItem.objects.select_for_update().select_related("project_asset__asset").get(pk=review.item_id)
        review = ReviewTask.objects.select_for_update().get(pk=review_id)
        if review.state != ReviewTask.State.OPEN:
            raise Conflict(f"review {review_id} was decided already ({review.state})", code="review_decided")
        review.reviewer, review.comment, review.decided_at = user, comment, now
        if action == "accept" and disagreement:
            chosen = Annotation.objects.filter(
                pk=annotation_id, item_id=item.pk, is_gold=False, status__in=services._COUNTING
            ).first()
            if chosen is None:
                raise ValidationFailed(
                    f"annotation {annotation_id} is not a vote of this item",
                    code="unknown_annotation",
                    fields={"annotation": "not a vote of this item"},
                )
            Annotation.objects.filter(pk=chosen.pk).update(status=Annotation.Status.ACCEPTED)
            review.state, review.fixed_result = ReviewTask.State.ACCEPTED, chosen.result
            review.save()
            _item_set(item=item, kind=kind, decided=chosen.result, actor=user, ref=review.pk)
        elif action == "accept":
            Annotation.objects.filter(pk=review.annotation_id).update(status=Annotation.Status.ACCEPTED)
            review.state = ReviewTask.State.ACCEPTED
            review.save()
        elif action == "reject":
            Annotation.objects.filter(pk=review.annotation_id).update(status=Annotation.Status.REJECTED)
            review.state = ReviewTask.State.REJECTED
            review.save()
            _recompute(item=item, kind=kind, actor=user, via="review", ref=review.pk)
        else:
            if review.annotation_id is not None:
                Annotation.objects.filter(pk=review.annotation_id).update(status=Annotation.Status.FIXED)
            review.state, review.fixed_result = ReviewTask.State.FIXED, fixed
            review.save()
            _item_set(item=item, kind=kind, decided=fixed, actor=user, ref=review.pk)
    return review


def _item_set(*, item: QueueItem, kind: str, decided: dict[str, Any] | None, actor: User, ref: int) -> None:
    """The item's decided result set by review: its consensus and the asset's label (via "review")."""
    QueueItem.objects.filter(pk=item.pk).update(
        consensus_result=decided,
        consensus_label=decided.get("label") if decided and kind == results.SINGLE_LABEL else None,
        needs_review=False,
    )
    if decided is not None:
        change = services._label_change(kind, item.project_asset_id, decided)
        asset_labels_set(changes=[change], actor=actor, via="review", ref=ref)


def annotation_revise(
    *, annotation_id: int, annotator: User, result: Any, time_spent_ms: int, idempotency_key: str
) -> Annotation:
    """The annotator's new answer for one of their rejected annotations (a new row, `revision_of` it);
    the item's consensus is decided again with it. The same idempotency key again returns it."""
    previous = Annotation.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
    if previous is not None:
        if previous.revision_of_id != annotation_id:
            raise Conflict("this idempotency key was used for another answer", code="idempotency_key_reused")
        return previous
    original = (
        Annotation.objects.select_related("item__project", "item__project_asset__asset")
        .filter(pk=annotation_id, annotator=annotator)
        .first()
    )
    if original is None:
        raise NotFound(f"annotation {annotation_id} not found")
    item = original.item
    require_role(user=annotator, project=item.project, roles=_ALL_ROLES, action="label")
    if original.status != Annotation.Status.REJECTED:
        raise Conflict(f"annotation {annotation_id} is {original.status}, not rejected", code="not_rejected")
    clean = services.result_check(item=item, result=result)
    kind = services.item_kind(item)
    try:
        with transaction.atomic():
            item = QueueItem.objects.select_for_update().select_related("project_asset__asset").get(pk=item.pk)
            if Annotation.objects.filter(revision_of_id=original.pk).exists():
                raise Conflict(f"annotation {annotation_id} was revised already", code="already_revised")
            revision = Annotation.objects.create(
                item_id=item.pk,
                annotator=annotator,
                result=clean,
                time_spent_ms=time_spent_ms,
                idempotency_key=idempotency_key,
                revision_of=original,
            )
            _recompute(item=item, kind=kind, actor=annotator, via="consensus", ref=item.pk)
    except IntegrityError:
        previous = Annotation.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
        if previous is None:
            raise Conflict(f"annotation {annotation_id} was revised already", code="already_revised") from None
        return previous
    return revision
