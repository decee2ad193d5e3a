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
    SINGLE_LABEL = "single_label", "Single label"  # result {"label": CLASS}
    MULTI_LABEL = "multi_label", "Multi-label"  # result {"labels": [CLASS, ...]} (possibly empty)
    BOXES = "boxes", "Bounding boxes"  # result {"boxes": [{"label", "x", "y", "w", "h"}, ...]} in pixels


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


class AnnotationStatus(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    ACCEPTED = "accepted", "Accepted by review"
    REJECTED = "rejected", "Rejected by review (back to its annotator)"
    FIXED = "fixed", "Fixed by review"
    WITHDRAWN = "withdrawn", "Withdrawn (undone)"


class ReviewReason(models.TextChoices):
    SAMPLE = "sample", "Sampled submission"
    DISAGREEMENT = "disagreement", "Disagreement"


class ReviewState(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    FIXED = "fixed", "Fixed"


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
    # Share of claims that hand out a gold item (when the annotator has one left to answer).
    gold_rate = models.FloatField(default=0.05)
    # An annotator whose gold accuracy over their last `gold_window` gold answers falls under
    # `gold_min_accuracy` is paused, once they have at least `gold_min_answers` of them.
    gold_min_accuracy = models.FloatField(default=0.7)
    gold_min_answers = models.PositiveIntegerField(default=10)
    gold_window = models.PositiveIntegerField(default=50)
    # Share of ordinary submissions sampled into the review queue (every disagreement goes there too).
    review_rate = models.FloatField(default=0.1)
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
            models.CheckConstraint(condition=models.Q(gold_rate__gte=0, gold_rate__lte=1), name="queue_gold_rate_0_1"),
            models.CheckConstraint(
                condition=models.Q(gold_min_accuracy__gte=0, gold_min_accuracy__lte=1), name="queue_gold_min_acc_0_1"
            ),
            models.CheckConstraint(
                condition=models.Q(review_rate__gte=0, review_rate__lte=1), name="queue_review_rate_0_1"
            ),
            models.CheckConstraint(condition=models.Q(gold_window__gte=1), name="queue_gold_window_ge_1"),
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


_CLAIMABLE = models.Q(state="open", is_gold=False, claimed__lt=F("required_annotations"))


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
    # Gold items carry a known answer (`gold_result`, a result of the schema's kind) and are handed out
    # at the project's gold rate by a claim of their own: they never count in `claimed`, are never done,
    # and an annotator may see one again only after answering every other gold item.
    is_gold = models.BooleanField(default=False)
    gold_result = models.JSONField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=ItemState.choices, default=ItemState.OPEN)
    # Decided when the item is done (services.annotation_submit): the strict majority of its annotations'
    # labels, or null with `needs_review` when no label has one.
    consensus_label = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (null: undecided)
    needs_review = models.BooleanField(default=False)
    # The whole decided result for multi-label and box schemas (the label for single-label ones too).
    consensus_result = models.JSONField(null=True, blank=True)
    # The asset's label before this item's consensus set it, so that an undo can put it back.
    previous_label = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(is_gold=False) | models.Q(gold_result__isnull=False),
                name="queue_item_gold_has_answer",
            ),
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
            # One partial index per order, in the claim's ORDER BY (see services._ORDER_BY), over the items
            # a claim can still take: open, not gold, not fully claimed. Items held by others to their
            # overlap fall out of the index, so a claim never scans past them however many annotators
            # hold leases (the predicate repeats the claim's own WHERE, which lets the planner use it).
            models.Index(fields=["project", "-priority", "id"], condition=_CLAIMABLE, name="queue_item_open_order"),
            models.Index(
                fields=["project", "-priority", "random_key", "id"],
                condition=_CLAIMABLE,
                name="queue_item_open_random",
            ),
            NullsLastIndex(
                F("project"),
                F("uncertainty").desc(nulls_last=True),
                F("priority").desc(),
                F("id"),
                condition=_CLAIMABLE,
                name="queue_item_open_uncertainty",
            ),
            models.Index(
                fields=["project", "-relabel", "-priority", "id"],
                condition=_CLAIMABLE,
                name="queue_item_open_relabel",
            ),
            models.Index(fields=["project", "state"], name="queue_item_project_state"),
            models.Index(fields=["project", "id"], condition=models.Q(is_gold=True), name="queue_item_gold"),
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
    """One submitted answer; append-only: a revision after a rejection is a new row (`revision_of`), and
    review, undo and rework change only `status`.

    An item's consensus counts its annotations whose status is submitted, accepted or fixed, taking the
    latest revision of each annotator's answer.
    """

    Status = AnnotationStatus

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    result = models.JSONField()  # of the schema's kind: {"label"}, {"labels"} or {"boxes"}
    time_spent_ms = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=100)
    # Copied from the item: gold items may be shown to an annotator again, ordinary ones never.
    is_gold = models.BooleanField(default=False)
    # On gold items: whether the result matched the known answer.
    gold_correct = models.BooleanField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=AnnotationStatus.choices, default=AnnotationStatus.SUBMITTED)
    # The rejected annotation this one revises (its annotator's rework after review).
    revision_of = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="revised_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "idempotency_key"], name="annotation_idempotency_key_unique"),
            # One first answer per annotator and ordinary item; an undone one no longer counts.
            models.UniqueConstraint(
                fields=["item", "annotator"],
                condition=models.Q(is_gold=False, revision_of__isnull=True) & ~models.Q(status="withdrawn"),
                name="annotation_once_per_annotator",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=AnnotationStatus.values), name="annotation_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(is_gold=True) | models.Q(gold_correct__isnull=True),
                name="annotation_gold_correct_gold_only",
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "is_gold", "-id"], name="annotation_annotator_gold"),
            models.Index(fields=["item", "status"], name="annotation_item_status"),
        ]

    def __str__(self) -> str:
        return f"annotation {self.pk} of item {self.item_id}"


class AnnotatorStatus(models.Model):
    """Whether an annotator may take items of a project: paused (automatically, when their gold accuracy
    falls under the project's threshold, or by an engineer), with the reason they are shown."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="annotator_statuses")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    paused = models.BooleanField(default=False)
    reason = models.TextField(blank=True, default="")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    changed_at = models.DateTimeField(auto_now=True)
    # Gold answers before this one are not counted any more (set on resume, so a resumed annotator
    # starts a new window).
    gold_since_id = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "annotator statuses"
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator"], name="annotator_status_once"),
            models.CheckConstraint(
                condition=models.Q(paused=False) | ~models.Q(reason=""), name="annotator_status_paused_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"annotator {self.annotator_id} in project {self.project_id} ({'paused' if self.paused else 'active'})"


class ReviewTask(models.Model):
    """One thing for a reviewer to decide: a sampled submission (`annotation` set) or a disagreement
    (an item whose annotations reached no majority; `annotation` null).

    Accept keeps the annotation; reject sends it back to its annotator with `comment` (they submit a
    revision); fix replaces the result with `fixed_result`. The reviewed annotation, and through it
    the original annotator, stays linked for good.
    """

    Reason = ReviewReason
    State = ReviewState

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="review_tasks")
    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="review_tasks")
    annotation = models.ForeignKey(
        Annotation, on_delete=models.CASCADE, null=True, blank=True, related_name="review_tasks"
    )
    reason = models.CharField(max_length=16, choices=ReviewReason.choices)
    state = models.CharField(max_length=16, choices=ReviewState.choices, default=ReviewState.OPEN)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    comment = models.TextField(blank=True, default="")
    fixed_result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(reason__in=ReviewReason.values), name="review_reason_valid"),
            models.CheckConstraint(condition=models.Q(state__in=ReviewState.values), name="review_state_valid"),
            models.CheckConstraint(
                condition=models.Q(reason="disagreement") | models.Q(annotation__isnull=False),
                name="review_sample_has_annotation",
            ),
            models.CheckConstraint(
                condition=~models.Q(state="fixed") | models.Q(fixed_result__isnull=False),
                name="review_fixed_has_result",
            ),
            models.CheckConstraint(
                condition=models.Q(state="open", decided_at__isnull=True)
                | (~models.Q(state="open") & models.Q(decided_at__isnull=False)),
                name="review_decided_at_set",
            ),
            # One open review per sampled annotation, one open review per disagreeing item.
            models.UniqueConstraint(
                fields=["annotation"], condition=models.Q(state="open"), name="review_one_open_per_annotation"
            ),
            models.UniqueConstraint(
                fields=["item"],
                condition=models.Q(state="open", reason="disagreement"),
                name="review_one_open_disagreement",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "id"], condition=models.Q(state="open"), name="review_open"),
            models.Index(fields=["project", "state"], name="review_project_state"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} review {self.pk} of item {self.item_id} ({self.state})"


class ExportFormat(models.TextChoices):
    JSONL = "jsonl", "JSON lines"
    CSV = "csv", "CSV"
    FOLDER = "folder", "ImageFolder zip"
    COCO = "coco", "COCO (JSON)"
    YOLO = "yolo", "YOLO (zip of txt files)"
    VOC = "voc", "Pascal VOC (zip of XML files)"


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


# Labels import from the same formats they export to.
LabelImportFormat = ExportFormat


class LabelImportJob(models.Model):
    """An import of existing labels onto a project's assets (matched by sha256 or file name), read from
    an uploaded file by the task `labeling.labels_import`."""

    Format = LabelImportFormat
    Status = ExportStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    format = models.CharField(max_length=16, choices=LabelImportFormat.choices)
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    source = models.CharField(max_length=300)  # the uploaded file's storage name
    source_label = models.CharField(max_length=300, blank=True, default="")  # what the user named
    labelled = models.PositiveIntegerField(default=0)  # assets whose label was set
    unmatched = models.PositiveIntegerField(default=0)  # entries naming no asset of the project
    errors = models.JSONField(default=list, blank=True)  # [{"entry": ..., "reason": ...}], the first 1000
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(format__in=LabelImportFormat.values), name="label_import_format_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=ExportStatus.values), name="label_import_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.format} label import {self.pk} of project {self.project_id} ({self.status})"
