"""Figures of a project's labelling queue for the engineer console: queue state, throughput per hour,
one row per annotator (with gold accuracy and paused state), the gold items, and review outcomes.

Reads only, with no access check (the caller checks it), and a fixed number of aggregate queries
whatever the size of the queue or the number of annotators: nothing here loops over rows with a
query each.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, F, Max, Q, Window
from django.db.models.functions import RowNumber, TruncHour
from django.utils import timezone

from crucible.core.models import Membership, Project, Role
from labeling.models import Annotation, AnnotatorStatus, ItemState, Lease, QueueItem, ReviewState, ReviewTask


def _day_start() -> dt.datetime:
    """The start of today in the server's time zone."""
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def queue_stats(*, project: Project) -> dict[str, Any]:
    """Items open and done by required overlap, live leases and submissions (three queries).

    A live lease is one not released and not yet expired; `stale_leases` are those past their expiry
    that no claim has reaped yet (they hold their item until then).
    """
    now = timezone.now()
    rows = (
        QueueItem.objects.filter(project=project)
        .values("required_annotations")
        .annotate(
            # Gold items are kept in state done and never take consensus: counted apart.
            open=Count("pk", filter=Q(state=ItemState.OPEN, is_gold=False)),
            done=Count("pk", filter=Q(state=ItemState.DONE, is_gold=False)),
            gold=Count("pk", filter=Q(is_gold=True)),
        )
        .order_by("required_annotations")
    )
    by_overlap = [
        {
            "required": r["required_annotations"],
            "open": r["open"],
            "done": r["done"],
            "gold": r["gold"],
            "total": r["open"] + r["done"],
        }
        for r in rows
    ]
    leases = Lease.objects.filter(item__project=project, released_at__isnull=True).aggregate(
        live=Count("pk", filter=Q(expires_at__gt=now)),
        stale=Count("pk", filter=Q(expires_at__lte=now)),
    )
    submissions = Annotation.objects.filter(item__project=project).aggregate(
        total=Count("pk"),
        today=Count("pk", filter=Q(created_at__gte=_day_start())),
        annotators=Count("annotator", distinct=True),
    )
    items_open = sum(r["open"] for r in by_overlap)
    items_done = sum(r["done"] for r in by_overlap)
    items_total = items_open + items_done
    return {
        "by_overlap": by_overlap,
        "items_open": items_open,
        "items_done": items_done,
        "items_total": items_total,
        "done_fraction": (items_done / items_total) if items_total else None,
        "live_leases": leases["live"],
        "stale_leases": leases["stale"],
        "submissions": submissions["total"],
        "submissions_today": submissions["today"],
        "annotators_active": submissions["annotators"],
    }


def throughput_by_hour(*, project: Project, hours: int = 24) -> list[dict[str, Any]]:
    """Submissions per hour for the last `hours` hours, oldest first, the current (partial) hour last;
    hours without a submission are listed with 0 (one query)."""
    hours = max(1, int(hours))
    current = timezone.now().astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    first = current - dt.timedelta(hours=hours - 1)
    counted = (
        Annotation.objects.filter(item__project=project, created_at__gte=first)
        .annotate(hour=TruncHour("created_at", tzinfo=dt.UTC))
        .values("hour")
        .annotate(n=Count("pk"))
        .order_by("hour")
    )
    counts = {row["hour"].astimezone(dt.UTC): row["n"] for row in counted}
    out = []
    for i in range(hours):
        hour = first + dt.timedelta(hours=i)
        out.append({"hour": hour, "submissions": counts.get(hour, 0)})
    return out


def _medians_ms(project: Project) -> dict[int, float]:
    """The median time_spent_ms per annotator, in one query: each annotator's annotations are ranked by
    time within their partition and only the one or two middle ranks come back."""
    ranked = (
        Annotation.objects.filter(item__project=project)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("annotator_id")], order_by=[F("time_spent_ms").asc(), F("pk")]),
            n=Window(Count("pk"), partition_by=[F("annotator_id")]),
        )
        # Integer division: for n odd both bounds are (n + 1) / 2; for n even they are n / 2 and n / 2 + 1.
        .filter(rank__gte=(F("n") + 1) / 2, rank__lte=F("n") / 2 + 1)
        .values_list("annotator_id", "time_spent_ms")
    )
    middles: dict[int, list[int]] = {}
    for annotator_id, ms in ranked:
        middles.setdefault(annotator_id, []).append(ms)
    return {a: sum(v) / len(v) for a, v in middles.items()}


def annotator_table(*, project: Project) -> list[dict[str, Any]]:
    """One row per annotator of the project (members with the annotator role, and anyone who has
    submitted or holds a lease): submissions today and in all, median seconds per item, live leases,
    last activity (latest submission or claim), gold answers (all of them: answered, correct, accuracy)
    and whether they are paused, with the reason. Busiest first. Five queries."""
    now = timezone.now()
    rows: dict[int, dict[str, Any]] = {}

    def row(user_id: int, username: str) -> dict[str, Any]:
        if user_id not in rows:
            rows[user_id] = {
                "annotator_id": user_id,
                "username": username,
                "submissions_today": 0,
                "submissions_total": 0,
                "median_seconds": None,
                "live_leases": 0,
                "last_activity": None,
                "gold_answered": 0,
                "gold_correct": 0,
                "gold_accuracy": None,
                "paused": False,
                "reason": "",
            }
        return rows[user_id]

    members = Membership.objects.filter(project=project, role=Role.ANNOTATOR).values_list("user_id", "user__username")
    for user_id, username in members:
        row(user_id, username)

    submitted = (
        Annotation.objects.filter(item__project=project)
        .values("annotator_id", "annotator__username")
        .annotate(
            total=Count("pk"),
            today=Count("pk", filter=Q(created_at__gte=_day_start())),
            last=Max("created_at"),
            gold_answered=Count("pk", filter=Q(is_gold=True)),
            gold_correct=Count("pk", filter=Q(is_gold=True, gold_correct=True)),
        )
        .order_by()
    )
    for r in submitted:
        entry = row(r["annotator_id"], r["annotator__username"])
        entry["submissions_total"] = r["total"]
        entry["submissions_today"] = r["today"]
        entry["last_activity"] = r["last"]
        entry["gold_answered"] = r["gold_answered"]
        entry["gold_correct"] = r["gold_correct"]
        if r["gold_answered"]:
            entry["gold_accuracy"] = r["gold_correct"] / r["gold_answered"]

    statuses = AnnotatorStatus.objects.filter(project=project).values_list(
        "annotator_id", "annotator__username", "paused", "reason"
    )
    for annotator_id, username, paused, reason in statuses:
        entry = row(annotator_id, username)
        entry["paused"] = paused
        entry["reason"] = reason if paused else ""

    leased = (
        Lease.objects.filter(item__project=project)
        .values("annotator_id", "annotator__username")
        .annotate(live=Count("pk", filter=Q(released_at__isnull=True, expires_at__gt=now)), last=Max("created_at"))
        .order_by()
    )
    for r in leased:
        entry = row(r["annotator_id"], r["annotator__username"])
        entry["live_leases"] = r["live"]
        if r["last"] is not None and (entry["last_activity"] is None or r["last"] > entry["last_activity"]):
            entry["last_activity"] = r["last"]

    for annotator_id, median_ms in _medians_ms(project).items():
        if annotator_id in rows:
            rows[annotator_id]["median_seconds"] = median_ms / 1000

    return sorted(rows.values(), key=lambda r: (-r["submissions_total"], r["username"]))


def gold_items(*, project: Project) -> list[dict[str, Any]]:
    """The project's gold items, oldest first, with their known answer and how often they were answered
    and answered correctly (one query)."""
    rows = (
        QueueItem.objects.filter(project=project, is_gold=True)
        .annotate(
            answered=Count("annotations", filter=Q(annotations__is_gold=True)),
            correct=Count("annotations", filter=Q(annotations__is_gold=True, annotations__gold_correct=True)),
        )
        .order_by("pk")
        .values("pk", "project_asset_id", "project_asset__source_path", "gold_result", "answered", "correct")
    )
    return [
        {
            "item": r["pk"],
            "project_asset_id": r["project_asset_id"],
            "source_path": r["project_asset__source_path"],
            "result": r["gold_result"],
            "answered": r["answered"],
            "correct": r["correct"],
            "accuracy": (r["correct"] / r["answered"]) if r["answered"] else None,
        }
        for r in rows
    ]


def review_outcomes(*, project: Project) -> dict[str, Any]:
    """Review tasks by state, and per annotator of a reviewed annotation: reviewed (decided), accepted,
    rejected, fixed and still open. Disagreement reviews, which review no single annotation, count
    in the totals only. Two queries."""
    by_state = dict(ReviewTask.objects.filter(project=project).values_list("state").annotate(n=Count("pk")).order_by())
    totals = {state: by_state.get(state, 0) for state in ReviewState.values}
    rows = (
        ReviewTask.objects.filter(project=project, annotation__isnull=False)
        .values("annotation__annotator_id", "annotation__annotator__username")
        .annotate(
            open=Count("pk", filter=Q(state=ReviewState.OPEN)),
            accepted=Count("pk", filter=Q(state=ReviewState.ACCEPTED)),
            rejected=Count("pk", filter=Q(state=ReviewState.REJECTED)),
            fixed=Count("pk", filter=Q(state=ReviewState.FIXED)),
        )
        .order_by("annotation__annotator__username")
    )
    by_annotator = []
    for r in rows:
        reviewed = r["accepted"] + r["rejected"] + r["fixed"]
        by_annotator.append(
            {
                "annotator_id": r["annotation__annotator_id"],
                "username": r["annotation__annotator__username"],
                "open": r["open"],
                "reviewed": reviewed,
                "accepted": r["accepted"],
                "rejected": r["rejected"],
                "fixed": r["fixed"],
                "accepted_share": (r["accepted"] / reviewed) if reviewed else None,
            }
        )
    return {**totals, "total": sum(totals.values()), "by_annotator": by_annotator}
