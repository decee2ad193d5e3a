from django.urls import path

from curation import apis

app_name = "curation"

urlpatterns = [
    path("projects/<str:project>/imports/", apis.ImportListApi.as_view(), name="import-list"),
    path("imports/<int:job_id>/", apis.ImportDetailApi.as_view(), name="import-detail"),
    path("projects/<str:project>/classes/", apis.ClassListApi.as_view(), name="class-list"),
    path("projects/<str:project>/assets/<str:sha256>/content/", apis.AssetContentApi.as_view(), name="asset-content"),
    path("projects/<str:project>/datasets/", apis.DatasetListApi.as_view(), name="dataset-list"),
    path("datasets/<int:version_id>/", apis.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("datasets/<int:version_id>/gallery/", apis.DatasetGalleryApi.as_view(), name="dataset-gallery"),
    path("datasets/<int:version_id>/diff/<int:other_id>/", apis.DatasetDiffApi.as_view(), name="dataset-diff"),
    path("datasets/<int:version_id>/freeze/", apis.DatasetFreezeApi.as_view(), name="dataset-freeze"),
    path("datasets/<int:version_id>/explore/", apis.DatasetExploreApi.as_view(), name="dataset-explore"),
    path("projects/<str:project>/findings/", apis.FindingListApi.as_view(), name="finding-list"),
    path("projects/<str:project>/findings/scan/", apis.FindingScanApi.as_view(), name="finding-scan"),
    path("projects/<str:project>/findings/rules/", apis.FindingRuleApi.as_view(), name="finding-rule"),
    path("findings/<int:finding_id>/decide/", apis.FindingDecideApi.as_view(), name="finding-decide"),
    path("projects/<str:project>/evaluation-set/", apis.EvaluationSetApi.as_view(), name="evaluation-set"),
]
