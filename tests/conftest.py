import pytest
from rest_framework.test import APIClient

from crucible.core.models import Membership, Project, Role, User


@pytest.fixture
def make_user(db):
    def _make(username: str, *, staff: bool = False, superuser: bool = False) -> User:
        if superuser:
            return User.objects.create_superuser(username=username, password="pw-" + username)
        return User.objects.create_user(username=username, password="pw-" + username, is_staff=staff)

    return _make


@pytest.fixture
def admin_user(make_user) -> User:
    return make_user("admin", superuser=True)


@pytest.fixture
def project(db, admin_user) -> Project:
    project = Project.objects.create(name="digits", created_by=admin_user)
    Membership.objects.create(project=project, user=admin_user, role=Role.ADMIN)
    return project


@pytest.fixture
def member(make_user):
    """A user with the given role in the given project."""

    def _member(project: Project, role: str, username: str | None = None) -> User:
        user = make_user(username or f"{role}-{project.name}")
        Membership.objects.create(project=project, user=user, role=role)
        return user

    return _member


@pytest.fixture
def engineer(project, member) -> User:
    return member(project, Role.ENGINEER, "eng")


@pytest.fixture
def annotator(project, member) -> User:
    return member(project, Role.ANNOTATOR, "ann")


@pytest.fixture
def api():
    """An API client authenticated as the given user (token auth, as the CLI uses)."""

    def _api(user: User | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user=user)
        return client

    return _api
