"""Agreement between annotators of a project (labeling.agreement)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crucible.core.selectors import project_get
from labeling.agreement import project_agreement


class AgreementPairSerializer(serializers.Serializer):
    a = serializers.IntegerField()
    a_name = serializers.CharField()
    b = serializers.IntegerField()
    b_name = serializers.CharField()
    items = serializers.IntegerField()
    percent = serializers.FloatField(allow_null=True)
    cohen_kappa = serializers.FloatField(allow_null=True)
    mean_iou = serializers.FloatField(allow_null=True)
    f1 = serializers.FloatField(allow_null=True)


class AgreementBoxesSerializer(serializers.Serializer):
    mean_iou = serializers.FloatField(allow_null=True)
    f1 = serializers.FloatField(allow_null=True)


class AgreementApi(APIView):
    """Percent agreement, Fleiss' kappa and per-pair figures of the project's annotators (engineers,
    reviewers, admins; annotators 403)."""

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AgreementOutput"

        kind = serializers.CharField()
        items = serializers.IntegerField()
        annotators = serializers.IntegerField()
        percent = serializers.FloatField(allow_null=True)
        fleiss_kappa = serializers.FloatField(allow_null=True)
        fleiss_items = serializers.IntegerField()
        pairs = AgreementPairSerializer(many=True)
        boxes = AgreementBoxesSerializer(allow_null=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        return Response(self.OutputSerializer(project_agreement(project=obj, user=request.user)).data)
