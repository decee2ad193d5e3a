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
]
