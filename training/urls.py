from django.urls import path

from training import apis

urlpatterns = [
    path("datasets/<str:dataset>/runs/", apis.TrainingRunStartApi.as_view(), name="run-start"),
    path("projects/<str:project>/runs/", apis.TrainingRunListApi.as_view(), name="run-list"),
    path("runs/<int:run>/", apis.TrainingRunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:run>/abort/", apis.TrainingRunAbortApi.as_view(), name="run-abort"),
    path("runs/<int:run>/clone/", apis.TrainingRunCloneApi.as_view(), name="run-clone"),
    path("runs/<int:run>/classify/", apis.TrainingRunClassifyApi.as_view(), name="run-classify"),
    path("runs/<int:run>/classify-many/", apis.TrainingRunClassifyManyApi.as_view(), name="run-classify-many"),
    path("runs/<int:run>/model/", apis.TrainingRunModelApi.as_view(), name="run-model"),
    path("datasets/<str:dataset>/label-errors/", apis.LabelErrorScanStartApi.as_view(), name="label-error-scan-start"),
    path("label-error-scans/<int:scan>/", apis.LabelErrorScanDetailApi.as_view(), name="label-error-scan-detail"),
]
