"""Reads of the core: projects visible to a user and the user's role in each."""

from django.db.models import QuerySet

from crucible.core.errors import Forbidden, NotFound
from crucible.core.models import READ_DATA_ROLES, WRITE_DATA_ROLES, Membership, Project, Role, User


def project_list(*, user: User) -> QuerySet[Project]:
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def project_role(*, user: User, project: Project) -> str | None:
    if user.is_superuser:
        return Role.ADMIN
    membership = Membership.objects.filter(user=user, project=project).only("role").first()
    return membership.role if membership else None


def project_get(*, user: User, ref: str | int) -> Project:
    """A project by id or name that `user` belongs to; others do not exist for the caller."""
    ref = str(ref)
    lookup = {"pk": int(ref)} if ref.isdigit() else {"name": ref}
    project = project_list(user=user).filter(**lookup).first()
    if project is None:
        raise NotFound(f"project {ref!r} not found")
    return project


def require_role(*, user: User, project: Project, roles: set[str], action: str) -> str:
    role = project_role(user=user, project=project)
    if role is None:
        raise NotFound(f"project {project.name!r} not found")
    if role not in roles:
        raise Forbidden(f"your role in {project.name!r} ({role}) does not allow you to {action}")
    return role


def require_read(*, user: User, project: Project) -> str:
    return require_role(user=user, project=project, roles=READ_DATA_ROLES, action="read its data")


def require_write(*, user: User, project: Project) -> str:
    return require_role(user=user, project=project, roles=WRITE_DATA_ROLES, action="change its data")
