"""Celery tasks of training (queue `train`, routed by settings.CELERY_TASK_ROUTES)."""

from celery import shared_task

from training.services import training_run_execute


@shared_task(name="training.run", acks_late=True, reject_on_worker_lost=True)
def run_task(*, run_id: int) -> None:
    """Train one run. Safe to deliver twice: a finished run is skipped, an interrupted one resumes
    from its last checkpoint (hence late acks and redelivery when the worker dies)."""
    training_run_execute(run_id=run_id)


@shared_task(name="training.label_errors", acks_late=True, reject_on_worker_lost=True, time_limit=24 * 3600)
def label_errors_task(*, scan_id: int) -> None:
    """One label error scan. Safe to deliver twice: a finished scan is skipped, an interrupted one
    starts again and records the same findings."""
    from training.label_errors import label_error_scan_execute

    label_error_scan_execute(scan_id=scan_id)
