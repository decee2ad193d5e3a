"""Label imports: upload a label file in one of the formats of labeling/formats.py, then follow its job."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crucible.core.selectors import project_get
from labeling import imports
from labeling.models import LabelImportJob


class LabelImportJobOutputSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")

    class Meta:
        model = LabelImportJob
        fields = [
            "id",
            "project",
            "format",
            "status",
            "source_label",
            "labelled",
            "unmatched",
            "errors",
            "error",
            "created_at",
            "finished_at",
        ]


class LabelImportStartApi(APIView):
    """Upload a label file (multipart `file` and `format`): 202 and the queued job (engineers, admins)."""

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LabelImportInput"

        file = serializers.FileField(help_text="jsonl, csv, folder zip, COCO JSON, YOLO zip or VOC zip")
        # Checked by the service, so that a bad format answers `unknown_format`.
        format = serializers.CharField(max_length=32)

    @extend_schema(request=InputSerializer, responses={202: LabelImportJobOutputSerializer})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = imports.labels_import_start(
            project=obj, user=request.user, format=data.validated_data["format"], upload=data.validated_data["file"]
        )
        job.refresh_from_db()  # an eager task has already run
        return Response(LabelImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class LabelImportJobApi(APIView):
    @extend_schema(responses={200: LabelImportJobOutputSerializer})
    def get(self, request: Request, job_id: int) -> Response:
        job = imports.label_import_job_get(user=request.user, job_id=job_id)
        return Response(LabelImportJobOutputSerializer(job).data)
