"""Celery tasks of labelling: thin, named, keyword arguments, idempotent."""

from celery import shared_task

from labeling import exports, imports, services


@shared_task(name="labeling.leases_expire", time_limit=300, soft_time_limit=240)
def leases_expire() -> int:
    # Safe to run twice or concurrently: one UPDATE marks and returns only leases still live.
    return services.leases_expire()


@shared_task(name="labeling.labels_export", acks_late=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def labels_export(*, job_id: int) -> None:
    # Safe to deliver twice: a finished job is skipped; a running one writes its file again from the start.
    exports.labels_export_run(job_id=job_id)


@shared_task(name="labeling.labels_import", acks_late=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def labels_import(*, job_id: int) -> None:
    # Safe to deliver twice: a finished job is skipped; a running one reads its file again, and labels
    # already set to the same value are left alone.
    imports.labels_import_run(job_id=job_id)
