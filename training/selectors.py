"""Reads of training runs, scoped by the caller's project role."""

from django.db.models import Prefetch, QuerySet

from crucible.core.errors import NotFound, ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import require_read
from training.models import Epoch, LabelErrorScan, TrainingRun


def _with_relations(qs: QuerySet[TrainingRun]) -> QuerySet[TrainingRun]:
    """Everything the run serializer shows, in a fixed number of queries for any number of runs."""
    return qs.select_related("project", "dataset_version").prefetch_related(
        Prefetch("epochs", queryset=Epoch.objects.order_by("epoch")),
        Prefetch("clones", queryset=TrainingRun.objects.only("id", "cloned_from").order_by("id")),
        Prefetch("continuations", queryset=TrainingRun.objects.only("id", "parent_run").order_by("id")),
    )


def training_run_list(*, user: User, project: Project, name: str | None = None) -> QuerySet[TrainingRun]:
    """Runs of `project`, newest first; annotators get 403 (their project) or 404 (any other)."""
    require_read(user=user, project=project)
    qs = TrainingRun.objects.filter(project=project)
    if name:
        qs = qs.filter(name=name)
    return _with_relations(qs.order_by("-created_at", "-id"))


def training_run_get(*, user: User, run_id: int | str) -> TrainingRun:
    """One run with its epochs; a run of a project the caller is not in does not exist for them."""
    ref = str(run_id)
    run = _with_relations(TrainingRun.objects.filter(pk=int(ref))).first() if ref.isdigit() else None
    if run is None:
        raise NotFound(f"run {ref!r} not found")
    try:
        require_read(user=user, project=run.project)
    except NotFound:
        raise NotFound(f"run {ref!r} not found") from None
    return run


def training_run_epoch_get(*, run: TrainingRun, epoch: int | None = None) -> Epoch:
    """A finished epoch of `run` (the last one when `epoch` is None)."""
    qs = Epoch.objects.filter(run=run)
    found = qs.order_by("-epoch").first() if epoch is None else qs.filter(epoch=epoch).first()
    if found is None:
        if epoch is None:
            raise ValidationFailed(f"run {run.name!r} has no finished epoch yet", code="no_epochs")
        last = qs.order_by("-epoch").values_list("epoch", flat=True).first()
        have = f"epochs 1 to {last}" if last else "no finished epoch yet"
        raise ValidationFailed(
            f"run {run.name!r} has no epoch {epoch} ({have})", code="epoch_not_found", fields={"epoch": "not found"}
        )
    return found


def label_error_scan_get(*, user: User, scan_id: int) -> LabelErrorScan:
    """A label error scan in a project whose data `user` may read; NotFound otherwise."""
    scan = LabelErrorScan.objects.select_related("project").filter(pk=scan_id).first()
    if scan is None:
        raise NotFound(f"label error scan {scan_id} not found")
    try:
        require_read(user=user, project=scan.project)
    except NotFound:
        raise NotFound(f"label error scan {scan_id} not found") from None
    return scan
