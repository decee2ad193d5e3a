import posixpath

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crucible.core.errors import Conflict, NotFound
from crucible.core.selectors import project_get
from curation import texts
from curation.models import Asset
from curation.selectors import AssetUnreadable, asset_read_bytes
from labeling import exports, gold, review, selectors, services
from labeling.models import Annotation, ExportJob, Lease

_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "PPM": "image/x-portable-anymap"}


class LabelClassSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    key = serializers.CharField(max_length=1, trim_whitespace=False)


class LabelClassInputSerializer(LabelClassSerializer):
    renamed_from = serializers.CharField(max_length=200, required=False, allow_blank=True)


class LabelSchemaOutputSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    kind = serializers.CharField()
    classes = LabelClassSerializer(many=True)
    updated_at = serializers.DateTimeField()


class LeaseOutputSerializer(serializers.ModelSerializer):
    lease = serializers.IntegerField(source="pk")
    item = serializers.IntegerField(source="item_id")
    kind = serializers.CharField(source="item.project_asset.asset.kind")
    text = serializers.SerializerMethodField()
    sha256 = serializers.CharField(source="item.project_asset.asset.sha256")
    width = serializers.IntegerField(source="item.project_asset.asset.width")
    height = serializers.IntegerField(source="item.project_asset.asset.height")
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Lease
        fields = ["lease", "item", "kind", "text", "sha256", "width", "height", "image_url", "created_at", "expires_at"]

    def get_text(self, obj: Lease) -> str | None:
        # A storage read, not a query: texts travel inline so that the page needs no second request.
        return selectors.asset_text(obj.item.project_asset.asset)

    def get_image_url(self, obj: Lease) -> str | None:
        if obj.item.project_asset.asset.kind != "image":
            return None
        return reverse("labeling:lease-image", kwargs={"lease_id": obj.pk})


class AnnotationOutputSerializer(serializers.ModelSerializer):
    item = serializers.IntegerField(source="item_id")
    annotator = serializers.IntegerField(source="annotator_id")

    class Meta:
        model = Annotation
        fields = ["id", "item", "annotator", "result", "time_spent_ms", "idempotency_key", "status", "created_at"]


def _schema_body(schema, classes) -> dict:
    return LabelSchemaOutputSerializer(
        {
            "project": schema.project_id,
            "kind": schema.kind,
            "classes": [{"name": c.name, "key": c.key} for c in classes],
            "updated_at": schema.updated_at,
        }
    ).data


class LabelSchemaApi(APIView):
    """The project's label schema: read by any member (GET), replaced by engineers (PUT)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LabelSchemaInput"

        # Checked by the service, so that a bad kind answers `invalid_schema`.
        kind = serializers.CharField(default="single_label", max_length=32)
        classes = LabelClassInputSerializer(many=True)
        removed = serializers.DictField(child=serializers.DictField(), required=False, default=dict)

    @extend_schema(responses={200: LabelSchemaOutputSerializer})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        schema, classes = selectors.label_schema_get(project=obj, user=request.user)
        return Response(_schema_body(schema, classes))

    @extend_schema(request=InputSerializer, responses={200: LabelSchemaOutputSerializer})
    def put(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.label_schema_set(project=obj, user=request.user, **data.validated_data)
        schema, classes = selectors.label_schema_get(project=obj, user=request.user)
        return Response(_schema_body(schema, classes))


class QueueItemsAddApi(APIView):
    """Queue assets of the project for labelling (engineers)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QueueItemsAddInput"

        project_asset_ids = serializers.ListField(
            child=serializers.IntegerField(), required=False, allow_null=True, default=None
        )
        priority = serializers.IntegerField(default=0, min_value=-(2**31), max_value=2**31 - 1)
        required_annotations = serializers.IntegerField(default=1, min_value=1, max_value=100)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QueueItemsAddOutput"

        added = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        added = services.queue_items_add(project=obj, user=request.user, **data.validated_data)
        return Response({"added": added}, status=status.HTTP_201_CREATED)


class QueueSettingsApi(APIView):
    """The project's queue order and lease TTL: read by any member (GET), set by engineers (PUT)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QueueSettingsInput"

        # Checked by the service against the whitelist of orders, so that a bad one answers `invalid_order`.
        order = serializers.CharField(default="sequential", max_length=32)
        lease_ttl_seconds = serializers.IntegerField(required=False, allow_null=True, default=None)
        # Left out: kept as they are. Ranges are checked by the service.
        gold_rate = serializers.FloatField(required=False)
        gold_min_accuracy = serializers.FloatField(required=False)
        gold_min_answers = serializers.IntegerField(required=False)
        gold_window = serializers.IntegerField(required=False)
        review_rate = serializers.FloatField(required=False)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QueueSettingsOutput"

        project = serializers.IntegerField()
        order = serializers.CharField()
        orders = serializers.ListField(child=serializers.CharField())
        lease_ttl_seconds = serializers.IntegerField()
        lease_ttl_default = serializers.BooleanField()
        gold_rate = serializers.FloatField()
        gold_min_accuracy = serializers.FloatField()
        gold_min_answers = serializers.IntegerField()
        gold_window = serializers.IntegerField()
        review_rate = serializers.FloatField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response(self.OutputSerializer(selectors.queue_settings_get(project=obj, user=request.user)).data)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.queue_settings_set(project=obj, user=request.user, **data.validated_data)
        return Response(self.OutputSerializer(selectors.queue_settings_get(project=obj, user=request.user)).data)


class QueueNextApi(APIView):
    """The caller's leases in the project: the item to label first, then up to two prefetched."""

    @extend_schema(request=None, responses={200: LeaseOutputSerializer(many=True)})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        leases = services.lease_claim_next(project=obj, annotator=request.user)
        return Response({"results": LeaseOutputSerializer(leases, many=True).data})


class QueueStatusApi(APIView):
    """Items by state, live leases and submissions (engineers and reviewers)."""

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QueueStatusOutput"

        items = serializers.DictField(child=serializers.IntegerField())
        items_total = serializers.IntegerField()
        live_leases = serializers.IntegerField()
        expired_unswept = serializers.IntegerField()
        submissions = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response(self.OutputSerializer(selectors.queue_status(project=obj, user=request.user)).data)


class LeaseImageApi(APIView):
    """The image of a leased item, for the annotator holding the lease and only while it is held."""

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY})
    def get(self, request: Request, lease_id: int) -> HttpResponse:
        asset = selectors.image_of(selectors.leased_asset(lease_id=lease_id, user=request.user))
        return _image_response(asset)


def _image_response(asset: Asset) -> HttpResponse:
    try:
        data = asset_read_bytes(asset)
    except AssetUnreadable:
        raise NotFound(f"the file of asset {asset.sha256[:12]} is missing from storage") from None
    response = HttpResponse(data, content_type=_CONTENT_TYPES.get(asset.format, "application/octet-stream"))
    # Private and not cached: the right to see it ends with the lease (or the role).
    response["Cache-Control"] = "private, no-store"
    return response


class LeaseHeartbeatApi(APIView):
    """Keep a lease alive: its expiry moves to now plus the lease TTL."""

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, lease_id: int) -> Response:
        lease = services.lease_heartbeat(lease_id=lease_id, annotator=request.user)
        return Response({"lease": lease.pk, "item": lease.item_id, "expires_at": lease.expires_at})


class LeaseReleaseApi(APIView):
    """Skip: the item goes back to the queue for others; for the caller never (`requeue`, `drop`) or after
    everything else (`later`)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LeaseReleaseInput"

        # Checked by the service, so that a bad mode answers its own code.
        mode = serializers.CharField(default="requeue", max_length=16)

    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, lease_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lease = services.lease_release(lease_id=lease_id, annotator=request.user, mode=data.validated_data["mode"])
        return Response(
            {
                "lease": lease.pk,
                "item": lease.item_id,
                "released_at": lease.released_at,
                "mode": services.skip_mode(lease),
            }
        )


class AnnotationSubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AnnotationSubmitInput"

        result = serializers.JSONField()
        time_spent_ms = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
        idempotency_key = serializers.CharField(max_length=100)

    @extend_schema(request=InputSerializer, responses={201: AnnotationOutputSerializer})
    def post(self, request: Request, item_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        annotation = services.annotation_submit(item_id=item_id, annotator=request.user, **data.validated_data)
        return Response(AnnotationOutputSerializer(annotation).data, status=status.HTTP_201_CREATED)


class ItemHistoryApi(APIView):
    """An item's state, consensus, annotations and leases in time order (engineers, reviewers, admins)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, item_id: int) -> Response:
        return Response(selectors.item_history(item_id=item_id, user=request.user))


class QueueDisagreementsApi(APIView):
    """Done items whose annotations reached no majority, with their votes; keyset pages by item id."""

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QueueDisagreementsFilter"

        after = serializers.IntegerField(default=0, min_value=0)
        limit = serializers.IntegerField(
            default=selectors.DISAGREEMENTS_LIMIT_DEFAULT, min_value=1, max_value=selectors.DISAGREEMENTS_LIMIT_MAX
        )

    @extend_schema(parameters=[FilterSerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        results, next_after = selectors.queue_disagreements(project=obj, user=request.user, **params.validated_data)
        return Response({"results": results, "next_after": next_after})


class ExportJobOutputSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")
    project_name = serializers.CharField(source="project.name")
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "project",
            "project_name",
            "format",
            "status",
            "rows",
            "error",
            "file_url",
            "created_at",
            "finished_at",
        ]

    def get_file_url(self, obj: ExportJob) -> str | None:
        if obj.status != ExportJob.Status.DONE:
            return None
        return reverse("labeling:export-file", kwargs={"job_id": obj.pk})


class LabelsExportApi(APIView):
    """Start an export of the project's labels (engineers, reviewers, admins): 202 and the queued job."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LabelsExportInput"

        # Checked by the service, so that a bad format answers `unknown_format`.
        format = serializers.CharField(max_length=32)

    @extend_schema(request=InputSerializer, responses={202: ExportJobOutputSerializer})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = exports.labels_export_start(project=obj, user=request.user, format=data.validated_data["format"])
        job.refresh_from_db()  # an eager task has already run
        return Response(ExportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ExportJobApi(APIView):
    @extend_schema(responses={200: ExportJobOutputSerializer})
    def get(self, request: Request, job_id: int) -> Response:
        job = exports.export_job_get(user=request.user, job_id=job_id)
        return Response(ExportJobOutputSerializer(job).data)


class ExportFileApi(APIView):
    """The exported file, streamed; 409 `export_not_ready` until the job is done."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, job_id: int) -> FileResponse:
        job = exports.export_job_get(user=request.user, job_id=job_id)
        if job.status != ExportJob.Status.DONE:
            raise Conflict(f"export {job.pk} is {job.status}, not done", code="export_not_ready")
        try:
            fh = default_storage.open(job.file_name, "rb")
        except OSError:
            raise NotFound(f"the file of export {job.pk} is missing from storage") from None
        return FileResponse(
            fh,
            as_attachment=True,
            filename=posixpath.basename(job.file_name),
            content_type=exports.CONTENT_TYPES[job.format],
        )


# Undo, returned work and the annotator's own figures


class AnnotationUndoApi(APIView):
    """Take back a submission while its lease has not expired: the lease is live again."""

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, annotation_id: int) -> Response:
        annotation, lease = services.annotation_undo(annotation_id=annotation_id, annotator=request.user)
        return Response({"annotation": annotation.pk, "lease": LeaseOutputSerializer(lease).data})


class AnnotationReviseApi(APIView):
    """A new answer for one of the caller's rejected annotations."""

    @extend_schema(request=AnnotationSubmitApi.InputSerializer, responses={201: AnnotationOutputSerializer})
    def post(self, request: Request, annotation_id: int) -> Response:
        data = AnnotationSubmitApi.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        revision = review.annotation_revise(annotation_id=annotation_id, annotator=request.user, **data.validated_data)
        return Response(AnnotationOutputSerializer(revision).data, status=status.HTTP_201_CREATED)


class ReturnedListApi(APIView):
    """The caller's rejected annotations in the project, not yet revised, with the reviewer's comment."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response({"results": selectors.returned_list(project=obj, user=request.user)})


class ReturnedImageApi(APIView):
    """The image of one of the caller's returned annotations."""

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY})
    def get(self, request: Request, annotation_id: int) -> HttpResponse:
        return _image_response(selectors.returned_asset(annotation_id=annotation_id, user=request.user))


class MeApi(APIView):
    """The caller's own figures in the project."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response(selectors.me_get(project=obj, user=request.user))


# Review


class ReviewsListApi(APIView):
    """The project's reviews (reviewers, engineers, admins); keyset pages by id."""

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewsFilter"

        state = serializers.ChoiceField(choices=["open", "accepted", "rejected", "fixed", "all"], default="open")
        after = serializers.IntegerField(default=0, min_value=0)
        limit = serializers.IntegerField(
            default=selectors.REVIEWS_LIMIT_DEFAULT, min_value=1, max_value=selectors.REVIEWS_LIMIT_MAX
        )

    @extend_schema(parameters=[FilterSerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        args = dict(params.validated_data)
        if args["state"] == "all":
            args["state"] = None
        results, next_after = selectors.reviews_list(project=obj, user=request.user, **args)
        return Response({"results": results, "next_after": next_after})


class ReviewsSummaryApi(APIView):
    """Reviews by state and by annotator."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response(selectors.reviews_summary(project=obj, user=request.user))


class ReviewDecideApi(APIView):
    """Accept, reject (with a comment) or fix (with a result) an open review."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewDecideInput"

        # Checked by the service, so that a bad action answers `invalid_action`.
        action = serializers.CharField(max_length=16)
        comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
        result = serializers.JSONField(required=False, default=None)
        annotation = serializers.IntegerField(required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, review_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        review.review_decide(
            review_id=review_id,
            user=request.user,
            action=v["action"],
            comment=v["comment"],
            result=v["result"],
            annotation_id=v["annotation"],
        )
        return Response(selectors.review_get(review_id=review_id, user=request.user))


class ItemImageApi(APIView):
    """The image of a queue item, for reviewers, engineers and admins."""

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY})
    def get(self, request: Request, item_id: int) -> HttpResponse:
        return _image_response(selectors.item_asset(item_id=item_id, user=request.user))


# Gold and annotators


class GoldApi(APIView):
    """The project's gold items: listed (GET) and added (POST) by engineers."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "GoldAddInput"

        class GoldItemSerializer(serializers.Serializer):
            project_asset_id = serializers.IntegerField()
            result = serializers.JSONField()

        items = GoldItemSerializer(many=True)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response({"results": selectors.gold_list(project=obj, user=request.user)})

    @extend_schema(request=InputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = gold.gold_items_add(project=obj, user=request.user, items=data.validated_data["items"])
        return Response({"created": created}, status=status.HTTP_201_CREATED)


class GoldItemApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, item_id: int) -> Response:
        gold.gold_item_delete(item_id=item_id, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AnnotatorsListApi(APIView):
    """The project's annotators with their figures and whether they are paused (engineers)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response({"results": selectors.annotators_list(project=obj, user=request.user)})


def _annotator_status_body(obj) -> dict:
    return {"annotator": obj.annotator_id, "paused": obj.paused, "reason": obj.reason}


class AnnotatorPauseApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AnnotatorPauseInput"

        reason = serializers.CharField(max_length=500)

    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str, user_id: int) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        paused = gold.annotator_pause(
            project=obj, user=request.user, annotator_id=user_id, reason=data.validated_data["reason"]
        )
        return Response(_annotator_status_body(paused))


class AnnotatorResumeApi(APIView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str, user_id: int) -> Response:
        obj = project_get(user=request.user, ref=project)
        resumed = gold.annotator_resume(project=obj, user=request.user, annotator_id=user_id)
        return Response(_annotator_status_body(resumed))


# Text items


class TextsAddApi(APIView):
    """Add texts to the project as text items (engineers)."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TextsAddInput"

        # Lengths are checked by the service, so that a long text answers `invalid_texts`.
        texts = serializers.ListField(child=serializers.CharField(trim_whitespace=False, allow_blank=True))
        labels = serializers.ListField(
            child=serializers.CharField(allow_blank=True, trim_whitespace=False),
            required=False,
            allow_null=True,
            default=None,
        )

    @extend_schema(request=InputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids, created = texts.text_assets_import(project=obj, user=request.user, **data.validated_data)
        return Response({"created": created, "project_asset_ids": ids}, status=status.HTTP_201_CREATED)
