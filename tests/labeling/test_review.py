"""Review: sampled submissions and disagreements decided by reviewers, and the annotators' rework."""

import threading
import uuid

import pytest
from django.db import connection, connections

from crucible.core.models import Role
from curation.models import LabelEvent, ProjectAsset
from labeling import review, services
from labeling.models import Annotation, QueueItem, ReviewTask

from .conftest import CLASSES, add_assets


def _project(project, engineer, *, n=1, required=1, review_rate=1.0, with_files=False):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    services.queue_settings_set(project=project, user=engineer, review_rate=review_rate, gold_rate=0)
    add_assets(project, n, with_files=with_files)
    services.queue_items_add(project=project, user=engineer, required_annotations=required)


def _answer(project, user, label):
    lease = services.lease_claim_next(project=project, annotator=user)[0]
    return services.annotation_submit(
        item_id=lease.item_id,
        annotator=user,
        result={"label": label},
        time_spent_ms=1,
        idempotency_key=uuid.uuid4().hex,
    )


def test_rejected_work_returns_to_its_annotator_and_the_revision_decides(project, engineer, annotator, member, api):
    _project(project, engineer, with_files=True)
    reviewer = member(project, Role.REVIEWER, "rev")
    first = _answer(project, annotator, "cat")
    assert ProjectAsset.objects.get().label == "cat"
    listed = api(reviewer).get(f"/api/v1/projects/{project.name}/reviews/").json()
    assert len(listed["results"]) == 1 and listed["next_after"] is None
    row = listed["results"][0]
    assert row["reason"] == "sample" and row["annotation"]["annotator_name"] == "ann"
    assert api(reviewer).get(row["image_url"]).status_code == 200
    assert api(annotator).get(row["image_url"]).status_code == 403  # annotators see no items by id
    url = f"/api/v1/labeling/reviews/{row['id']}/decide/"
    resp = api(reviewer).post(url, {"action": "reject"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "comment_required"
    resp = api(reviewer).post(url, {"action": "reject", "comment": "that is a dog"}, format="json")
    assert resp.status_code == 200 and resp.json()["state"] == "rejected" and resp.json()["reviewer_name"] == "rev"
    again = api(reviewer).post(url, {"action": "accept"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "review_decided"
    # The item is undecided without the rejected answer; the asset keeps its label until the revision.
    assert QueueItem.objects.get().consensus_result is None
    returned = api(annotator).get(f"/api/v1/projects/{project.name}/returned/").json()["results"]
    assert [(r["annotation"], r["comment"], r["reviewer"]) for r in returned] == [(first.pk, "that is a dog", "rev")]
    assert api(annotator).get(returned[0]["image_url"]).status_code == 200
    assert api(reviewer).get(returned[0]["image_url"]).status_code == 404  # only its annotator's
    assert api(annotator).get(f"/api/v1/projects/{project.name}/me/").json()["returned"] == 1
    body = {"result": {"label": "dog"}, "time_spent_ms": 5, "idempotency_key": "rev-1"}
    resp = api(annotator).post(f"/api/v1/labeling/annotations/{first.pk}/revise/", body, format="json")
    assert resp.status_code == 201 and resp.json()["status"] == "submitted"
    assert Annotation.objects.get(pk=resp.json()["id"]).revision_of_id == first.pk
    assert ProjectAsset.objects.get().label == "dog"
    assert api(annotator).get(f"/api/v1/projects/{project.name}/returned/").json()["results"] == []
    summary = api(reviewer).get(f"/api/v1/projects/{project.name}/reviews/summary/").json()
    assert summary["rejected"] == 1 and summary["by_annotator"][0]["rejected"] == 1


def test_fix_sets_the_asset_label_through_review(project, engineer, annotator, member, api):
    _project(project, engineer)
    reviewer = member(project, Role.REVIEWER, "rev")
    a = _answer(project, annotator, "cat")
    task = ReviewTask.objects.get()
    resp = api(reviewer).post(
        f"/api/v1/labeling/reviews/{task.pk}/decide/", {"action": "fix", "result": {"label": "bird"}}, format="json"
    )
    assert resp.status_code == 200 and resp.json()["fixed_result"] == {"label": "bird"}
    assert Annotation.objects.get(pk=a.pk).status == "fixed" and a.annotator_id == annotator.pk
    assert ProjectAsset.objects.get().label == "bird"
    event = LabelEvent.objects.order_by("-pk").first()
    assert (event.via, event.ref, event.old_label) == ("review", task.pk, "cat")
    # Annotators do not review.
    assert api(annotator).get(f"/api/v1/projects/{project.name}/reviews/").status_code == 403


def test_a_tie_opens_a_disagreement_decided_by_accepting_one_vote(project, engineer, annotator, member, api):
    _project(project, engineer, required=2, review_rate=0.0)
    reviewer = member(project, Role.REVIEWER, "rev")
    other = member(project, Role.ANNOTATOR, "ann2")
    _answer(project, annotator, "cat")
    dog = _answer(project, other, "dog")
    task = ReviewTask.objects.get()
    assert task.reason == "disagreement" and QueueItem.objects.get().needs_review
    row = api(reviewer).get(f"/api/v1/projects/{project.name}/reviews/").json()["results"][0]
    assert sorted(v["result"]["label"] for v in row["votes"]) == ["cat", "dog"] and row["annotation"] is None
    url = f"/api/v1/labeling/reviews/{task.pk}/decide/"
    resp = api(reviewer).post(url, {"action": "reject", "comment": "no"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_action"
    resp = api(reviewer).post(url, {"action": "accept", "annotation": dog.pk}, format="json")
    assert resp.status_code == 200, resp.json()
    item = QueueItem.objects.get()
    assert (item.consensus_label, item.needs_review) == ("dog", False)
    assert ProjectAsset.objects.get().label == "dog"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locking under concurrency is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_two_reviewers_deciding_one_review_exactly_one_wins(transactional_db, project, engineer, annotator, member):
    _project(project, engineer)
    reviewers = [member(project, Role.REVIEWER, f"rev{i}") for i in range(2)]
    _answer(project, annotator, "cat")
    task = ReviewTask.objects.get()
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def decide(user, label):
        try:
            start.wait()
            review.review_decide(review_id=task.pk, user=user, action="fix", result={"label": label})
            outcomes.append("won")
        except Exception as exc:
            outcomes.append(getattr(exc, "code", repr(exc)))
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=decide, args=(u, lbl)) for u, lbl in zip(reviewers, ["dog", "bird"], strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["review_decided", "won"]
    task.refresh_from_db()
    assert ProjectAsset.objects.get().label == task.fixed_result["label"]
    assert LabelEvent.objects.filter(via="review").count() == 1
