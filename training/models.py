from django.conf import settings
from django.db import models

from crucible.core.models import Project
from curation.models import DatasetVersion


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"

    FINISHED = {Status.DONE, Status.FAILED, Status.ABORTED}

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="training_runs")
    name = models.CharField(max_length=100)
    # network, epochs, batch_size, lr, lr_policy, lr_step_epochs, lr_gamma, optimizer, momentum,
    # weight_decay: everything needed to repeat the run (the seed is kept in its own column).
    config = models.JSONField()
    seed = models.BigIntegerField()
    device = models.CharField(max_length=32)  # what the run asked for: auto, cpu, cuda
    device_used = models.CharField(max_length=64, blank=True, default="")  # what it ran on
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    cloned_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="clones")
    parent_run = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="continuations"
    )
    parent_epoch = models.PositiveIntegerField(null=True, blank=True)
    abort_requested = models.BooleanField(default=False)
    current_epoch = models.PositiveIntegerField(default=0)  # epochs completed
    progress = models.FloatField(default=0.0)  # 0..1 over the whole run
    images_per_sec = models.FloatField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="training_run_name_unique"),
            models.CheckConstraint(
                condition=models.Q(progress__gte=0) & models.Q(progress__lte=1), name="training_run_progress_0_1"
            ),
            models.CheckConstraint(
                condition=models.Q(parent_run__isnull=True) | models.Q(parent_epoch__isnull=False),
                name="training_run_parent_has_epoch",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["queued", "running", "done", "failed", "aborted"]),
                name="training_run_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.name}/{self.name}"


class Epoch(models.Model):
    """One finished epoch of a run: its metrics and its checkpoint."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="epochs")
    epoch = models.PositiveIntegerField()  # 1-based
    train_loss = models.FloatField()
    val_loss = models.FloatField(null=True, blank=True)
    val_accuracy = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField()
    images_per_sec = models.FloatField()
    seconds = models.FloatField()
    checkpoint_name = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "epoch"]
        constraints = [
            models.UniqueConstraint(fields=["run", "epoch"], name="epoch_once_per_run"),
            models.CheckConstraint(condition=models.Q(epoch__gte=1), name="epoch_from_1"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}@{self.epoch}"


class LabelErrorScan(models.Model):
    """A K-fold cross-validation job over a dataset version's items (train and val together) whose
    out-of-sample probabilities let confident learning rank likely label errors. Its suspects become
    findings of kind `label_error`; the top ones are sent to the project's relabel queue."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    FINISHED = {Status.DONE, Status.FAILED}

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_error_scans")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="label_error_scans")
    config = models.JSONField()  # the training configuration of each fold's network
    folds = models.PositiveSmallIntegerField(default=5)
    seed = models.BigIntegerField()
    device = models.CharField(max_length=32, default="auto")
    device_used = models.CharField(max_length=64, blank=True, default="")
    relabel_top = models.PositiveIntegerField(default=50)  # how many suspects go to the relabel queue
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    folds_done = models.PositiveSmallIntegerField(default=0)
    items = models.PositiveIntegerField(default=0)
    suspects = models.PositiveIntegerField(default=0)
    sent_to_relabel = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["queued", "running", "done", "failed"]), name="label_error_scan_status"
            ),
            models.CheckConstraint(condition=models.Q(folds__gte=2, folds__lte=20), name="label_error_scan_folds"),
            models.CheckConstraint(condition=models.Q(folds_done__lte=models.F("folds")), name="label_error_scan_done"),
        ]

    def __str__(self) -> str:
        return f"label error scan {self.pk} of {self.dataset_version_id} ({self.status})"
