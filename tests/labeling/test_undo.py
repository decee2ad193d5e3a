"""Undo: a submission taken back while its lease lasts; the item and the asset's label as they were."""

import uuid
from datetime import timedelta

from crucible.core.models import Role
from curation.models import LabelEvent, ProjectAsset
from labeling import review, services
from labeling.models import Annotation, Lease, QueueItem, ReviewTask

from .conftest import CLASSES, add_assets


def _setup(project, engineer, review_rate=0.0):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    services.queue_settings_set(project=project, user=engineer, review_rate=review_rate, gold_rate=0)
    # An asset labelled already (e.g. by an import), queued again: its label is what an undo restores.
    ids = add_assets(project, 1, label="bird")
    services.queue_items_add(project=project, user=engineer, project_asset_ids=ids)


def _submit(project, user):
    lease = services.lease_claim_next(project=project, annotator=user)[0]
    return lease, services.annotation_submit(
        item_id=lease.item_id,
        annotator=user,
        result={"label": "cat"},
        time_spent_ms=1,
        idempotency_key=uuid.uuid4().hex,
    )


def test_undo_reopens_the_item_and_puts_the_label_back(project, engineer, annotator, api):
    _setup(project, engineer)
    lease, annotation = _submit(project, annotator)
    assert ProjectAsset.objects.get().label == "cat" and QueueItem.objects.get().state == "done"
    resp = api(annotator).post(f"/api/v1/labeling/annotations/{annotation.pk}/undo/")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["annotation"] == annotation.pk and body["lease"]["lease"] == lease.pk
    assert body["lease"]["item"] == lease.item_id
    item = QueueItem.objects.get()
    assert (item.state, item.submitted_count, item.claimed, item.consensus_label) == ("open", 0, 1, None)
    assert Lease.objects.get(pk=lease.pk).released_at is None
    assert Annotation.objects.get().status == "withdrawn"
    assert ProjectAsset.objects.get().label == "bird"
    assert LabelEvent.objects.order_by("-pk").first().via == "undo"
    # The item is on screen again and can be answered anew.
    again = services.annotation_submit(
        item_id=item.pk, annotator=annotator, result={"label": "dog"}, time_spent_ms=1, idempotency_key="again"
    )
    assert again.status == "submitted" and ProjectAsset.objects.get().label == "dog"
    # Undoing twice is refused; so is someone else's undo.
    assert api(annotator).post(f"/api/v1/labeling/annotations/{annotation.pk}/undo/").status_code == 409


def test_undo_after_expiry_or_review_is_refused(project, engineer, annotator, member, api):
    _setup(project, engineer, review_rate=1.0)
    lease, annotation = _submit(project, annotator)
    other = member(project, Role.ANNOTATOR, "ann2")
    assert api(other).post(f"/api/v1/labeling/annotations/{annotation.pk}/undo/").status_code == 404
    reviewer = member(project, Role.REVIEWER, "rev")
    review.review_decide(review_id=ReviewTask.objects.get().pk, user=reviewer, action="accept")
    resp = api(annotator).post(f"/api/v1/labeling/annotations/{annotation.pk}/undo/")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_undoable"
    assert ProjectAsset.objects.get().label == "cat"

    Lease.objects.filter(pk=lease.pk).update(expires_at=lease.expires_at - timedelta(days=1))
    Annotation.objects.filter(pk=annotation.pk).update(status="submitted")
    ReviewTask.objects.all().delete()
    resp = api(annotator).post(f"/api/v1/labeling/annotations/{annotation.pk}/undo/")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "undo_expired"
    assert QueueItem.objects.get().state == "done" and Annotation.objects.get().status == "submitted"
