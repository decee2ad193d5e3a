"""Many annotators claiming and submitting at once: no item is ever given out more than it requires."""

import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, connections
from django.db.models import Count, F

from crucible.core.models import Membership, Role, User
from labeling import services
from labeling.models import Annotation, Lease, QueueItem

from .conftest import CLASSES, add_assets

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locking under concurrency is PostgreSQL's (CI runs it)"
)

THREADS = 16
ITEMS = 300


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("required", "order"), [(1, "sequential"), (2, "sequential"), (1, "random")])
def test_sixteen_annotators_claim_and_submit_without_duplicates(transactional_db, project, engineer, required, order):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    services.queue_settings_set(project=project, user=engineer, order=order)
    add_assets(project, ITEMS)
    assert services.queue_items_add(project=project, user=engineer, required_annotations=required) == ITEMS
    annotators = []
    for i in range(THREADS):
        user = User.objects.create_user(username=f"worker{i}", password="x")
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        annotators.append(user)

    submitted: list[list[int]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(index: int) -> None:
        user = annotators[index]
        try:
            start.wait()
            while True:
                leases = services.lease_claim_next(project=project, annotator=user)
                if not leases:
                    # Nothing claimable for this annotator, even counting rows other claims held locked.
                    left = (
                        QueueItem.objects.filter(project=project, state="open", claimed__lt=F("required_annotations"))
                        .exclude(annotations__annotator=user)
                        .exclude(leases__annotator=user, leases__released_at__isnull=True)
                        .exists()
                    )
                    if not left:
                        return
                    continue
                for lease in leases:
                    annotation = services.annotation_submit(
                        item_id=lease.item_id,
                        annotator=user,
                        result={"label": CLASSES[lease.item_id % 3]["name"]},
                        time_spent_ms=1,
                        idempotency_key=uuid.uuid4().hex,
                    )
                    submitted[index].append(annotation.pk)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    # No lost submissions: every annotation a thread was given is stored, and nothing else.
    stored = set(Annotation.objects.filter(item__project=project).values_list("pk", flat=True))
    ids = [pk for per_thread in submitted for pk in per_thread]
    assert len(ids) == len(set(ids)) == len(stored) == ITEMS * required
    assert set(ids) == stored
    # No duplicate claims: each item leased exactly `required` times, to distinct annotators.
    leases = Counter(Lease.objects.filter(item__project=project).values_list("item_id", "annotator_id"))
    assert max(leases.values()) == 1
    per_item = Counter(item_id for item_id, _ in leases)
    assert set(per_item.values()) == {required}
    # No item with more annotations than required; every item done.
    counts = QueueItem.objects.filter(project=project).annotate(n=Count("annotations"))
    assert {(i.state, i.n, i.submitted_count, i.claimed) for i in counts} == {("done", required, required, required)}
    assert Lease.objects.filter(released_at__isnull=True).count() == 0
