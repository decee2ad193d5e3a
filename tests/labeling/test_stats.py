"""The queue console's figures (labeling.stats): exact for a small known queue, a fixed number of queries."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crucible.core.models import Role
from labeling import services, stats
from labeling.models import Annotation, AnnotatorStatus, Lease, QueueItem, ReviewTask
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
    with django_assert_max_num_queries(5):
        stats.annotator_table(project=small_queue)
    with django_assert_max_num_queries(1):
        stats.throughput_by_hour(project=small_queue)


@pytest.fixture
def gold_and_reviews(small_queue):
    """Two gold items (ann1 answers both, one right; ann2 one, right), ann2 paused, and reviews."""
    project = small_queue
    ann1, ann2 = (project.memberships.get(user__username=n).user for n in ("ann1", "ann2"))
    gold_ids = add_assets(project, 2, start=300)
    engineer = project.memberships.get(role=Role.ENGINEER).user
    services.queue_items_add(project=project, user=engineer, project_asset_ids=gold_ids)
    gold = list(QueueItem.objects.filter(project_asset_id__in=gold_ids).order_by("pk"))
    QueueItem.objects.filter(pk__in=[g.pk for g in gold]).update(is_gold=True, gold_result={"label": "cat"})
    for i, (item, user, correct) in enumerate([(gold[0], ann1, True), (gold[1], ann1, False), (gold[0], ann2, True)]):
        Annotation.objects.create(
            item=item,
            annotator=user,
            result={"label": "cat" if correct else "dog"},
            time_spent_ms=1000,
            idempotency_key=f"g{i}",
            is_gold=True,
            gold_correct=correct,
        )
    AnnotatorStatus.objects.create(project=project, annotator=ann2, paused=True, reason="gold accuracy 40%")
    ordinary = {a.annotator.username: a for a in Annotation.objects.filter(is_gold=False).select_related("annotator")}
    first = list(Annotation.objects.filter(annotator=ann1, is_gold=False).order_by("pk"))
    ReviewTask.objects.create(project=project, item=first[0].item, annotation=first[0], reason="sample")
    ReviewTask.objects.create(
        project=project, item=first[1].item, annotation=first[1], reason="sample", state="accepted", decided_at=NOW
    )
    ReviewTask.objects.create(
        project=project, item=first[2].item, annotation=first[2], reason="sample", state="rejected", decided_at=NOW
    )
    ReviewTask.objects.create(
        project=project,
        item=ordinary["ann2"].item,
        annotation=ordinary["ann2"],
        reason="sample",
        state="fixed",
        fixed_result={"label": "dog"},
        decided_at=NOW,
    )
    ReviewTask.objects.create(project=project, item=gold[1], reason="disagreement")  # no annotation
    return project, gold


def test_annotator_table_has_gold_accuracy_and_paused_state(gold_and_reviews):
    project, _gold = gold_and_reviews
    by_name = {r["username"]: r for r in stats.annotator_table(project=project)}
    assert (by_name["ann1"]["gold_answered"], by_name["ann1"]["gold_correct"]) == (2, 1)
    assert by_name["ann1"]["gold_accuracy"] == 0.5 and by_name["ann1"]["paused"] is False
    assert by_name["ann2"]["gold_accuracy"] == 1.0
    assert (by_name["ann2"]["paused"], by_name["ann2"]["reason"]) == (True, "gold accuracy 40%")
    assert by_name["ann3"]["gold_accuracy"] is None and by_name["ann3"]["gold_answered"] == 0


def test_gold_items_count_answers_and_correct_ones(gold_and_reviews, django_assert_max_num_queries):
    project, gold = gold_and_reviews
    with django_assert_max_num_queries(1):
        rows = stats.gold_items(project=project)
    assert [(r["item"], r["answered"], r["correct"], r["accuracy"]) for r in rows] == [
        (gold[0].pk, 2, 2, 1.0),
        (gold[1].pk, 1, 0, 0.0),
    ]
    assert rows[0]["result"] == {"label": "cat"}


def test_review_outcomes_by_state_and_annotator(gold_and_reviews, django_assert_max_num_queries):
    project, _gold = gold_and_reviews
    with django_assert_max_num_queries(2):
        out = stats.review_outcomes(project=project)
    assert {k: out[k] for k in ("open", "accepted", "rejected", "fixed", "total")} == {
        "open": 2,
        "accepted": 1,
        "rejected": 1,
        "fixed": 1,
        "total": 5,
    }
    assert [
        (r["username"], r["open"], r["reviewed"], r["accepted"], r["rejected"], r["fixed"]) for r in out["by_annotator"]
    ] == [
        ("ann1", 1, 2, 1, 1, 0),
        ("ann2", 0, 1, 0, 0, 1),
    ]
    assert out["by_annotator"][0]["accepted_share"] == 0.5


def test_an_empty_project_has_no_gold_nor_reviews(frozen, project):
    assert stats.gold_items(project=project) == []
    out = stats.review_outcomes(project=project)
    assert out["total"] == 0 and out["by_annotator"] == []
