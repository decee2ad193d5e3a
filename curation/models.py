from django.conf import settings
from django.db import models

from crucible.core.models import Project


class Asset(models.Model):
    """Bytes stored once for the whole installation, addressed by their sha256.

    Where they are: a file of their own (`storage_name`, no offset or length), or a slice of a pack
    file that holds many small assets (`storage_name` of the pack, `offset` and `length` in it).
    """

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        TEXT = "text", "Text"  # a short UTF-8 text; width and height 0, mode "text", format "TEXT"

    sha256 = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.IMAGE)
    storage_name = models.CharField(max_length=200)  # the asset's own file, or the pack holding it
    offset = models.BigIntegerField(null=True, blank=True)  # in the pack; None for a file of its own
    length = models.BigIntegerField(null=True, blank=True)
    size_bytes = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    mode = models.CharField(max_length=16)  # PIL mode: L, RGB, RGBA, P, ...
    format = models.CharField(max_length=16)  # PNG, JPEG, BMP, PPM
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(offset__isnull=True, length__isnull=True) | models.Q(offset__gte=0, length__gte=0),
                name="asset_pack_slice_complete",
            ),
            models.CheckConstraint(condition=models.Q(kind__in=["image", "text"]), name="asset_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.sha256[:12]


class ImportJob(models.Model):
    class Source(models.TextChoices):
        ZIP = "zip", "Uploaded zip"
        FOLDER = "folder", "Server folder"
        S3 = "s3", "S3 prefix"
        URLS = "urls", "List of URLs"
        MANIFEST = "manifest", "CSV or JSON manifest"
        DIGITS = "digits", "DIGITS text file"
        COCO = "coco", "COCO"
        YOLO = "yolo", "YOLO"
        VOC = "voc", "Pascal VOC"
        TEXT_CSV = "text_csv", "Texts from a CSV column"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    source_kind = models.CharField(max_length=16, choices=Source.choices)
    source = models.CharField(max_length=1000)  # the server path, or the uploaded zip's storage name
    source_label = models.CharField(max_length=300, blank=True, default="")  # what the user named
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)  # new to the project
    duplicates = models.PositiveIntegerField(default=0)  # already in the project
    errors = models.JSONField(default=list, blank=True)  # [{"path": ..., "reason": ...}]
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(processed__lte=models.F("total")), name="import_progress_le_total"
            ),
        ]

    def __str__(self) -> str:
        return f"import {self.pk} of {self.source_label or self.source}"


class ProjectAsset(models.Model):
    """An asset as a project sees it: with its source path and its label."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assets")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="project_assets")
    # The single class of a single-label schema (also what dataset versions train on).
    label = models.CharField(max_length=200, blank=True, default="")
    # The whole current label where one class is not enough: {"labels": [...]} for multi-label schemas,
    # {"boxes": [{"label", "x", "y", "w", "h"}, ...]} (pixels, top-left origin) for box schemas.
    annotation = models.JSONField(null=True, blank=True)
    source_path = models.CharField(max_length=1000, blank=True, default="")
    import_job = models.ForeignKey(ImportJob, on_delete=models.SET_NULL, null=True, related_name="project_assets")
    # Dropped by a cleaning decision: left out of new dataset versions.
    excluded = models.BooleanField(default=False)
    # A member of the project's evaluation set: never in a train split (new versions put it in test).
    evaluation = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "asset"], name="project_asset_once"),
        ]
        indexes = [models.Index(fields=["project", "label"])]

    def __str__(self) -> str:
        return f"{self.asset} in project {self.project_id} as {self.label!r}"


class DatasetVersion(models.Model):
    """A frozen manifest of (asset, label, split) with the preprocessing every consumer applies."""

    class Status(models.TextChoices):
        MATERIALIZING = "materializing", "Materializing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class ResizeMode(models.TextChoices):
        SQUASH = "squash", "Squash"
        CROP = "crop", "Crop"
        FILL = "fill", "Fill"
        HALF_CROP = "half_crop", "Half crop, half fill"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_versions")
    name = models.CharField(max_length=100)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    channels = models.PositiveSmallIntegerField()  # 1 grayscale, 3 colour
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    resize_mode = models.CharField(max_length=16, choices=ResizeMode.choices)
    val_percent = models.PositiveSmallIntegerField(default=25)
    test_percent = models.PositiveSmallIntegerField(default=0)
    min_per_class = models.PositiveIntegerField(null=True, blank=True)
    max_per_class = models.PositiveIntegerField(null=True, blank=True)
    split_seed = models.BigIntegerField()
    class_names = models.JSONField(default=list)
    counts = models.JSONField(default=dict)  # {"train": {"0": 466, ...}, "val": {...}, "test": {...}}
    stats = models.JSONField(default=dict)  # what the training data looks like (sizes, modes, brightness)
    content_hash = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.MATERIALIZING)
    error = models.TextField(blank=True, default="")
    shard_name = models.CharField(max_length=300, blank=True, default="")  # storage prefix of the shards
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once by `dataset_version_freeze`; a frozen version is never changed again.
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="dataset_version_name_unique"),
            models.CheckConstraint(condition=models.Q(channels__in=[1, 3]), name="dataset_channels_1_or_3"),
            models.CheckConstraint(condition=models.Q(width__gte=1, height__gte=1), name="dataset_size_positive"),
            models.CheckConstraint(
                condition=models.Q(val_percent__lte=100 - models.F("test_percent")) & models.Q(test_percent__lt=100),
                name="dataset_split_percent_below_100",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.name}/{self.name}"

    @property
    def is_frozen(self) -> bool:
        return self.frozen_at is not None

    @property
    def spec(self) -> dict:
        return {"channels": self.channels, "width": self.width, "height": self.height, "resize_mode": self.resize_mode}


class DatasetItem(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VAL = "val", "Validation"
        TEST = "test", "Test"

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="items")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=200)
    label_index = models.PositiveIntegerField()
    split = models.CharField(max_length=8, choices=Split.choices)
    position = models.PositiveIntegerField()  # row in the split's shard

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "asset"], name="dataset_item_once"),
            models.UniqueConstraint(fields=["version", "split", "position"], name="dataset_item_position_unique"),
        ]
        indexes = [models.Index(fields=["version", "split", "label"])]

    def __str__(self) -> str:
        return f"{self.asset} in {self.split} as {self.label!r}"


class LabelEvent(models.Model):
    """One change of a project asset's label: what it was, what it became, who changed it and through
    what (an annotation's consensus, a review, a label import, a cleaning decision, an edit). Written by
    `curation.labels.asset_labels_set`, the only writer of asset labels; append-only."""

    class Via(models.TextChoices):
        CONSENSUS = "consensus", "Annotators' consensus"
        REVIEW = "review", "Review"
        IMPORT = "import", "Import"
        LABEL_IMPORT = "label_import", "Label import"
        FINDING = "finding", "Cleaning decision"
        UNDO = "undo", "Undo"
        EDIT = "edit", "Edit"

    project_asset = models.ForeignKey(ProjectAsset, on_delete=models.CASCADE, related_name="label_events")
    old_label = models.CharField(max_length=200, blank=True, default="")
    new_label = models.CharField(max_length=200, blank=True, default="")
    old_annotation = models.JSONField(null=True, blank=True)
    new_annotation = models.JSONField(null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    via = models.CharField(max_length=16, choices=Via.choices)
    # What made the change, by `via`: a queue item id (consensus, undo), a review task id, an import or
    # label-import job id, a finding id; null for edits.
    ref = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    via__in=["consensus", "review", "import", "label_import", "finding", "undo", "edit"]
                ),
                name="label_event_via_valid",
            ),
        ]
        indexes = [models.Index(fields=["project_asset", "-id"], name="label_event_asset_latest")]

    def __str__(self) -> str:
        return f"{self.project_asset_id}: {self.old_label!r} -> {self.new_label!r} via {self.via}"


class AssetHash(models.Model):
    """What the cleaning scan computed from an asset's pixels, once per asset.

    `phash` is imagehash's 64-bit perceptual hash stored as a signed BIGINT (the unsigned value minus
    2**64 when the top bit is set); `band0`..`band3` are its four 16-bit quarters (band0 the most
    significant), indexed so that a single query finds every hash within Hamming distance 3 of another
    (pigeonhole: one quarter then matches exactly). `pixel_sha256` is the sha256 of the decoded pixels
    (mode, size, bytes): two files with the same pixels in other encodings share it. An asset that could
    not be decoded keeps its reason in `error` and no hash.
    """

    asset = models.OneToOneField(Asset, on_delete=models.CASCADE, primary_key=True, related_name="phash")
    phash = models.BigIntegerField(null=True, blank=True)
    band0 = models.IntegerField(null=True, blank=True)
    band1 = models.IntegerField(null=True, blank=True)
    band2 = models.IntegerField(null=True, blank=True)
    band3 = models.IntegerField(null=True, blank=True)
    pixel_sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    pixel_std = models.FloatField(null=True, blank=True)  # of the grayscale pixels, 0-255
    error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(phash__isnull=True, error__gt="") | models.Q(phash__isnull=False, error=""),
                name="asset_hash_or_error",
            ),
            *[
                models.CheckConstraint(
                    condition=models.Q(**{f"band{i}__isnull": True})
                    | models.Q(**{f"band{i}__gte": 0, f"band{i}__lte": 0xFFFF}),
                    name=f"asset_hash_band{i}_16_bits",
                )
                for i in range(4)
            ],
        ]
        indexes = [models.Index(fields=[f"band{i}"], name=f"asset_hash_band{i}") for i in range(4)]

    def __str__(self) -> str:
        return f"{self.asset_id}: {self.phash}"


class Finding(models.Model):
    """One thing the cleaning scan found wrong (or worth a look) in a project's data, and its decision.

    Unique per (project, kind, key): a rescan updates the finding it found before instead of adding
    another. `project_asset` is the main asset involved (the oldest of a duplicate group); the others
    are listed in `evidence["members"]` (project asset ids) with why they were flagged.
    """

    class Kind(models.TextChoices):
        UNREADABLE = "unreadable", "Unreadable or truncated"
        ODD_SIZE = "odd_size", "Odd size"
        ODD_MODE = "odd_mode", "Odd colour mode"
        ODD_ASPECT = "odd_aspect", "Odd aspect ratio"
        NEAR_BLANK = "near_blank", "Nearly blank"
        EXACT_DUPLICATE = "exact_duplicate", "Exact duplicate"
        NEAR_DUPLICATE = "near_duplicate", "Near duplicate"
        CONFLICTING_LABELS = "conflicting_labels", "Same content, conflicting labels"
        CLASS_IMBALANCE = "class_imbalance", "Class imbalance"
        LABEL_ERROR = "label_error", "Likely label error"
        SPLIT_LEAK = "split_leak", "Train/validation leak"

    class Decision(models.TextChoices):
        OPEN = "open", "Open"
        KEEP = "keep", "Keep"
        DROP = "drop", "Drop"
        RELABEL = "relabel", "Relabel"
        MERGE = "merge", "Merge"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="findings")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    key = models.CharField(max_length=200)  # identifies the finding within its kind (a group key, an asset hash)
    project_asset = models.ForeignKey(
        ProjectAsset, on_delete=models.CASCADE, null=True, blank=True, related_name="findings"
    )
    evidence = models.JSONField(default=dict, blank=True)
    decision = models.CharField(max_length=8, choices=Decision.choices, default=Decision.OPEN)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    rule = models.CharField(max_length=40, blank=True, default="")  # the rule that decided it, if one did
    note = models.TextField(blank=True, default="")
    # What the annotators said when the finding's asset went through the relabel queue (label errors):
    # "confirmed" (they gave the label it had) or "fixed" (they gave another, now its label).
    verdict = models.CharField(max_length=16, blank=True, default="")
    verdict_label = models.CharField(max_length=200, blank=True, default="")
    verdict_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "key"], name="finding_once_per_key"),
            models.CheckConstraint(
                condition=models.Q(verdict__in=["", "confirmed", "fixed"]), name="finding_verdict_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    kind__in=[
                        "unreadable",
                        "odd_size",
                        "odd_mode",
                        "odd_aspect",
                        "near_blank",
                        "exact_duplicate",
                        "near_duplicate",
                        "conflicting_labels",
                        "class_imbalance",
                        "label_error",
                        "split_leak",
                    ]
                ),
                name="finding_kind_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(decision__in=["open", "keep", "drop", "relabel", "merge"]),
                name="finding_decision_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(decision="open", decided_at__isnull=True)
                | (~models.Q(decision="open") & models.Q(decided_at__isnull=False)),
                name="finding_decided_at_iff_decided",
            ),
        ]
        indexes = [models.Index(fields=["project", "decision", "kind", "id"], name="finding_project_decision")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.decision})"
