import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from crucible.core.models import Project
from curation.models import Asset, ProjectAsset
from labeling import services
from tests.curation.conftest import png_bytes

CLASSES = [{"name": "cat", "key": "c"}, {"name": "dog", "key": "d"}, {"name": "bird", "key": "b"}]


@pytest.fixture(autouse=True)
def isolated_files(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


def add_assets(project: Project, n: int, *, start: int = 0, label: str = "", with_files: bool = False) -> list[int]:
    """`n` assets of the project (distinct hashes); their bytes are stored only when asked."""
    ids = []
    for i in range(start, start + n):
        data = png_bytes(i) if with_files else b""
        sha = hashlib.sha256(data or f"asset-{i}".encode()).hexdigest()
        name = f"assets/{sha}.png"
        if with_files:
            default_storage.save(name, ContentFile(data))
        asset, _ = Asset.objects.get_or_create(
            sha256=sha,
            defaults={
                "storage_name": name,
                "size_bytes": len(data),
                "width": 28,
                "height": 28,
                "mode": "L",
                "format": "PNG",
            },
        )
        ids.append(ProjectAsset.objects.create(project=project, asset=asset, label=label).pk)
    return ids


@pytest.fixture
def queue(project, engineer):
    """The project with a three-class schema and `n` queued items needing `required` annotations each."""

    def _queue(n: int, *, required: int = 1, with_files: bool = False) -> Project:
        services.label_schema_set(project=project, user=engineer, classes=CLASSES)
        add_assets(project, n, with_files=with_files)
        services.queue_items_add(project=project, user=engineer, required_annotations=required)
        return project

    return _queue
