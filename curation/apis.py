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
from curation import findings, import_sources, selectors, services
from curation.models import DatasetVersion, Finding, ImportJob

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
            "frozen_at",
            "is_frozen",
        ]

    def get_totals(self, obj: DatasetVersion) -> dict[str, int]:
        return {split: sum((obj.counts.get(split) or {}).values()) for split in selectors.SPLITS}


class ImportListApi(APIView):
    """A project's imports (GET) and a new import (POST): a zip of class subfolders or a server folder,
    or, with `source_kind`, a manifest, a DIGITS list, URLs, an S3 prefix, texts from a CSV column or a
    COCO / YOLO / VOC zip."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ImportListInput"

        source_kind = serializers.ChoiceField(
            choices=ImportJob.Source.choices,
            required=False,
            help_text="zip or folder (the default, from file or path), or one of the other sources",
        )
        file = serializers.FileField(required=False, help_text="a zip (class subfolders, a manifest, ...) or a list")
        path = serializers.CharField(
            required=False,
            allow_blank=False,
            help_text="a server folder or file under the roots, or s3://bucket/prefix",
        )
        urls = serializers.ListField(
            child=serializers.CharField(max_length=4000), required=False, max_length=1_000_000, help_text="http(s) URLs"
        )
        column = serializers.CharField(required=False, max_length=200, help_text="text_csv: the column of the texts")
        label_column = serializers.CharField(
            required=False, allow_blank=True, max_length=200, help_text="text_csv: the column of the labels"
        )
        bucket = serializers.CharField(required=False, max_length=255, help_text="s3: the bucket")
        prefix = serializers.CharField(required=False, allow_blank=True, max_length=700, help_text="s3: the key prefix")

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
        fields = dict(data.validated_data)
        kind = fields.pop("source_kind", None)
        if kind in (None, ImportJob.Source.ZIP, ImportJob.Source.FOLDER):
            job = services.import_start(
                project=obj, user=request.user, upload=fields.get("file"), path=fields.get("path")
            )
        else:
            job = import_sources.import_source_start(
                project=obj, user=request.user, source_kind=kind, upload=fields.pop("file", None), **fields
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
        freeze = serializers.BooleanField(
            default=False, help_text="freeze it at once (all or nothing: a leak means no version)"
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
        spec = dict(data.validated_data)
        create = services.dataset_version_create_frozen if spec.pop("freeze") else services.dataset_version_create
        version = create(project=obj, user=request.user, **spec)
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


class DatasetFreezeApi(APIView):
    """Freeze a dataset version: checked against its content hash and the evaluation set (409 leak)."""

    @extend_schema(request=None, responses={200: DatasetOutputSerializer})
    def post(self, request: Request, version_id: int) -> Response:
        version = selectors.dataset_version_get(user=request.user, ref=version_id)
        version = services.dataset_version_freeze(version=version, user=request.user)
        return Response(DatasetOutputSerializer(version).data)


class DatasetExploreApi(APIView):
    """A version's items filtered by class, split, open finding kind and label changes; keyset pages."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DatasetExploreInput"

        label = serializers.CharField(required=False, allow_blank=True)
        split = serializers.ChoiceField(choices=selectors.SPLITS, required=False)
        finding_kind = serializers.ChoiceField(choices=Finding.Kind.values, required=False)
        changed_since = serializers.IntegerField(required=False, help_text="id of an earlier version")
        after = serializers.IntegerField(required=False, min_value=0, help_text="`next` of the previous page")
        limit = serializers.IntegerField(min_value=1, max_value=500, default=60)

    @extend_schema(parameters=[InputSerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, version_id: int) -> Response:
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        args = dict(query.validated_data)
        version = selectors.dataset_version_get(user=request.user, ref=version_id)
        if args.get("changed_since") is not None:
            args["changed_since"] = selectors.dataset_version_get(user=request.user, ref=args["changed_since"])
        items, after = selectors.dataset_explore(version=version, **args)
        url = reverse("curation:asset-content", kwargs={"project": version.project_id, "sha256": "SHA"})
        for item in items:
            item["url"] = url.replace("SHA", item["sha256"])
        return Response({"results": items, "next": after})


class FindingOutputSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")
    project_asset = serializers.IntegerField(source="project_asset_id", allow_null=True)
    sha256 = serializers.CharField(source="project_asset.asset.sha256", allow_null=True, default=None)
    label = serializers.CharField(source="project_asset.label", allow_null=True, default=None)
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True, default=None)

    class Meta:
        model = Finding
        fields = [
            "id",
            "project",
            "kind",
            "key",
            "project_asset",
            "sha256",
            "label",
            "evidence",
            "decision",
            "decided_by",
            "decided_at",
            "rule",
            "note",
            "verdict",
            "verdict_label",
            "verdict_at",
            "created_at",
            "updated_at",
        ]


class FindingListApi(APIView):
    """A project's findings, filtered by kind and decision, in keyset pages by id."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FindingListInput"

        kind = serializers.ChoiceField(choices=Finding.Kind.values, required=False)
        decision = serializers.ChoiceField(choices=Finding.Decision.values, required=False)
        after = serializers.IntegerField(required=False, min_value=0, help_text="`next` of the previous page")
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)

    @extend_schema(parameters=[InputSerializer], responses={200: FindingOutputSerializer(many=True)})
    def get(self, request: Request, project: str) -> Response:
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        obj = project_get(user=request.user, ref=project)
        page, after = findings.finding_list(user=request.user, project=obj, **query.validated_data)
        return Response({"results": FindingOutputSerializer(page, many=True).data, "next": after})


class FindingScanApi(APIView):
    """Queue a cleaning scan of the project (hashes, then every kind of finding)."""

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        findings.findings_scan_start(project=obj, user=request.user)
        return Response({"project": obj.pk, "status": "queued"}, status=status.HTTP_202_ACCEPTED)


class FindingDecideApi(APIView):
    """Decide one open finding: keep, drop, relabel (to `label`, or via the relabel queue) or merge."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FindingDecideInput"

        decision = serializers.ChoiceField(choices=["keep", "drop", "relabel", "merge"])
        note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
        label = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)

    @extend_schema(request=InputSerializer, responses={200: FindingOutputSerializer})
    def post(self, request: Request, finding_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        finding = findings.finding_get(user=request.user, finding_id=finding_id)
        decided = findings.finding_decide(finding=finding, user=request.user, **data.validated_data)
        return Response(FindingOutputSerializer(findings.finding_get(user=request.user, finding_id=decided.pk)).data)


class FindingRuleApi(APIView):
    """Decide every open finding a rule covers: drop_unreadable, keep_oldest_duplicate, relabel_conflicts."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FindingRuleInput"

        rule = serializers.ChoiceField(choices=findings.RULES)

    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        obj = project_get(user=request.user, ref=project)
        decided = findings.findings_decide_by_rule(project=obj, user=request.user, **data.validated_data)
        return Response({"rule": data.validated_data["rule"], "decided": decided})


class EvaluationSetApi(APIView):
    """The project's evaluation set (GET: its asset hashes) and changes to it (POST add/remove by sha256)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "EvaluationSetInput"

        add = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)
        remove = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        members = selectors.evaluation_set(user=request.user, project=obj)
        return Response({"results": members, "count": len(members)})

    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        obj = project_get(user=request.user, ref=project)
        size = services.evaluation_set_update(project=obj, user=request.user, **data.validated_data)
        return Response({"count": size})
