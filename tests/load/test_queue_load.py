"""The labelling queue under load: many annotators on a bounded pool of connections claim, submit, skip
and walk away (their leases expire) until every item is done; nothing is given out twice, no item gets
more than its overlap, and no submission is lost.

Size by environment: LOAD_ITEMS (submissions per test, default 1500: both overlaps in about a minute and
a half on two cores; items are LOAD_ITEMS / overlap), LOAD_ANNOTATORS (default 30) and LOAD_POOL
(connections, default min(annotators, 24)). The full run: LOAD_ITEMS=1000000 LOAD_ANNOTATORS=200 pytest tests/load
"""

import queue
import random
import threading
import time
import uuid
from collections import Counter

import pytest
from django.db import connection, connections
from django.db.models import Count, Exists, F, OuterRef, Q

from bench.labeling_load import run_pool
from crucible.core.errors import Conflict
from labeling import services
from labeling.models import Annotation, Lease, QueueItem

from .conftest import LOAD_ITEMS, LOAD_POOL, seed_queue

pytestmark = [
    pytest.mark.load,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="load under concurrent row locking is PostgreSQL's (CI runs it)"
    ),
]

CLASSES = [{"name": "cat", "key": "c"}, {"name": "dog", "key": "d"}, {"name": "bird", "key": "b"}]
# What an annotator does with each item on screen: submit mostly, sometimes skip in one of the three modes.
ACTIONS = ["submit"] * 90 + ["requeue"] * 4 + ["later"] * 4 + ["drop"] * 2
# Chance per step that an annotator walks away, leaving their leases to expire, and comes back later.
WALK_AWAY = 0.01
ROUNDS = 6


def _left_for(project, user) -> bool:
    """Whether an item is still claimable by the annotator (counting rows other claims held locked)."""
    mine = Lease.objects.filter(item=OuterRef("pk"), annotator=user)
    return (
        QueueItem.objects.filter(project=project, state="open", is_gold=False, claimed__lt=F("required_annotations"))
        .exclude(Exists(Annotation.objects.filter(item=OuterRef("pk"), annotator=user)))
        .exclude(Exists(mine.filter(Q(released_at__isnull=True) | Q(release_reason__in=["skipped", "dropped"]))))
        .exists()
    )


class Load:
    """Annotators served by LOAD_POOL worker threads; a janitor thread expires leases as the task does."""

    def __init__(self, project, users, *, seed: int, walk_away: float) -> None:
        self.project = project
        self.users = users
        self.rng = random.Random(seed)
        self.walk_away = walk_away
        self.ready: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.submitted: list[int] = []
        self.counts: Counter = Counter()
        self.errors: list[BaseException] = []
        self.active = 0

    def step(self, user) -> bool:
        """One annotator step: claim, then act on every item on screen; False once nothing is left to them."""
        leases = services.lease_claim_next(project=self.project, annotator=user)
        if not leases:
            return _left_for(self.project, user)
        with self.lock:
            leaving = self.rng.random() < self.walk_away
            actions = [self.rng.choice(ACTIONS) for _ in leases]
        if leaving:
            for lease in leases:  # the browser is closed: the leases run out
                services.lease_heartbeat(lease_id=lease.pk, annotator=user, ttl_seconds=0)
            with self.lock:
                self.counts["walked away"] += 1
            time.sleep(0.3)
            return True
        for lease, action in zip(leases, actions, strict=True):
            try:
                if action == "submit":
                    annotation = services.annotation_submit(
                        item_id=lease.item_id,
                        annotator=user,
                        result={"label": CLASSES[lease.item_id % 3]["name"]},
                        time_spent_ms=1,
                        idempotency_key=uuid.uuid4().hex,
                    )
                    with self.lock:
                        self.submitted.append(annotation.pk)
                else:
                    services.lease_release(lease_id=lease.pk, annotator=user, mode=action)
                with self.lock:
                    self.counts[action] += 1
            except Conflict as exc:
                # Only a lease that ran out (the janitor expired it after a walk-away) may be gone.
                if exc.code != "not_leased":
                    raise
                with self.lock:
                    self.counts["lease lost"] += 1
        return True

    def worker(self) -> None:
        try:
            while True:
                try:
                    user = self.ready.get(timeout=0.2)
                except queue.Empty:
                    with self.lock:
                        if self.active == 0 or self.errors:
                            return
                    continue
                again = self.step(user)
                if again:
                    self.ready.put(user)
                else:
                    with self.lock:
                        self.active -= 1
        except BaseException as exc:  # reported by the test
            with self.lock:
                self.errors.append(exc)
        finally:
            connections.close_all()

    def janitor(self, done: threading.Event) -> None:
        try:
            while not done.wait(0.2):
                with self.lock:
                    self.counts["expired"] += services.leases_expire()
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
        finally:
            connections.close_all()

    def run(self) -> None:
        self.active = len(self.users)
        for user in self.users:
            self.ready.put(user)
        done = threading.Event()
        run_pool(self.worker, LOAD_POOL, beside=lambda: self.janitor(done), stop=done)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("required", [1, 2])
def test_annotators_finish_the_queue_without_duplicates_overlap_breaches_or_lost_submissions(
    transactional_db, project, engineer, annotators, required
):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    n = LOAD_ITEMS // required  # the same number of submissions whatever the overlap
    seed_queue(project, n, required=required)
    assert QueueItem.objects.filter(project=project, state="open").count() == n

    loads = []
    for round_ in range(ROUNDS):
        # Later rounds pick up what walk-aways left: their leases expire, the items go back to the queue.
        load = Load(project, annotators, seed=round_, walk_away=WALK_AWAY if round_ == 0 else 0.0)
        load.run()
        assert load.errors == []
        loads.append(load)
        services.leases_expire()
        if not QueueItem.objects.filter(project=project, state="open").exists():
            break

    counts = sum((load.counts for load in loads), Counter())
    submitted = [pk for load in loads for pk in load.submitted]
    # The run did mix in skips of every mode and expiries.
    assert all(counts[k] > 0 for k in ("requeue", "later", "drop", "walked away", "expired")), counts

    # Every item is done, with exactly its overlap of distinct annotators and nothing left leased.
    items = QueueItem.objects.filter(project=project)
    assert items.filter(state="open").count() == 0
    assert Lease.objects.filter(item__project=project, released_at__isnull=True).count() == 0
    per_item = items.annotate(n=Count("annotations"), who=Count("annotations__annotator", distinct=True))
    assert per_item.exclude(n=required).count() == 0  # no overlap violation
    assert per_item.exclude(who=required).count() == 0  # no annotator twice on one item
    assert items.exclude(submitted_count=required).count() == 0
    assert items.exclude(claimed=required).count() == 0
    # No lost submission: every submit that returned is a stored row, and every stored row was returned.
    stored = set(Annotation.objects.filter(item__project=project).values_list("pk", flat=True))
    assert len(submitted) == len(set(submitted)) == len(stored) == n * required
    assert set(submitted) == stored
    # No duplicate claim: an annotator leased an item again only after a lease of theirs on it ran out
    # or was skipped "later".
    again = (
        Lease.objects.filter(item__project=project)
        .exclude(release_reason__in=["expired", "skipped_later"])
        .values("item_id", "annotator_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert list(again) == []
