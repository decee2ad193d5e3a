"""Label schemas, the labelling queue, its leases and the annotations submitted through them.

The queue's invariants live in the database, not only in code:
- one live lease per (item, annotator): a partial unique constraint on leases not yet released;
- never more live leases plus submitted annotations than the item requires: `QueueItem.claimed`
  counts both, moves only through F() updates in the transaction that inserts, releases or submits
  a lease, and a check constraint keeps it at or under `required_annotations`;
- one annotation per (item, annotator) on ordinary (non-gold) items.
"""

import random

from django.conf import settings
from django.db import models
from django.db.backends.ddl_references import Statement
from django.db.models import F
from django.db.models.functions import Length
from django.db.models.lookups import Exact

from crucible.core.models import Project
from curation.models import ProjectAsset


def random_key() -> float:
    return random.random()


class NullsLastIndex(models.Index):
    """An index with `DESC NULLS LAST` columns. PostgreSQL needs the clause to serve such an ORDER BY;
    SQLite already sorts NULL last in DESC and refuses the clause in an index, so it is left out there."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        statement = super().create_sql(model, schema_editor, using=using, **kwargs)
        if schema_editor.connection.vendor != "postgresql":
            # Still a Statement, so that SQLite's table remake can rename the table it references.
            statement.__class__ = _WithoutNullsLast
        return statement


class _WithoutNullsLast(Statement):
    def __str__(self) -> str:
        return super().__str__().replace(" NULLS LAST", "")


class SchemaKind(models.TextChoices):
    SINGLE_LABEL = "single_label", "Single label"


class ItemState(models.TextChoices):
    OPEN = "open", "Open"
    DONE = "done", "Done"


class ReleaseReason(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    # Skips, by mode: requeue (for others, never me again), later (for others, and for me once nothing
    # else is left to me), drop (never offered to me again).
    SKIPPED = "skipped", "Skipped (requeue)"
    SKIPPED_LATER = "skipped_later", "Skipped (later)"
    DROPPED = "dropped", "Skipped (drop)"
    EXPIRED = "expired", "Expired"


class QueueOrder(models.TextChoices):
    SEQUENTIAL = "sequential", "Sequential"
    RANDOM = "random", "Random"
    UNCERTAINTY = "uncertainty", "Uncertainty"
    RELABEL_FIRST = "relabel_first", "Relabel first"


class LabelSchema(models.Model):
    """What annotators of a project choose from. This slice knows single-label classes."""

    Kind = SchemaKind

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="label_schema")
    kind = models.CharField(max_length=16, choices=SchemaKind.choices, default=SchemaKind.SINGLE_LABEL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=SchemaKind.values), name="label_schema_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} schema of project {self.project_id}"


class QueueSettings(models.Model):
    """How a project's queue hands out items. A project without a row uses the defaults."""

    Order = QueueOrder

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="queue_settings")
    order = models.CharField(max_length=16, choices=QueueOrder.choices, default=QueueOrder.SEQUENTIAL)
    # Null: the server's LABELING_LEASE_TTL.
    lease_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "queue settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(order__in=QueueOrder.values), name="queue_settings_order_valid"),
            models.CheckConstraint(
                condition=models.Q(lease_ttl_seconds__isnull=True)
                | models.Q(lease_ttl_seconds__gte=30, lease_ttl_seconds__lte=86400),
                name="queue_settings_ttl_range",
            ),
        ]

    def __str__(self) -> str:
        return f"queue settings of project {self.project_id} ({self.order})"


class LabelClass(models.Model):
    schema = models.ForeignKey(LabelSchema, on_delete=models.CASCADE, related_name="classes")
    name = models.CharField(max_length=200)
    key = models.CharField(max_length=1)  # the keyboard key that picks the class
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["schema", "position"]
        constraints = [
            models.UniqueConstraint(fields=["schema", "name"], name="label_class_name_unique"),
            models.UniqueConstraint(fields=["schema", "key"], name="label_class_key_unique"),
            models.UniqueConstraint(fields=["schema", "position"], name="label_class_position_unique"),
            models.CheckConstraint(condition=Exact(Length("key"), 1), name="label_class_key_one_char"),
            models.CheckConstraint(condition=~models.Q(name=""), name="label_class_name_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.key}]"


class QueueItem(models.Model):
    State = ItemState

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queue_items")
    project_asset = models.ForeignKey(ProjectAsset, on_delete=models.CASCADE, related_name="queue_items")
    priority = models.IntegerField(default=0)
    required_annotations = models.PositiveSmallIntegerField(default=1)
    submitted_count = models.PositiveIntegerField(default=0)
    # Live leases plus submitted annotations; see the module docstring.
    claimed = models.PositiveIntegerField(default=0)
    # Drawn once at creation so that a random order is an index scan, never ORDER BY random().
    random_key = models.FloatField(default=random_key)
    # Written by the training side (queue_uncertainty_set): higher is less confident; null is unscored.
    uncertainty = models.FloatField(null=True, blank=True)
    # Sent back for relabelling (queue_items_relabel).
    relabel = models.BooleanField(default=False)
    is_gold = models.BooleanField(default=False)
    state = models.CharField(max_length=8, choices=ItemState.choices, default=ItemState.OPEN)
    # Decided when the item is done (services.annotation_submit): the strict majority of its annotations'
    # labels, or null with `needs_review` when no label has one.
    consensus_label = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (null: undecided)
    needs_review = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(claimed__lte=models.F("required_annotations")),
                name="queue_item_claimed_le_required",
            ),
            models.CheckConstraint(
                condition=models.Q(submitted_count__lte=models.F("claimed")),
                name="queue_item_submitted_le_claimed",
            ),
            models.CheckConstraint(condition=models.Q(required_annotations__gte=1), name="queue_item_required_ge_1"),
            models.CheckConstraint(condition=models.Q(state__in=ItemState.values), name="queue_item_state_valid"),
            models.UniqueConstraint(
                fields=["project_asset"], condition=models.Q(state="open"), name="queue_item_one_open_per_asset"
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "-priority", "id"], condition=models.Q(state="open"), name="queue_item_open_order"
            ),
            # One partial index per order, in the claim's ORDER BY (see services._ORDER_BY).
            models.Index(
                fields=["project", "-priority", "random_key", "id"],
                condition=models.Q(state="open"),
                name="queue_item_open_random",
            ),
            NullsLastIndex(
                F("project"),
                F("uncertainty").desc(nulls_last=True),
                F("priority").desc(),
                F("id"),
                condition=models.Q(state="open"),
                name="queue_item_open_uncertainty",
            ),
            models.Index(
                fields=["project", "-relabel", "-priority", "id"],
                condition=models.Q(state="open"),
                name="queue_item_open_relabel",
            ),
            models.Index(fields=["project", "state"], name="queue_item_project_state"),
            # The disagreements listing: items needing review, by id.
            models.Index(
                fields=["project", "id"], condition=models.Q(needs_review=True), name="queue_item_needs_review"
            ),
        ]

    def __str__(self) -> str:
        return f"queue item {self.pk} ({self.state}, {self.submitted_count}/{self.required_annotations})"


class Lease(models.Model):
    """An item handed to one annotator for a short time; released on submit, skip or expiry."""

    Reason = ReleaseReason

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.CharField(max_length=16, choices=ReleaseReason.choices, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "annotator"], condition=models.Q(released_at__isnull=True), name="lease_one_live"
            ),
            models.CheckConstraint(
                condition=models.Q(released_at__isnull=True, release_reason="")
                | models.Q(released_at__isnull=False, release_reason__in=ReleaseReason.values),
                name="lease_release_reason_set",
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "item"], name="lease_annotator_item"),
            models.Index(fields=["expires_at"], condition=models.Q(released_at__isnull=True), name="lease_live_expiry"),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} of item {self.item_id}"


class Annotation(models.Model):
    """One submitted answer; append-only (revisions are new rows)."""

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    result = models.JSONField()  # {"label": class name}
    time_spent_ms = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=100)
    # Copied from the item: gold items may be shown to an annotator again, ordinary ones never.
    is_gold = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "idempotency_key"], name="annotation_idempotency_key_unique"),
            models.UniqueConstraint(
                fields=["item", "annotator"], condition=models.Q(is_gold=False), name="annotation_once_per_annotator"
            ),
        ]

    def __str__(self) -> str:
        return f"annotation {self.pk} of item {self.item_id}"


class ExportFormat(models.TextChoices):
    JSONL = "jsonl", "JSON lines"
    CSV = "csv", "CSV"
    FOLDER = "folder", "ImageFolder zip"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ExportJob(models.Model):
    """An export of a project's labels to a file in storage, written by the task `labeling.labels_export`."""

    Format = ExportFormat
    Status = ExportStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="export_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    format = models.CharField(max_length=16, choices=ExportFormat.choices)
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    rows = models.PositiveIntegerField(default=0)  # assets written so far
    file_name = models.CharField(max_length=300, blank=True, default="")  # the storage name once done
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(format__in=ExportFormat.values), name="export_job_format_valid"),
            models.CheckConstraint(condition=models.Q(status__in=ExportStatus.values), name="export_job_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.format} export {self.pk} of project {self.project_id} ({self.status})"
