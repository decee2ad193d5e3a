"""Run the lease sweeper (`labeling.leases_expire`) every 60 seconds through django_celery_beat."""

from django.db import migrations
from django.utils import timezone

TASK_NAME = "labeling.leases_expire"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name="labeling: release expired leases",
        defaults={"task": TASK_NAME, "interval": every_minute, "enabled": True},
    )
    _tell_beat(apps)


def _tell_beat(apps):
    # A beat process already running rereads its schedule when this timestamp moves.
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task=TASK_NAME).delete()
    _tell_beat(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0001_queue_leases_annotations"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
