"""Gold items: handed out at the gold rate, never counted, scored, and pausing inaccurate annotators."""

import threading
import uuid

import pytest
from django.db import connection, connections

from crucible.core.models import Membership, Role, User
from labeling import gold, services
from labeling.models import Annotation, AnnotatorStatus, Lease, QueueItem

from .conftest import CLASSES, add_assets


def _gold_project(project, engineer, *, n_gold: int, n_items: int = 0, **settings):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    services.queue_settings_set(project=project, user=engineer, review_rate=0, **settings)
    ids = add_assets(project, n_gold + n_items)
    if n_items:
        services.queue_items_add(project=project, user=engineer, project_asset_ids=ids[n_gold:])
    items = [{"project_asset_id": pk, "result": {"label": "cat"}} for pk in ids[:n_gold]]
    if n_gold:
        gold.gold_items_add(project=project, user=engineer, items=items)
    return ids


def _answer(user, lease, label):
    return services.annotation_submit(
        item_id=lease.item_id,
        annotator=user,
        result={"label": label},
        time_spent_ms=1,
        idempotency_key=uuid.uuid4().hex,
    )


def test_gold_items_are_handed_out_uncounted_and_look_like_others(project, engineer, annotator, api):
    _gold_project(project, engineer, n_gold=2, n_items=3, gold_rate=1.0)
    resp = api(annotator).post(f"/api/v1/projects/{project.name}/queue/next/")
    leases = resp.json()["results"]
    gold_ids = set(QueueItem.objects.filter(is_gold=True).values_list("pk", flat=True))
    assert len(leases) == 3 and len({lease["item"] for lease in leases} & gold_ids) == 2
    ordinary = next(lease for lease in leases if lease["item"] not in gold_ids)
    gold_lease = next(lease for lease in leases if lease["item"] in gold_ids)
    assert set(ordinary) == set(gold_lease) and gold_lease["kind"] == "image"
    assert set(QueueItem.objects.filter(is_gold=True).values_list("claimed", "submitted_count")) == {(0, 0)}
    # Answering a gold item scores it and leaves the item as it was.
    a = _answer(annotator, Lease.objects.get(pk=gold_lease["lease"]), "dog")
    assert a.is_gold and a.gold_correct is False
    item = QueueItem.objects.get(pk=gold_lease["item"])
    assert (item.claimed, item.submitted_count, item.consensus_result) == (0, 0, None)
    me = api(annotator).get(f"/api/v1/projects/{project.name}/me/").json()
    assert me["gold"]["answered"] == 1 and me["gold"]["accuracy"] == 0.0
    assert me["gold"]["per_class"] == {"cat": {"answered": 1, "correct": 0}, "dog": {"answered": 1, "correct": 0}}
    listed = api(engineer).get(f"/api/v1/projects/{project.name}/gold/").json()["results"]
    assert sorted((g["answered"], g["correct"]) for g in listed) == [(0, 0), (1, 0)]
    # An answered gold item is not handed out again; the released one is.
    services.lease_claim_next(project=project, annotator=annotator)
    held = set(Lease.objects.filter(annotator=annotator, released_at__isnull=True).values_list("item_id", flat=True))
    assert gold_lease["item"] not in held


def test_gold_is_not_handed_out_alone_once_the_queue_is_empty(project, engineer, annotator):
    _gold_project(project, engineer, n_gold=3, n_items=1, gold_rate=0.5)
    services.queue_settings_set(project=project, user=engineer, gold_rate=0.0, review_rate=0)
    first = services.lease_claim_next(project=project, annotator=annotator)
    assert [lease.item.is_gold for lease in first] == [False]
    _answer(annotator, first[0], "cat")
    services.queue_settings_set(project=project, user=engineer, gold_rate=0.5, review_rate=0)
    # Nothing ordinary is left: however often it asks, the annotator is not given gold items alone.
    for _ in range(10):
        assert services.lease_claim_next(project=project, annotator=annotator) == []


def test_gold_rate_zero_never_hands_gold(project, engineer, annotator):
    _gold_project(project, engineer, n_gold=3, n_items=3, gold_rate=0.0)
    leases = services.lease_claim_next(project=project, annotator=annotator)
    assert len(leases) == 3 and not any(lease.item.is_gold for lease in leases)


def _gold_lease(annotator, project):
    """The first gold item among the annotator's leases (gold items share the leases with ordinary ones)."""
    return next(
        lease for lease in services.lease_claim_next(project=project, annotator=annotator) if lease.item.is_gold
    )


def test_low_gold_accuracy_pauses_and_resume_starts_a_new_window(project, engineer, annotator, api):
    _gold_project(project, engineer, n_gold=4, n_items=10, gold_rate=1.0, gold_min_answers=3, gold_min_accuracy=0.7)
    for label in ("cat", "dog"):
        _answer(annotator, _gold_lease(annotator, project), label)
    assert not AnnotatorStatus.objects.filter(paused=True).exists()  # 2 answers: under the minimum
    # The third answer (1 of 3 right) pauses; the items already held may still be submitted.
    _answer(annotator, _gold_lease(annotator, project), "bird")
    status = AnnotatorStatus.objects.get(annotator=annotator)
    assert status.paused and "33%" in status.reason and "70%" in status.reason
    resp = api(annotator).post(f"/api/v1/projects/{project.name}/queue/next/")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "annotator_paused"
    assert "gold accuracy 33%" in resp.json()["error"]["message"]
    listed = api(engineer).get(f"/api/v1/projects/{project.name}/annotators/").json()["results"]
    row = next(r for r in listed if r["annotator"] == annotator.pk)
    assert row["paused"] and row["gold_answered"] == 3 and row["gold_accuracy"] == pytest.approx(1 / 3)
    # Annotators cannot resume themselves; engineers can, and the old answers stop counting.
    url = f"/api/v1/projects/{project.name}/annotators/{annotator.pk}/resume/"
    assert api(annotator).post(url).status_code == 403
    assert api(engineer).post(url).json() == {"annotator": annotator.pk, "paused": False, "reason": ""}
    _answer(annotator, _gold_lease(annotator, project), "dog")
    assert not AnnotatorStatus.objects.get(annotator=annotator).paused


def test_engineer_pauses_by_hand(project, engineer, annotator, api):
    _gold_project(project, engineer, n_gold=0, n_items=2, gold_rate=0.0)
    url = f"/api/v1/projects/{project.name}/annotators/{annotator.pk}/pause/"
    assert api(engineer).post(url, {"reason": ""}, format="json").status_code == 400
    assert api(engineer).post(url, {"reason": "off-task"}, format="json").status_code == 200
    resp = api(annotator).post(f"/api/v1/projects/{project.name}/queue/next/")
    assert resp.status_code == 403 and resp.json()["error"]["message"] == "off-task"
    me = api(annotator).get(f"/api/v1/projects/{project.name}/me/").json()
    assert me["paused"] and me["reason"] == "off-task" and me["gold"]["accuracy"] is None


def test_gold_answers_are_validated_and_deleted(project, engineer, annotator, api):
    ids = _gold_project(project, engineer, n_gold=0, n_items=1, gold_rate=0.0)
    url = f"/api/v1/projects/{project.name}/gold/"
    bad = {"items": [{"project_asset_id": ids[0], "result": {"label": "cow"}}]}
    resp = api(engineer).post(url, bad, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_class"
    assert api(annotator).post(url, bad, format="json").status_code == 403
    good = {"items": [{"project_asset_id": ids[0], "result": {"label": "cat"}}]}
    resp = api(engineer).post(url, good, format="json")
    assert resp.status_code == 201 and resp.json() == {"created": 1}
    # The asset keeps its ordinary item besides the gold one.
    assert QueueItem.objects.filter(project_asset_id=ids[0]).count() == 2
    gold_item = QueueItem.objects.get(is_gold=True)
    assert api(engineer).delete(f"/api/v1/labeling/gold/{gold_item.pk}/").status_code == 204
    assert not QueueItem.objects.filter(is_gold=True).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locking under concurrency is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_mix_gold_without_duplicates(transactional_db, project, engineer):
    _gold_project(project, engineer, n_gold=5, n_items=120, gold_rate=0.3, gold_min_answers=1000)
    users = []
    for i in range(8):
        user = User.objects.create_user(username=f"g{i}", password="x")
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        users.append(user)
    errors: list[BaseException] = []
    start = threading.Barrier(len(users))

    def work(user):
        try:
            start.wait()
            while True:
                leases = services.lease_claim_next(project=project, annotator=user)
                if not leases:
                    return
                for lease in leases:
                    _answer(user, lease, "cat")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    ordinary = QueueItem.objects.filter(is_gold=False)
    assert all(item.submitted_count == item.claimed == 1 for item in ordinary)
    assert Annotation.objects.filter(is_gold=False).count() == 120
    assert set(QueueItem.objects.filter(is_gold=True).values_list("claimed", flat=True)) == {0}
    # Each annotator answered each gold item at most once.
    pairs = list(Annotation.objects.filter(is_gold=True).values_list("annotator_id", "item_id"))
    assert len(pairs) == len(set(pairs))
