"""Celery tasks of curation (queue `ingest`): thin, named, keyword arguments, idempotent."""

from celery import shared_task

from curation import services


@shared_task(name="curation.import_run", acks_late=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def import_run(*, job_id: int) -> None:
    # Safe to deliver twice: a finished job is skipped and a running one resumes (rows are unique).
    services.import_run(job_id=job_id)


@shared_task(name="curation.dataset_materialize", acks_late=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def dataset_materialize(*, version_id: int) -> None:
    # Safe to deliver twice: shards are built aside and published by content hash; ready versions are skipped.
    services.dataset_materialize(version_id=version_id)


@shared_task(name="curation.findings_scan", acks_late=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def findings_scan(*, project_id: int) -> None:
    # Safe to deliver twice: hashes are computed once per asset and findings are unique per key.
    from crucible.core.models import Project
    from curation.findings import findings_scan as scan

    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        scan(project=project)
