"""Celery tasks of labelling: thin, named, keyword arguments, idempotent."""

from celery import shared_task

from labeling import services


@shared_task(name="labeling.leases_expire", time_limit=300, soft_time_limit=240)
def leases_expire() -> int:
    # Safe to run twice or concurrently: one UPDATE marks and returns only leases still live.
    return services.leases_expire()
