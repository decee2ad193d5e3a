from django.contrib import admin

from training.models import Epoch, TrainingRun


class EpochInline(admin.TabularInline):
    model = Epoch
    extra = 0
    can_delete = False
    readonly_fields = [
        "epoch",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "images_per_sec",
        "seconds",
        "checkpoint_name",
    ]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "dataset_version", "status", "current_epoch", "seed", "created_at"]
    list_filter = ["status", "project"]
    search_fields = ["name"]
    list_select_related = ["project", "dataset_version", "dataset_version__project"]
    raw_id_fields = ["dataset_version", "cloned_from", "parent_run", "created_by"]
    readonly_fields = ["task_id", "created_at", "started_at", "finished_at"]
    inlines = [EpochInline]
