from django.urls import path

from labeling import apis

app_name = "labeling"

urlpatterns = [
    path("projects/<str:project>/label-schema/", apis.LabelSchemaApi.as_view(), name="label-schema"),
    path("projects/<str:project>/queue/items/", apis.QueueItemsAddApi.as_view(), name="queue-items-add"),
    path("projects/<str:project>/queue/settings/", apis.QueueSettingsApi.as_view(), name="queue-settings"),
    path("projects/<str:project>/queue/next/", apis.QueueNextApi.as_view(), name="queue-next"),
    path("projects/<str:project>/queue/status/", apis.QueueStatusApi.as_view(), name="queue-status"),
    path(
        "projects/<str:project>/queue/disagreements/",
        apis.QueueDisagreementsApi.as_view(),
        name="queue-disagreements",
    ),
    path("labeling/items/<int:item_id>/history/", apis.ItemHistoryApi.as_view(), name="item-history"),
    path("labeling/leases/<int:lease_id>/image/", apis.LeaseImageApi.as_view(), name="lease-image"),
    path("labeling/leases/<int:lease_id>/heartbeat/", apis.LeaseHeartbeatApi.as_view(), name="lease-heartbeat"),
    path("labeling/leases/<int:lease_id>/release/", apis.LeaseReleaseApi.as_view(), name="lease-release"),
    path("labeling/items/<int:item_id>/annotations/", apis.AnnotationSubmitApi.as_view(), name="annotation-submit"),
    path("projects/<str:project>/exports/", apis.LabelsExportApi.as_view(), name="labels-export"),
    path("labeling/exports/<int:job_id>/", apis.ExportJobApi.as_view(), name="export-get"),
    path("labeling/exports/<int:job_id>/file/", apis.ExportFileApi.as_view(), name="export-file"),
]
