from django.urls import path

from crucible.core import apis

urlpatterns = [
    path("auth/token/", apis.TokenCreateApi.as_view(), name="token-create"),
    path("me/", apis.MeApi.as_view(), name="me"),
    path("projects/", apis.ProjectListApi.as_view(), name="project-list"),
    path("projects/<str:project>/", apis.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<str:project>/members/", apis.MembershipSetApi.as_view(), name="project-members"),
]
