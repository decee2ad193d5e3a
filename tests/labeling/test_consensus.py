"""Consensus (majority vote when an item is done), item history and the disagreements listing."""

import threading
import uuid

import pytest
from django.db import connection, connections

from crucible.core.models import Role
from curation.models import ProjectAsset
from labeling import services
from labeling.models import QueueItem

from .conftest import add_assets


def _vote(project, annotators, labels):
    """Each annotator claims the project's first item and submits its label, in order."""
    for user, label in zip(annotators, labels, strict=True):
        lease = services.lease_claim_next(project=project, annotator=user)[0]
        services.annotation_submit(
            item_id=lease.item_id,
            annotator=user,
            result={"label": label},
            time_spent_ms=900,
            idempotency_key=uuid.uuid4().hex,
        )


def _annotators(project, member, annotator, n):
    return [annotator] + [member(project, Role.ANNOTATOR, f"ann{i}") for i in range(2, n + 1)]


def test_overlap_three_with_a_majority_labels_the_asset(queue, project, member, annotator):
    queue(1, required=3)
    _vote(project, _annotators(project, member, annotator, 3), ["cat", "cat", "dog"])
    item = QueueItem.objects.get()
    assert (item.state, item.consensus_label, item.needs_review) == ("done", "cat", False)
    assert ProjectAsset.objects.get().label == "cat"


def test_no_decision_before_the_last_annotation(queue, project, member, annotator):
    queue(1, required=3)
    users = _annotators(project, member, annotator, 3)
    _vote(project, users[:2], ["cat", "cat"])
    item = QueueItem.objects.get()
    assert (item.state, item.consensus_label, item.needs_review) == ("open", None, False)
    assert ProjectAsset.objects.get().label == ""


def test_a_tie_goes_to_review_and_leaves_the_label(api, queue, project, member, annotator, engineer):
    queue(1, required=2)
    ProjectAsset.objects.update(label="bird")
    _vote(project, _annotators(project, member, annotator, 2), ["cat", "dog"])
    item = QueueItem.objects.get()
    assert (item.state, item.consensus_label, item.needs_review) == ("done", None, True)
    assert ProjectAsset.objects.get().label == "bird"
    body = api(engineer).get(f"/api/v1/projects/{project.name}/queue/disagreements/").json()
    assert body["next_after"] is None
    (row,) = body["results"]
    assert row["item"] == item.pk and row["required_annotations"] == 2
    assert row["votes"] == {"cat": 1, "dog": 1}
    assert [(a["annotator_username"], a["label"]) for a in row["annotations"]] == [("ann", "cat"), ("ann2", "dog")]


def test_three_way_split_needs_review(queue, project, member, annotator):
    queue(1, required=3)
    _vote(project, _annotators(project, member, annotator, 3), ["cat", "dog", "bird"])
    item = QueueItem.objects.get()
    assert (item.consensus_label, item.needs_review) == (None, True)
    assert ProjectAsset.objects.get().label == ""


def test_required_one_labels_the_asset_as_before(queue, project, annotator):
    queue(1)
    _vote(project, [annotator], ["dog"])
    item = QueueItem.objects.get()
    assert (item.state, item.consensus_label, item.needs_review) == ("done", "dog", False)
    assert ProjectAsset.objects.get().label == "dog"


def test_history_lists_annotations_and_leases_in_order(api, queue, project, member, annotator, engineer):
    queue(1, required=2)
    second = member(project, Role.ANNOTATOR, "ann2")
    skipper = member(project, Role.ANNOTATOR, "ann3")
    (lease,) = services.lease_claim_next(project=project, annotator=skipper)
    services.lease_release(lease_id=lease.pk, annotator=skipper, mode="drop")
    _vote(project, [annotator, second], ["dog", "dog"])
    item = QueueItem.objects.select_related("project_asset__asset").get()
    body = api(engineer).get(f"/api/v1/labeling/items/{item.pk}/history/").json()
    assert body["item"] == item.pk and body["sha256"] == item.project_asset.asset.sha256
    assert (body["state"], body["required_annotations"], body["consensus_label"], body["needs_review"]) == (
        "done",
        2,
        "dog",
        False,
    )
    assert [(a["annotator_username"], a["label"], a["time_spent_ms"]) for a in body["annotations"]] == [
        ("ann", "dog", 900),
        ("ann2", "dog", 900),
    ]
    assert [(x["annotator_username"], x["released_reason"]) for x in body["leases"]] == [
        ("ann3", "dropped"),
        ("ann", "submitted"),
        ("ann2", "submitted"),
    ]
    assert all(x["released_at"] is not None for x in body["leases"])
    created = [x["created_at"] for x in body["leases"]]
    assert created == sorted(created)


def test_annotator_gets_403_on_history_and_disagreements(api, queue, project, annotator):
    queue(1)
    item = QueueItem.objects.get()
    resp = api(annotator).get(f"/api/v1/labeling/items/{item.pk}/history/")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    resp = api(annotator).get(f"/api/v1/projects/{project.name}/queue/disagreements/")
    assert resp.status_code == 403


def test_history_of_an_unknown_item_is_404(api, engineer):
    assert api(engineer).get("/api/v1/labeling/items/999999/history/").status_code == 404


def test_disagreements_page_by_id(api, queue, project, engineer):
    queue(5, required=2)
    QueueItem.objects.update(state=QueueItem.State.DONE, needs_review=True)
    ids = sorted(QueueItem.objects.values_list("pk", flat=True))
    url = f"/api/v1/projects/{project.name}/queue/disagreements/"
    first = api(engineer).get(url, {"limit": 2}).json()
    assert [r["item"] for r in first["results"]] == ids[:2] and first["next_after"] == ids[1]
    second = api(engineer).get(url, {"limit": 2, "after": first["next_after"]}).json()
    assert [r["item"] for r in second["results"]] == ids[2:4]
    last = api(engineer).get(url, {"limit": 2, "after": second["next_after"]}).json()
    assert [r["item"] for r in last["results"]] == ids[4:] and last["next_after"] is None
    assert api(engineer).get(url, {"limit": 0}).status_code == 400


def test_query_counts_are_bounded(
    queue, project, member, annotator, engineer, django_assert_max_num_queries, django_assert_num_queries
):
    from labeling import selectors

    queue(1, required=3)
    users = _annotators(project, member, annotator, 3)
    for user in users:
        services.lease_claim_next(project=project, annotator=user)
    item = QueueItem.objects.get()
    for user, label in zip(users, ["cat", "dog", "bird"], strict=True):
        # Idempotency check, item, role, schema, settings, lease, lock, insert, votes, update, the tie's
        # review or the asset's label with its event, a sampled review (+ savepoints): bounded.
        with django_assert_max_num_queries(20):
            services.annotation_submit(
                item_id=item.pk,
                annotator=user,
                result={"label": label},
                time_spent_ms=1,
                idempotency_key=uuid.uuid4().hex,
            )
    with django_assert_max_num_queries(5):
        selectors.item_history(item_id=item.pk, user=engineer)
    # More items needing review cost no more queries.
    add_assets(project, 10, start=100)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    QueueItem.objects.update(state=QueueItem.State.DONE, needs_review=True)
    with django_assert_max_num_queries(4):
        rows, _ = selectors.queue_disagreements(project=project, user=engineer)
    assert len(rows) == QueueItem.objects.count() > 10


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locking under concurrency is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_two_last_submissions_racing_decide_once(transactional_db, queue, project, member, annotator):
    items = 10
    queue(items, required=2)
    users = _annotators(project, member, annotator, 2)
    leases = {user.pk: services.lease_claim_next(project=project, annotator=user) for user in users}
    # Three leases each (the prefetch): submit each item's two votes at the same moment, item by item.
    errors: list[BaseException] = []
    for round_ in range(3):
        start = threading.Barrier(2)

        def work(user, lease) -> None:
            try:
                start.wait()
                services.annotation_submit(
                    item_id=lease.item_id,
                    annotator=user,
                    result={"label": "cat"},
                    time_spent_ms=1,
                    idempotency_key=uuid.uuid4().hex,
                )
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=work, args=(u, leases[u.pk][round_])) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    done = QueueItem.objects.filter(state=QueueItem.State.DONE).select_related("project_asset")
    assert len(done) == 3
    assert {(i.submitted_count, i.consensus_label, i.needs_review, i.project_asset.label) for i in done} == {
        (2, "cat", False, "cat")
    }
