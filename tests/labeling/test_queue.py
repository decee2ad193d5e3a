import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crucible.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crucible.core.models import Role
from curation.models import ProjectAsset
from labeling import services
from labeling.models import Annotation, Lease, QueueItem
from labeling.tasks import leases_expire

from .conftest import CLASSES, add_assets


def _submit(lease: Lease, user, label: str = "cat", key: str | None = None) -> Annotation:
    return services.annotation_submit(
        item_id=lease.item_id,
        annotator=user,
        result={"label": label},
        time_spent_ms=1200,
        idempotency_key=key or uuid.uuid4().hex,
    )


def test_asking_twice_gives_the_same_items_and_prefetch_gives_three_distinct(queue, annotator):
    project = queue(5)
    first = services.lease_claim_next(project=project, annotator=annotator)
    assert len(first) == 3
    assert len({lease.item_id for lease in first}) == 3
    again = services.lease_claim_next(project=project, annotator=annotator)
    assert [lease.pk for lease in again] == [lease.pk for lease in first]
    assert Lease.objects.count() == 3
    assert sorted(QueueItem.objects.values_list("claimed", flat=True)) == [0, 0, 1, 1, 1]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's claim statement")
def test_a_claim_is_one_statement_that_skips_locked_rows(queue, project, annotator):
    from django.test.utils import CaptureQueriesContext

    queue(3)
    with CaptureQueriesContext(connection) as queries:
        services.lease_claim_next(project=project, annotator=annotator)
    claims = [q["sql"] for q in queries.captured_queries if "claimed = claimed + 1" in q["sql"]]
    assert len(claims) == 1 and "FOR UPDATE SKIP LOCKED" in claims[0]


def test_items_come_by_priority_then_id(queue, project, engineer, annotator):
    queue(3)
    urgent = add_assets(project, 1, start=500)
    services.queue_items_add(project=project, user=engineer, project_asset_ids=urgent, priority=5)
    leases = services.lease_claim_next(project=project, annotator=annotator)
    assert leases[0].item.project_asset_id == urgent[0]


def test_overlap_two_gives_the_item_to_two_annotators_and_not_a_third(queue, project, member, annotator):
    queue(1, required=2)
    second = member(project, Role.ANNOTATOR, "ann2")
    third = member(project, Role.ANNOTATOR, "ann3")
    a = services.lease_claim_next(project=project, annotator=annotator)
    b = services.lease_claim_next(project=project, annotator=second)
    assert [lease.item_id for lease in a] == [lease.item_id for lease in b]
    assert services.lease_claim_next(project=project, annotator=third) == []
    _submit(a[0], annotator, "cat")
    _submit(b[0], second, "dog")
    item = QueueItem.objects.get()
    assert (item.state, item.submitted_count, item.claimed) == ("done", 2, 2)
    assert ProjectAsset.objects.get().label == ""  # two annotations: consensus decides later, not the last one
    assert services.lease_claim_next(project=project, annotator=third) == []


def test_submit_labels_the_asset_and_finishes_the_item(queue, project, annotator):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    annotation = _submit(lease, annotator, "dog")
    assert annotation.result == {"label": "dog"}
    item = QueueItem.objects.get()
    assert (item.state, item.submitted_count, item.claimed) == ("done", 1, 1)
    lease.refresh_from_db()
    assert lease.released_at is not None and lease.release_reason == "submitted"
    assert ProjectAsset.objects.get().label == "dog"
    assert services.lease_claim_next(project=project, annotator=annotator) == []


def test_submit_without_a_lease_is_a_conflict_and_changes_nothing(queue, project, annotator, member):
    queue(1)
    other = member(project, Role.ANNOTATOR, "ann2")
    (lease,) = services.lease_claim_next(project=project, annotator=other)
    with pytest.raises(Conflict) as exc:
        _submit(lease, annotator)
    assert exc.value.code == "not_leased"
    assert Annotation.objects.count() == 0
    assert QueueItem.objects.get().submitted_count == 0


def test_unknown_class_is_refused_and_the_lease_kept(queue, project, annotator):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    with pytest.raises(ValidationFailed) as exc:
        _submit(lease, annotator, "zebra")
    assert exc.value.code == "unknown_class"
    lease.refresh_from_db()
    assert lease.released_at is None and Annotation.objects.count() == 0
    _submit(lease, annotator, "bird")


def test_same_idempotency_key_twice_stores_one_annotation(queue, project, annotator):
    queue(2)
    leases = services.lease_claim_next(project=project, annotator=annotator)
    first = _submit(leases[0], annotator, "cat", key="k-1")
    again = _submit(leases[0], annotator, "cat", key="k-1")
    assert again.pk == first.pk and Annotation.objects.count() == 1
    assert QueueItem.objects.get(pk=leases[0].item_id).submitted_count == 1
    with pytest.raises(Conflict) as exc:
        _submit(leases[1], annotator, "cat", key="k-1")
    assert exc.value.code == "idempotency_key_reused"


def test_skip_gives_the_item_to_others_not_back_to_me(queue, project, annotator, member):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    services.lease_release(lease_id=lease.pk, annotator=annotator)
    assert QueueItem.objects.get().claimed == 0
    assert services.lease_claim_next(project=project, annotator=annotator) == []
    other = member(project, Role.ANNOTATOR, "ann2")
    assert [x.item_id for x in services.lease_claim_next(project=project, annotator=other)] == [lease.item_id]
    with pytest.raises(Conflict):
        services.lease_release(lease_id=lease.pk, annotator=annotator)


def test_heartbeat_extends_a_live_lease(queue, project, annotator):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator, ttl_seconds=30)
    renewed = services.lease_heartbeat(lease_id=lease.pk, annotator=annotator)
    assert renewed.expires_at > lease.expires_at + timedelta(seconds=500)


def test_sweeper_frees_an_expired_lease(queue, project, annotator, member):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    assert leases_expire.apply().get() == 0
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases_expire.apply().get() == 1
    lease.refresh_from_db()
    assert lease.release_reason == "expired"
    assert QueueItem.objects.get().claimed == 0
    other = member(project, Role.ANNOTATOR, "ann2")
    assert [x.item_id for x in services.lease_claim_next(project=project, annotator=other)] == [lease.item_id]
    with pytest.raises(Conflict):
        _submit(lease, annotator)
    with pytest.raises(Conflict):
        services.lease_heartbeat(lease_id=lease.pk, annotator=annotator)


def test_the_sweeper_runs_every_minute_from_beat(db):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="labeling.leases_expire")
    assert task.enabled and (task.interval.every, task.interval.period) == (60, "seconds")


def test_database_refuses_more_claims_than_required_even_through_raw_sql(queue):
    queue(1)
    item = QueueItem.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {QueueItem._meta.db_table} SET claimed = required_annotations + 1 WHERE id = %s", [item.pk]
        )
    item.refresh_from_db()
    assert item.claimed == 0


def test_database_refuses_two_live_leases_and_two_annotations_of_one_annotator(queue, project, annotator):
    queue(1, required=3)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.create(item_id=lease.item_id, annotator=annotator, expires_at=lease.expires_at)
    _submit(lease, annotator)
    with pytest.raises(IntegrityError), transaction.atomic():
        Annotation.objects.create(
            item_id=lease.item_id, annotator=annotator, result={"label": "cat"}, time_spent_ms=1, idempotency_key="x"
        )


def test_queue_items_add_takes_unlabelled_assets_once(project, engineer):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 4)
    add_assets(project, 2, start=100, label="cat")
    assert services.queue_items_add(project=project, user=engineer) == 4
    assert services.queue_items_add(project=project, user=engineer) == 0
    assert QueueItem.objects.count() == 4
    item = QueueItem.objects.first()
    assert 0 <= item.random_key < 1 and item.state == "open"


def test_queue_items_add_refuses_assets_of_another_project_and_needs_a_schema(project, engineer, make_user):
    from crucible.core.models import Project

    other = Project.objects.create(name="other")
    foreign = add_assets(other, 1, start=900)
    with pytest.raises(ValidationFailed) as exc:
        services.queue_items_add(project=project, user=engineer)
    assert exc.value.code == "no_label_schema"
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    with pytest.raises(ValidationFailed) as exc:
        services.queue_items_add(project=project, user=engineer, project_asset_ids=foreign)
    assert exc.value.code == "unknown_asset"
    assert QueueItem.objects.count() == 0


def test_schema_cannot_drop_a_class_in_use(queue, project, engineer, annotator):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    _submit(lease, annotator, "bird")
    with pytest.raises(Conflict) as exc:
        services.label_schema_set(project=project, user=engineer, classes=CLASSES[:2])
    assert exc.value.code == "class_in_use"
    services.label_schema_set(project=project, user=engineer, classes=[*CLASSES, {"name": "fish", "key": "f"}])


def test_annotators_and_outsiders_cannot_write_the_schema(project, annotator, make_user):
    with pytest.raises(Forbidden):
        services.label_schema_set(project=project, user=annotator, classes=CLASSES)
    with pytest.raises(NotFound):
        services.label_schema_set(project=project, user=make_user("stranger"), classes=CLASSES)
