from django.contrib import admin

from curation.models import Asset, DatasetVersion, ImportJob, ProjectAsset


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["sha256", "format", "width", "height", "mode", "size_bytes", "created_at"]
    list_filter = ["format", "mode"]
    search_fields = ["sha256"]
    readonly_fields = [f.name for f in Asset._meta.fields]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "source_kind",
        "source_label",
        "status",
        "processed",
        "total",
        "imported",
        "duplicates",
        "created_at",
    ]
    list_filter = ["status", "source_kind"]
    list_select_related = ["project"]
    readonly_fields = ["created_at", "started_at", "finished_at"]


@admin.register(ProjectAsset)
class ProjectAssetAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "label", "source_path", "asset"]
    list_filter = ["project"]
    list_select_related = ["project", "asset"]
    search_fields = ["label", "source_path", "asset__sha256"]
    raw_id_fields = ["asset", "import_job"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "name", "channels", "width", "height", "resize_mode", "status", "created_at"]
    list_filter = ["status", "resize_mode"]
    list_select_related = ["project"]
    search_fields = ["name", "content_hash"]
    readonly_fields = ["content_hash", "shard_name", "class_names", "counts", "stats", "split_seed", "created_at"]
