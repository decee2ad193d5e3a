"""Pages of the engineer console.

A page checks access, reads through the models with a fixed query shape (no per-row queries) and
renders. Every write happens from the page's script through the REST API (docs/api.md), so the
pages hold no business rule of their own.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from crucible.core.errors import Forbidden, NotFound
from crucible.core.models import READ_DATA_ROLES, WRITE_DATA_ROLES, Membership, Project, Role
from crucible.core.selectors import project_get, project_list, project_role, require_read
from curation.models import DatasetVersion, Finding, ImportJob
from curation.selectors import project_class_counts
from labeling import stats
from labeling.models import Annotation
from labeling.selectors import label_schema_get, queue_settings_get
from training.models import Epoch, TrainingRun

SPLITS = ("train", "val", "test")
IMPORTS_SHOWN = 20
# The annotator page asks the server for the annotator's figures again after this many submissions.
LABEL_FIGURES_EVERY = 5


def console_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required; the domain's NotFound and Forbidden become readable 404 and 403 pages."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Forbidden as exc:
            context = {"status": 403, "title": "Not allowed here", "message": exc.message}
            return render(request, "frontend/error.html", context, status=403)
        except NotFound as exc:
            context = {"status": 404, "title": "Not found", "message": exc.message}
            return render(request, "frontend/error.html", context, status=404)

    return wrapper


def _split_totals(counts: dict) -> dict[str, int]:
    return {split: sum((counts or {}).get(split, {}).values()) for split in SPLITS}


def _epoch_row(epoch: Epoch) -> dict[str, Any]:
    return {
        "epoch": epoch.epoch,
        "train_loss": epoch.train_loss,
        "val_loss": epoch.val_loss,
        "val_accuracy": epoch.val_accuracy,
        "learning_rate": epoch.learning_rate,
        "images_per_sec": epoch.images_per_sec,
        "seconds": epoch.seconds,
    }


@console_page
def home(request: HttpRequest) -> HttpResponse:
    projects = list(project_list(user=request.user).order_by("name"))
    if request.user.is_superuser:
        roles = {p.pk: Role.ADMIN for p in projects}
    else:
        roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    # Every member may label, annotators included; only the data roles open the project page.
    rows = [
        {"project": p, "role": roles.get(p.pk, ""), "can_open": roles.get(p.pk) in READ_DATA_ROLES, "can_label": True}
        for p in projects
    ]
    return render(request, "frontend/home.html", {"rows": rows})


@console_page
def project_page(request: HttpRequest, ref: str) -> HttpResponse:
    project: Project = project_get(user=request.user, ref=ref)
    role = require_read(user=request.user, project=project)
    imports = list(ImportJob.objects.filter(project=project).order_by("-created_at")[:IMPORTS_SHOWN])
    classes = project_class_counts(user=request.user, project=project)
    datasets = list(
        DatasetVersion.objects.filter(project=project)
        .annotate(run_count=Count("training_runs"))
        .order_by("-created_at")
    )
    for dataset in datasets:
        dataset.totals = _split_totals(dataset.counts)
    runs = list(
        TrainingRun.objects.filter(project=project)
        .select_related("dataset_version")
        .annotate(best_accuracy=Max("epochs__val_accuracy"))
        .order_by("-created_at")
    )
    context = {
        "project": project,
        "role": role,
        "can_write": role in WRITE_DATA_ROLES,
        "imports": imports,
        "classes": classes,
        "class_total": sum(c["count"] for c in classes),
        "datasets": datasets,
        "runs": runs,
        "resize_modes": DatasetVersion.ResizeMode.choices,
    }
    return render(request, "frontend/project.html", context)


@console_page
def label_page(request: HttpRequest, ref: str) -> HttpResponse:
    """The annotator page: any member of the project; its script drives the queue through the API."""
    project: Project = project_get(user=request.user, ref=ref)
    role = project_role(user=request.user, project=project)
    try:
        _schema, classes = label_schema_get(project=project, user=request.user)
        kind, kind_label = _schema.kind, _schema.get_kind_display()
    except NotFound:
        classes = []
        kind, kind_label = "", ""
    # Today's submissions of this annotator in this project, and the newest id among them, so the
    # script counts only annotations stored after the page was rendered (a retried submission whose
    # first try did reach the server is already in this count).
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    today = Annotation.objects.filter(annotator=request.user, item__project=project, created_at__gte=start)
    figures = today.aggregate(count=Count("pk"), last_id=Max("pk"))
    config = {
        "project": project.name,
        "project_id": project.pk,
        "user_id": request.user.pk,
        "classes": [{"name": c.name, "key": c.key} for c in classes],
        "today_count": figures["count"] or 0,
        "today_last_id": figures["last_id"] or 0,
        "kind": kind,
        "figures_every": LABEL_FIGURES_EVERY,
    }
    context = {
        "project": project,
        "role": role,
        "can_open": role in READ_DATA_ROLES,
        "classes": classes,
        "skip_key_free": not any(c.key.lower() == "s" for c in classes),
        "undo_key_free": not any(c.key.lower() == "z" for c in classes),
        "kind": kind,
        "kind_label": kind_label,
        "config": config,
    }
    return render(request, "frontend/label.html", context)


@console_page
def queue_page(request: HttpRequest, ref: str) -> HttpResponse:
    """The queue console: state, throughput, annotators and settings (engineers, admins, reviewers)."""
    project: Project = project_get(user=request.user, ref=ref)
    role = require_read(user=request.user, project=project)
    queue = stats.queue_stats(project=project)
    throughput = stats.throughput_by_hour(project=project, hours=24)
    annotators = stats.annotator_table(project=project)
    gold_items = stats.gold_items(project=project)
    reviews = stats.review_outcomes(project=project)
    queue_settings = queue_settings_get(project=project, user=request.user)
    chart = {
        "hours": [row["hour"].isoformat() for row in throughput],
        "submissions": [row["submissions"] for row in throughput],
    }
    context = {
        "project": project,
        "role": role,
        "can_write": role in WRITE_DATA_ROLES,
        "queue": queue,
        "throughput_total": sum(chart["submissions"]),
        "annotators": annotators,
        "queue_settings": queue_settings,
        "chart": chart,
        "gold_items": gold_items,
        "gold_answered": sum(g["answered"] for g in gold_items),
        "gold_correct": sum(g["correct"] for g in gold_items),
        "reviews": reviews,
        "page_config": {"project_id": project.pk, "can_write": role in WRITE_DATA_ROLES},
    }
    return render(request, "frontend/queue.html", context)


@console_page
def review_page(request: HttpRequest, ref: str) -> HttpResponse:
    """The review page (reviewers, engineers, admins): open review tasks one at a time; its script reads
    and decides them through the API."""
    project: Project = project_get(user=request.user, ref=ref)
    role = require_read(user=request.user, project=project)
    try:
        review_schema, review_classes = label_schema_get(project=project, user=request.user)
        review_kind = review_schema.kind
    except NotFound:
        review_classes, review_kind = [], ""
    outcomes = stats.review_outcomes(project=project)
    config = {
        "project": project.name,
        "project_id": project.pk,
        "kind": review_kind,
        "classes": [{"name": c.name, "key": c.key} for c in review_classes],
        "counts": {k: outcomes[k] for k in ("open", "accepted", "rejected", "fixed")},
    }
    context = {
        "project": project,
        "role": role,
        "kind": review_kind,
        "classes": review_classes,
        "counts": config["counts"],
        "config": config,
    }
    return render(request, "frontend/review.html", context)


@console_page
def dataset_page(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = DatasetVersion.objects.select_related("project", "parent", "created_by").filter(pk=pk).first()
    if dataset is None:
        raise NotFound(f"dataset {pk} not found")
    role = require_read(user=request.user, project=dataset.project)
    runs = list(
        TrainingRun.objects.filter(dataset_version=dataset)
        .annotate(best_accuracy=Max("epochs__val_accuracy"))
        .order_by("-created_at")
    )
    # Runs of the project that have a checkpoint to continue from (any dataset of the project).
    continuable = list(
        TrainingRun.objects.filter(project=dataset.project)
        .annotate(last_epoch=Max("epochs__epoch"))
        .filter(last_epoch__isnull=False)
        .select_related("dataset_version")
        .order_by("-created_at")
    )
    chart = {
        "class_names": dataset.class_names,
        "counts": {split: (dataset.counts or {}).get(split, {}) for split in SPLITS},
    }
    # The project's other versions, to compare this one with (its parent first when it has one).
    others = list(
        DatasetVersion.objects.filter(project=dataset.project).exclude(pk=dataset.pk).order_by("-created_at", "-pk")
    )
    others.sort(key=lambda v: v.pk != dataset.parent_id)
    context = {
        "dataset": dataset,
        "others": others,
        "project": dataset.project,
        "role": role,
        "can_write": role in WRITE_DATA_ROLES,
        "totals": _split_totals(dataset.counts),
        "chart": chart,
        "runs": runs,
        "continuable": continuable,
        "finished_statuses": [s.value for s in TrainingRun.FINISHED],
        "finding_kinds": Finding.Kind.choices,
    }
    return render(request, "frontend/dataset.html", context)


@console_page
def run_page(request: HttpRequest, pk: int) -> HttpResponse:
    run = (
        TrainingRun.objects.select_related("project", "dataset_version", "cloned_from", "parent_run", "created_by")
        .filter(pk=pk)
        .first()
    )
    if run is None:
        raise NotFound(f"training run {pk} not found")
    role = require_read(user=request.user, project=run.project)
    epochs = list(run.epochs.order_by("epoch"))
    clones = list(run.clones.only("id", "name", "status").order_by("created_at"))
    continuations = list(run.continuations.only("id", "name", "status", "parent_epoch").order_by("created_at"))
    total_epochs = int((run.config or {}).get("epochs") or 0)
    payload = {
        "id": run.pk,
        "status": run.status,
        "current_epoch": run.current_epoch,
        "progress": run.progress,
        "images_per_sec": run.images_per_sec,
        "eta_seconds": run.eta_seconds,
        "error": run.error,
        "total_epochs": total_epochs,
        "epochs": [_epoch_row(e) for e in epochs],
    }
    context = {
        "run": run,
        "project": run.project,
        "dataset": run.dataset_version,
        "role": role,
        "can_write": role in WRITE_DATA_ROLES,
        "epochs": epochs,
        "last_epoch": epochs[-1].epoch if epochs else None,
        "total_epochs": total_epochs,
        "progress_percent": round(run.progress * 100, 1),
        "finished": run.status in TrainingRun.FINISHED,
        "clones": clones,
        "continuations": continuations,
        "config_items": sorted((run.config or {}).items()),
        "payload": payload,
    }
    return render(request, "frontend/run.html", context)
