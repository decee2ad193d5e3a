from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crucible.core.errors import ValidationFailed
from crucible.core.models import Role
from crucible.core.selectors import project_get, project_list, project_role
from crucible.core.services import membership_set, project_create, token_for


class TokenCreateApi(APIView):
    """Exchange a username and password for an API token (used by `crucible login`)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TokenCreateInput"

        username = serializers.CharField()
        password = serializers.CharField()

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TokenCreateOutput"

        token = serializers.CharField()
        username = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:
            raise ValidationFailed("wrong username or password", code="bad_credentials")
        return Response({"token": token_for(user=user), "username": user.username})


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "MeOutput"

        id = serializers.IntegerField()
        username = serializers.CharField()
        is_staff = serializers.BooleanField()
        is_superuser = serializers.BooleanField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)


class ProjectOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()
    role = serializers.SerializerMethodField()

    def get_role(self, obj) -> str | None:
        return self.context["roles"].get(obj.pk)


def _roles(user, projects) -> dict[int, str]:
    if user.is_superuser:
        return {p.pk: Role.ADMIN for p in projects}
    return dict(user.memberships.filter(project__in=projects).values_list("project_id", "role"))


class ProjectListApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ProjectListInput"

        name = serializers.CharField(max_length=100)
        description = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(responses={200: ProjectOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        projects = list(project_list(user=request.user))
        data = ProjectOutputSerializer(projects, many=True, context={"roles": _roles(request.user, projects)}).data
        return Response({"results": data})

    @extend_schema(request=InputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_create(user=request.user, **data.validated_data)
        out = ProjectOutputSerializer(project, context={"roles": {project.pk: Role.ADMIN}})
        return Response(out.data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    @extend_schema(responses={200: ProjectOutputSerializer})
    def get(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        role = project_role(user=request.user, project=obj)
        return Response(ProjectOutputSerializer(obj, context={"roles": {obj.pk: role}}).data)


class MembershipSetApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "MembershipSetInput"

        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Role.values)

    @extend_schema(request=InputSerializer, responses={200: InputSerializer})
    def post(self, request: Request, project: str) -> Response:
        obj = project_get(user=request.user, ref=project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = membership_set(project=obj, actor=request.user, **data.validated_data)
        return Response({"username": membership.user.username, "role": membership.role})
