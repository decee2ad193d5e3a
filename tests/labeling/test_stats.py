"""The queue console's figures (labeling.stats): exact for a small known queue, a fixed number of queries."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crucible.core.models import Role
from labeling import services, stats
from labeling.models import Annotation, Lease, QueueItem
from tests.labeling.conftest import CLASSES, add_assets

NOW = dt.datetime(2026, 3, 10, 14, 20, tzinfo=dt.UTC)


def at(hour: int, minute: int, days_ago: int = 0) -> dt.datetime:
    return NOW.replace(hour=hour, minute=minute) - dt.timedelta(days=days_ago)


def annotate(item: QueueItem, user, ms: int, when: dt.datetime) -> Annotation:
    a = Annotation.objects.create(
        item=item, annotator=user, result={"label": "cat"}, time_spent_ms=ms, idempotency_key=f"k-{item.pk}-{user.pk}"
    )
    Annotation.objects.filter(pk=a.pk).update(created_at=when)
    return a


def lease(item: QueueItem, user, created: dt.datetime, expires: dt.datetime, released: dt.datetime | None = None):
    obj = Lease.objects.create(
        item=item,
        annotator=user,
        expires_at=expires,
        released_at=released,
        release_reason="submitted" if released else "",
    )
    Lease.objects.filter(pk=obj.pk).update(created_at=created)
    return obj


@pytest.fixture
def frozen(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)


@pytest.fixture
def small_queue(frozen, project, engineer, member):
    """Four items needing one annotation, two needing two; ann1 and ann2 have worked, ann3 has not."""
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 4)
    services.queue_items_add(project=project, user=engineer, required_annotations=1)
    add_assets(project, 2, start=100)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    items = list(QueueItem.objects.filter(project=project).order_by("required_annotations", "pk"))
    assert [i.required_annotations for i in items] == [1, 1, 1, 1, 2, 2]
    ann1, ann2, _ann3 = (member(project, Role.ANNOTATOR, name) for name in ("ann1", "ann2", "ann3"))
    annotate(items[0], ann1, 1000, at(9, 0, days_ago=3))
    annotate(items[1], ann1, 3000, at(13, 5))
    annotate(items[2], ann1, 2000, at(14, 10))
    annotate(items[4], ann2, 4000, at(12, 30))
    annotate(items[5], ann2, 6000, at(14, 15))
    QueueItem.objects.filter(pk__in=[items[0].pk, items[1].pk, items[2].pk]).update(state="done")
    lease(items[2], ann1, at(14, 9), at(14, 30), released=at(14, 10))
    lease(items[3], ann1, at(14, 18), at(14, 25))  # live
    lease(items[3], ann2, at(14, 0), at(14, 19))  # expired, not yet reaped
    return project


def test_queue_stats_are_exact(small_queue):
    assert stats.queue_stats(project=small_queue) == {
        "by_overlap": [
            {"required": 1, "open": 1, "done": 3, "gold": 0, "total": 4},
            {"required": 2, "open": 2, "done": 0, "gold": 0, "total": 2},
        ],
        "items_open": 3,
        "items_done": 3,
        "items_total": 6,
        "done_fraction": 0.5,
        "live_leases": 1,
        "stale_leases": 1,
        "submissions": 5,
        "submissions_today": 4,
        "annotators_active": 2,
    }


def test_throughput_by_hour_is_exact(small_queue):
    rows = stats.throughput_by_hour(project=small_queue)
    assert len(rows) == 24
    assert rows[0]["hour"] == at(15, 0, days_ago=1) and rows[-1]["hour"] == at(14, 0)
    counted = {r["hour"]: r["submissions"] for r in rows if r["submissions"]}
    assert counted == {at(12, 0): 1, at(13, 0): 1, at(14, 0): 2}  # the one of three days ago is left out
    assert [r["submissions"] for r in stats.throughput_by_hour(project=small_queue, hours=3)] == [1, 1, 2]


def test_annotator_table_is_exact(small_queue):
    rows = stats.annotator_table(project=small_queue)
    assert [(r["username"], r["submissions_today"], r["submissions_total"]) for r in rows] == [
        ("ann1", 2, 3),
        ("ann2", 2, 2),
        ("ann3", 0, 0),
    ]
    by_name = {r["username"]: r for r in rows}
    assert by_name["ann1"]["median_seconds"] == 2.0  # 1, 2, 3 s
    assert by_name["ann2"]["median_seconds"] == 5.0  # 4, 6 s: the mean of the two middle ones
    assert by_name["ann3"]["median_seconds"] is None
    assert [by_name[n]["live_leases"] for n in ("ann1", "ann2", "ann3")] == [1, 0, 0]
    assert by_name["ann1"]["last_activity"] == at(14, 18)  # its latest claim, after its latest submission
    assert by_name["ann2"]["last_activity"] == at(14, 15)
    assert by_name["ann3"]["last_activity"] is None


def test_an_empty_project_has_zero_figures(frozen, project):
    figures = stats.queue_stats(project=project)
    assert figures["items_total"] == 0 and figures["done_fraction"] is None and figures["by_overlap"] == []
    assert stats.annotator_table(project=project) == []
    assert sum(r["submissions"] for r in stats.throughput_by_hour(project=project)) == 0


def _query_counts(project) -> list[int]:
    counts = []
    for call in (stats.queue_stats, stats.annotator_table, stats.throughput_by_hour):
        with CaptureQueriesContext(connection) as ctx:
            call(project=project)
        counts.append(len(ctx.captured_queries))
    return counts


def test_query_count_does_not_grow_with_annotators(small_queue, member, django_assert_max_num_queries):
    before = _query_counts(small_queue)
    # Ten more annotators, each with submissions on its own new items and a live lease.
    last = QueueItem.objects.filter(project=small_queue).order_by("-pk").first().pk
    ids = add_assets(small_queue, 10, start=200)
    services.queue_items_add(
        project=small_queue, user=small_queue.memberships.get(role=Role.ENGINEER).user, project_asset_ids=ids
    )
    new_items = list(QueueItem.objects.filter(project=small_queue, pk__gt=last).order_by("pk"))
    assert len(new_items) == 10
    for i, item in enumerate(new_items):
        user = member(small_queue, Role.ANNOTATOR, f"extra{i}")
        annotate(item, user, 1000 + i, at(14, i))
        lease(item, user, at(14, 1), at(14, 40))
    assert len(stats.annotator_table(project=small_queue)) == 13
    assert _query_counts(small_queue) == before
    with django_assert_max_num_queries(3):
        stats.queue_stats(project=small_queue)
    with django_assert_max_num_queries(4):
        stats.annotator_table(project=small_queue)
    with django_assert_max_num_queries(1):
        stats.throughput_by_hour(project=small_queue)
