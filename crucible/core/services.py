"""Writes of the core: users, projects, memberships, tokens, audit."""

import re
from typing import Any

from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from crucible.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crucible.core.models import AuditEvent, Membership, Project, Role, User
from crucible.core.selectors import require_role


def audit(*, actor: User | None, project: Project | None, verb: str, target: str = "", **data: Any) -> None:
    AuditEvent.objects.create(actor=actor, project=project, verb=verb, target=target, data=data)


def token_for(*, user: User) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


@transaction.atomic
def project_create(*, name: str, description: str = "", user: User) -> Project:
    if not (user.is_staff or user.is_superuser):
        raise Forbidden("only administrators create projects")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name) or name.isdigit():
        raise ValidationFailed(
            "a project name uses letters, digits, '.', '_' and '-', starts with a letter or digit "
            "and is not only digits",
            fields={"name": "invalid name"},
        )
    if Project.objects.filter(name=name).exists():
        raise Conflict(f"a project named {name!r} already exists", code="duplicate_name", fields={"name": "taken"})
    try:
        with transaction.atomic():
            project = Project.objects.create(name=name, description=description, created_by=user)
    except IntegrityError:
        raise Conflict(f"a project named {name!r} already exists", code="duplicate_name") from None
    Membership.objects.create(project=project, user=user, role=Role.ADMIN)
    audit(actor=user, project=project, verb="project.create", target=name)
    return project


@transaction.atomic
def membership_set(*, project: Project, username: str, role: str, actor: User) -> Membership:
    require_role(user=actor, project=project, roles={Role.ADMIN}, action="manage members")
    if role not in Role.values:
        raise ValidationFailed(f"unknown role {role!r}; one of {', '.join(Role.values)}", fields={"role": "invalid"})
    user = User.objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"user {username!r} not found")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    audit(actor=actor, project=project, verb="membership.set", target=username, role=role)
    return membership
