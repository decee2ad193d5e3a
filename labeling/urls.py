from django.urls import path

from labeling import apis
from labeling.apis_agreement import AgreementApi
from labeling.apis_transfer import LabelImportJobApi, LabelImportStartApi

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
    path("projects/<str:project>/label-imports/", LabelImportStartApi.as_view(), name="label-import-start"),
    path("labeling/label-imports/<int:job_id>/", LabelImportJobApi.as_view(), name="label-import-get"),
    path("projects/<str:project>/agreement/", AgreementApi.as_view(), name="agreement"),
    path("projects/<str:project>/texts/", apis.TextsAddApi.as_view(), name="texts-add"),
    path("projects/<str:project>/me/", apis.MeApi.as_view(), name="me"),
    path("projects/<str:project>/returned/", apis.ReturnedListApi.as_view(), name="returned"),
    path("projects/<str:project>/reviews/", apis.ReviewsListApi.as_view(), name="reviews"),
    path("projects/<str:project>/reviews/summary/", apis.ReviewsSummaryApi.as_view(), name="reviews-summary"),
    path("projects/<str:project>/gold/", apis.GoldApi.as_view(), name="gold"),
    path("projects/<str:project>/annotators/", apis.AnnotatorsListApi.as_view(), name="annotators"),
    path(
        "projects/<str:project>/annotators/<int:user_id>/pause/",
        apis.AnnotatorPauseApi.as_view(),
        name="annotator-pause",
    ),
    path(
        "projects/<str:project>/annotators/<int:user_id>/resume/",
        apis.AnnotatorResumeApi.as_view(),
        name="annotator-resume",
    ),
    path("labeling/annotations/<int:annotation_id>/undo/", apis.AnnotationUndoApi.as_view(), name="annotation-undo"),
    path(
        "labeling/annotations/<int:annotation_id>/revise/", apis.AnnotationReviseApi.as_view(), name="annotation-revise"
    ),
    path("labeling/annotations/<int:annotation_id>/image/", apis.ReturnedImageApi.as_view(), name="returned-image"),
    path("labeling/reviews/<int:review_id>/decide/", apis.ReviewDecideApi.as_view(), name="review-decide"),
    path("labeling/items/<int:item_id>/image/", apis.ItemImageApi.as_view(), name="item-image"),
    path("labeling/gold/<int:item_id>/", apis.GoldItemApi.as_view(), name="gold-item"),
]
