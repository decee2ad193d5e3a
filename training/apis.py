"""REST API of training runs (docs/api.md, "Training runs"): one class per operation."""

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crucible.core.errors import ValidationFailed
from crucible.core.selectors import project_get
from curation.selectors import dataset_version_get
from training.engine import NETWORKS, TrainConfig
from training.engine.loop import AUGMENTATIONS, MEAN_SUBTRACTIONS
from training.label_errors import label_error_scan_start
from training.models import LabelErrorScan
from training.selectors import label_error_scan_get, training_run_get, training_run_list
from training.services import (
    training_run_abort,
    training_run_classify,
    training_run_classify_many,
    training_run_clone,
    training_run_model_archive,
    training_run_start,
)


class EpochOutputSerializer(serializers.Serializer):
    epoch = serializers.IntegerField()
    train_loss = serializers.FloatField()
    val_loss = serializers.FloatField(allow_null=True)
    val_accuracy = serializers.FloatField(allow_null=True)
    learning_rate = serializers.FloatField()
    images_per_sec = serializers.FloatField()
    seconds = serializers.FloatField()


class RunOutputSerializer(serializers.Serializer):
    """A run; every related object comes from the selector's select_related/prefetch_related."""

    id = serializers.IntegerField()
    project = serializers.IntegerField(source="project_id")
    project_name = serializers.CharField(source="project.name")
    name = serializers.CharField()
    dataset = serializers.IntegerField(source="dataset_version_id")
    dataset_name = serializers.CharField(source="dataset_version.name")
    config = serializers.JSONField()
    seed = serializers.IntegerField()
    device = serializers.CharField()
    device_used = serializers.CharField()
    status = serializers.CharField()
    cloned_from = serializers.IntegerField(source="cloned_from_id", allow_null=True)
    parent_run = serializers.IntegerField(source="parent_run_id", allow_null=True)
    parent_epoch = serializers.IntegerField(allow_null=True)
    clones = serializers.SerializerMethodField()
    continuations = serializers.SerializerMethodField()
    current_epoch = serializers.IntegerField()
    progress = serializers.FloatField()
    images_per_sec = serializers.FloatField(allow_null=True)
    eta_seconds = serializers.FloatField(allow_null=True)
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    epochs = EpochOutputSerializer(many=True, source="epochs.all")

    def get_clones(self, obj) -> list[int]:
        return [c.pk for c in obj.clones.all()]

    def get_continuations(self, obj) -> list[int]:
        return [c.pk for c in obj.continuations.all()]


def _run_response(run, *, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(RunOutputSerializer(run).data, status=status_code)


class TrainingRunStartApi(APIView):
    """Start a training run on a dataset version (engineers and admins of its project)."""

    @extend_schema_serializer(component_name="TrainingRunStartInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        network = serializers.CharField(help_text=f"one of {', '.join(NETWORKS)}")
        epochs = serializers.IntegerField(default=30)
        batch_size = serializers.IntegerField(default=64)
        lr = serializers.FloatField(default=0.01)
        lr_policy = serializers.CharField(default="step", help_text="fixed or step")
        lr_step_epochs = serializers.IntegerField(default=10)
        lr_gamma = serializers.FloatField(default=0.1)
        optimizer = serializers.CharField(default="sgd", help_text="sgd or adam")
        momentum = serializers.FloatField(default=0.9)
        weight_decay = serializers.FloatField(default=TrainConfig.weight_decay, help_text="L2 penalty, >= 0")
        mean_subtraction = serializers.CharField(
            default=TrainConfig.mean_subtraction,
            help_text=f"one of {', '.join(MEAN_SUBTRACTIONS)}: subtract the training split's mean image, "
            "its mean per channel, or nothing (training and inference alike)",
        )
        augmentation = serializers.CharField(
            default=TrainConfig.augmentation,
            help_text=f"one of {', '.join(AUGMENTATIONS)}: shift translates each training image by a random "
            "offset of up to 2 pixels in x and y; training batches only, never validation or inference",
        )
        seed = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0)
        device = serializers.CharField(default="auto", help_text="auto, cpu or cuda")
        from_run = serializers.IntegerField(required=False, allow_null=True, default=None)
        from_epoch = serializers.IntegerField(required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={201: RunOutputSerializer})
    def post(self, request: Request, dataset: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        top = {k: values.pop(k) for k in ("name", "seed", "device", "from_run", "from_epoch")}
        version = dataset_version_get(user=request.user, ref=dataset)
        run = training_run_start(dataset_version=version, user=request.user, config=values, **top)
        return _run_response(training_run_get(user=request.user, run_id=run.pk), status_code=status.HTTP_201_CREATED)


class TrainingRunListApi(APIView):
    @extend_schema_serializer(component_name="TrainingRunListOutput")
    class OutputSerializer(serializers.Serializer):
        results = RunOutputSerializer(many=True)

    @extend_schema(
        parameters=[OpenApiParameter("name", str, description="only the run with this name")],
        responses={200: OutputSerializer},
    )
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        runs = training_run_list(user=request.user, project=obj, name=request.query_params.get("name"))
        return Response({"results": RunOutputSerializer(runs, many=True).data})


class TrainingRunDetailApi(APIView):
    @extend_schema(responses={200: RunOutputSerializer})
    def get(self, request: Request, run: int) -> Response:
        return _run_response(training_run_get(user=request.user, run_id=run))


class TrainingRunAbortApi(APIView):
    @extend_schema(request=None, responses={200: RunOutputSerializer})
    def post(self, request: Request, run: int) -> Response:
        obj = training_run_get(user=request.user, run_id=run)
        return _run_response(training_run_abort(run=obj, user=request.user))


class TrainingRunCloneApi(APIView):
    @extend_schema_serializer(component_name="TrainingRunCloneInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True, default=None)
        new_seed = serializers.BooleanField(default=False)

    @extend_schema(request=InputSerializer, responses={201: RunOutputSerializer})
    def post(self, request: Request, run: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        obj = training_run_get(user=request.user, run_id=run)
        clone = training_run_clone(run=obj, user=request.user, **data.validated_data)
        return _run_response(training_run_get(user=request.user, run_id=clone.pk), status_code=status.HTTP_201_CREATED)


class WarningSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    advice = serializers.CharField()


class TopSerializer(serializers.Serializer):
    label = serializers.CharField()
    probability = serializers.FloatField()


class TrainingRunClassifyApi(APIView):
    """Classify one image through the dataset version's own preprocessing."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="TrainingRunClassifyInput")
    class InputSerializer(serializers.Serializer):
        image = serializers.FileField()
        epoch = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)

    @extend_schema_serializer(component_name="TrainingRunClassifyOutput")
    class OutputSerializer(serializers.Serializer):
        run = serializers.IntegerField()
        epoch = serializers.IntegerField()
        top = TopSerializer(many=True)
        preprocessing = serializers.ListField(child=serializers.CharField())
        warnings = WarningSerializer(many=True)

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={200: OutputSerializer})
    def post(self, request: Request, run: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        obj = training_run_get(user=request.user, run_id=run)
        result = training_run_classify(
            run=obj, user=request.user, data=data.validated_data["image"].read(), epoch=data.validated_data["epoch"]
        )
        return Response(self.OutputSerializer(result).data)


class TrainingRunClassifyManyApi(APIView):
    """Classify a zip (class subfolders give labels) or several images; accuracy when labels are known."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="TrainingRunClassifyManyInput")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(required=False)
        images = serializers.ListField(child=serializers.FileField(), required=False)
        epoch = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)

    @extend_schema_serializer(component_name="TrainingRunClassifyManyResult")
    class ResultSerializer(serializers.Serializer):
        name = serializers.CharField()
        label = serializers.CharField(allow_null=True)
        top = TopSerializer(many=True)
        warnings = WarningSerializer(many=True)

    @extend_schema_serializer(component_name="TrainingRunClassifyManyOutput")
    class OutputSerializer(serializers.Serializer):
        run = serializers.IntegerField()
        epoch = serializers.IntegerField()
        results = serializers.ListField(child=serializers.DictField())
        accuracy = serializers.FloatField(allow_null=True)
        confusion = inline_serializer(
            "Confusion",
            {"labels": serializers.ListField(child=serializers.CharField()), "matrix": serializers.JSONField()},
            allow_null=True,
        )

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={200: OutputSerializer})
    def post(self, request: Request, run: int) -> Response:
        images = request.FILES.getlist("images")
        payload = {"images": images, **_epoch(request)}
        if "file" in request.FILES:
            payload["file"] = request.FILES["file"]
        data = self.InputSerializer(data=payload)
        data.is_valid(raise_exception=True)
        archive = data.validated_data.get("file")
        if archive is None and not images:
            raise ValidationFailed("send a zip as `file` or images as `images`", code="no_images")
        obj = training_run_get(user=request.user, run_id=run)
        result = training_run_classify_many(
            run=obj,
            user=request.user,
            archive=archive,
            files=None if archive is not None else [(f.name, f.read()) for f in images],
            epoch=data.validated_data["epoch"],
        )
        result["results"] = self.ResultSerializer(result["results"], many=True).data
        return Response(result)


def _epoch(request: Request) -> dict:
    value = request.data.get("epoch")
    return {} if value in (None, "") else {"epoch": value}


class TrainingRunModelApi(APIView):
    """The model at an epoch as a tar.gz: weights.pt, preprocessing.json, labels.txt, info.json."""

    @extend_schema(
        parameters=[OpenApiParameter("epoch", int, description="the epoch (default: the last finished one)")],
        responses={(200, "application/gzip"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, run: int) -> FileResponse:
        epoch = request.query_params.get("epoch")
        if epoch is not None and not epoch.isdigit():
            raise ValidationFailed("epoch: expected a number", fields={"epoch": "invalid"})
        obj = training_run_get(user=request.user, run_id=run)
        name, fh = training_run_model_archive(run=obj, user=request.user, epoch=int(epoch) if epoch else None)
        return FileResponse(fh, as_attachment=True, filename=name, content_type="application/gzip")


class LabelErrorScanOutputSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")
    dataset = serializers.IntegerField(source="dataset_version_id")

    class Meta:
        model = LabelErrorScan
        fields = [
            "id",
            "project",
            "dataset",
            "config",
            "folds",
            "seed",
            "device",
            "device_used",
            "relabel_top",
            "status",
            "folds_done",
            "items",
            "suspects",
            "sent_to_relabel",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class LabelErrorScanStartApi(APIView):
    """Queue a label error scan of a dataset version on the train queue (engineers and admins): K-fold
    cross-validation, confident learning, findings of kind label_error, the top suspects to relabelling."""

    @extend_schema_serializer(component_name="LabelErrorScanStartInput")
    class InputSerializer(serializers.Serializer):
        folds = serializers.IntegerField(default=5)
        epochs = serializers.IntegerField(default=5)
        network = serializers.CharField(default="lenet")
        relabel_top = serializers.IntegerField(default=50)
        seed = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0)
        device = serializers.CharField(default="auto")

    @extend_schema(request=InputSerializer, responses={202: LabelErrorScanOutputSerializer})
    def post(self, request: Request, dataset: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = dataset_version_get(user=request.user, ref=dataset)
        scan = label_error_scan_start(version=version, user=request.user, **data.validated_data)
        scan.refresh_from_db()  # an eager task has already run
        return Response(LabelErrorScanOutputSerializer(scan).data, status=status.HTTP_202_ACCEPTED)


class LabelErrorScanDetailApi(APIView):
    @extend_schema(responses={200: LabelErrorScanOutputSerializer})
    def get(self, request: Request, scan: int) -> Response:
        return Response(LabelErrorScanOutputSerializer(label_error_scan_get(user=request.user, scan_id=scan)).data)
