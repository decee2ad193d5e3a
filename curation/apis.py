from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crucible.core.selectors import project_get
from curation import selectors, services
from curation.models import DatasetVersion, ImportJob

_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "PPM": "image/x-portable-anymap"}


class ImportJobOutputSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "project",
            "status",
            "source_kind",
            "source_label",
            "total",
            "processed",
            "imported",
            "duplicates",
            "errors",
            "message",
            "created_at",
            "started_at",
            "finished_at",
        ]


class DatasetOutputSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")
    project_name = serializers.CharField(source="project.name")
    parent = serializers.IntegerField(source="parent_id", allow_null=True)
    totals = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "project",
            "project_name",
            "name",
            "parent",
            "channels",
            "width",
            "height",
            "resize_mode",
            "val_percent",
            "test_percent",
            "min_per_class",
            "max_per_class",
            "split_seed",
            "class_names",
            "counts",
            "totals",
            "stats",
            "status",
            "error",
            "content_hash",
            "created_at",
        ]

    def get_totals(self, obj: DatasetVersion) -> dict[str, int]:
        return {split: sum((obj.counts.get(split) or {}).values()) for split in selectors.SPLITS}


class ImportListApi(APIView):
    """A project's imports (GET) and a new import from a zip upload or a server folder (POST)."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ImportListInput"

        file = serializers.FileField(required=False, help_text="a zip of class subfolders")
        path = serializers.CharField(required=False, allow_blank=False, help_text="a server folder under the roots")

    @extend_schema(responses={200: ImportJobOutputSerializer(many=True)})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        jobs = selectors.import_job_list(user=request.user, project=obj)
        return Response({"results": ImportJobOutputSerializer(jobs, many=True).data})

    @extend_schema(request=InputSerializer, responses={202: ImportJobOutputSerializer})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.import_start(
            project=obj, user=request.user, upload=data.validated_data.get("file"), path=data.validated_data.get("path")
        )
        return Response(ImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailApi(APIView):
    @extend_schema(responses={200: ImportJobOutputSerializer})
    def get(self, request: Request, job_id: int) -> Response:
        job = selectors.import_job_get(user=request.user, job_id=job_id)
        return Response(ImportJobOutputSerializer(job).data)


class ClassListApi(APIView):
    """The labels of a project's assets and how many assets carry each."""

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ClassListOutput"

        label = serializers.CharField()
        count = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        rows = selectors.project_class_counts(user=request.user, project=obj)
        return Response({"results": self.OutputSerializer(rows, many=True).data})


class AssetContentApi(APIView):
    """The stored bytes of an asset of the project (gallery thumbnails, previews)."""

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY})
    def get(self, request: Request, project: str, sha256: str) -> FileResponse:
        obj = project_get(user=request.user, ref=project)
        asset, handle = selectors.project_asset_content(user=request.user, project=obj, sha256=sha256)
        response = FileResponse(handle, content_type=_CONTENT_TYPES.get(asset.format, "application/octet-stream"))
        # Content-addressed: the bytes behind this URL never change.
        response["Cache-Control"] = "private, max-age=31536000, immutable"
        response["ETag"] = f'"{asset.sha256}"'
        return response


class DatasetListApi(APIView):
    """A project's dataset versions (GET, optionally ?name=) and a new version (POST)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DatasetListInput"

        name = serializers.CharField(max_length=100)
        channels = serializers.IntegerField()
        width = serializers.IntegerField()
        height = serializers.IntegerField()
        resize_mode = serializers.CharField()
        val_percent = serializers.IntegerField(default=25)
        test_percent = serializers.IntegerField(default=0)
        min_per_class = serializers.IntegerField(required=False, allow_null=True, default=None)
        max_per_class = serializers.IntegerField(required=False, allow_null=True, default=None)
        split_seed = serializers.IntegerField(required=False, allow_null=True, default=None)
        parent = serializers.IntegerField(
            required=False, allow_null=True, default=None, help_text="id of the version this one follows"
        )

    @extend_schema(
        parameters=[OpenApiParameter("name", str, description="only the version with this name")],
        responses={200: DatasetOutputSerializer(many=True)},
    )
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        versions = selectors.dataset_version_list(
            user=request.user, project=obj, name=request.query_params.get("name") or None
        )
        return Response({"results": DatasetOutputSerializer(versions, many=True).data})

    @extend_schema(request=InputSerializer, responses={201: DatasetOutputSerializer})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.dataset_version_create(project=obj, user=request.user, **data.validated_data)
        return Response(DatasetOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class DatasetDetailApi(APIView):
    @extend_schema(responses={200: DatasetOutputSerializer})
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.dataset_version_get(user=request.user, ref=version_id)
        return Response(DatasetOutputSerializer(version).data)


class DatasetGalleryApi(APIView):
    """A few images of each class of a split, linking to the asset content."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DatasetGalleryInput"

        split = serializers.ChoiceField(choices=selectors.SPLITS, default="train")
        per_class = serializers.IntegerField(min_value=1, max_value=100, default=8)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DatasetGalleryOutput"

        classes = serializers.DictField(child=serializers.ListField(child=serializers.DictField()))

    @extend_schema(parameters=[InputSerializer], responses={200: OutputSerializer})
    def get(self, request: Request, version_id: int) -> Response:
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        version = selectors.dataset_version_get(user=request.user, ref=version_id)
        classes = selectors.dataset_gallery(version=version, **query.validated_data)
        url = reverse("curation:asset-content", kwargs={"project": version.project_id, "sha256": "SHA"})
        return Response(
            {
                "classes": {
                    label: [{"sha256": sha, "url": url.replace("SHA", sha)} for sha in shas]
                    for label, shas in classes.items()
                }
            }
        )


class DatasetDiffApi(APIView):
    """Label-level differences from dataset version `a` to version `b` of the same project."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DatasetDiffInput"

        limit = serializers.IntegerField(min_value=0, max_value=10_000, default=200)

    @extend_schema(parameters=[InputSerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, version_id: int, other_id: int) -> Response:
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        a = selectors.dataset_version_get(user=request.user, ref=version_id)
        b = selectors.dataset_version_get(user=request.user, ref=other_id)
        return Response(selectors.dataset_version_diff(user=request.user, a=a, b=b, **query.validated_data))
