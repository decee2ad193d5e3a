"""Seeding for the load tests: queued items written with COPY, so that LOAD_ITEMS=1000000 seeds in minutes."""

import os

import pytest

from bench import labeling_load
from crucible.core.models import Membership, Project, Role, User

LOAD_ITEMS = int(os.environ.get("LOAD_ITEMS", "1500"))
LOAD_ANNOTATORS = int(os.environ.get("LOAD_ANNOTATORS", "30"))
# Worker threads, each holding one connection: the annotators share them, as requests share a pool.
LOAD_POOL = int(os.environ.get("LOAD_POOL", str(min(LOAD_ANNOTATORS, 24))))


def seed_queue(project: Project, n: int, *, required: int) -> None:
    """`n` queued items of the project (each on an asset of its own, distinct sha256, no bytes)."""
    labeling_load.seed_queue(project, n, required=required, seed=0)
    labeling_load.analyze()


@pytest.fixture
def annotators(project):
    """LOAD_ANNOTATORS users with annotator memberships of the project."""
    users = [User(username=f"load-annotator-{i}") for i in range(LOAD_ANNOTATORS)]
    for user in users:
        user.set_unusable_password()
    users = User.objects.bulk_create(users)
    Membership.objects.bulk_create(Membership(project=project, user=u, role=Role.ANNOTATOR) for u in users)
    return users
