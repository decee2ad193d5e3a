import io

import pytest
from django.core.management import call_command

from crucible.core.models import Project, User
from curation import tasks
from curation.models import Asset, DatasetVersion, ImportJob


@pytest.fixture
def worker_inline(monkeypatch):
    """Queued tasks run at once in this process, after their transaction commits."""
    for task in (tasks.import_run, tasks.dataset_materialize):
        monkeypatch.setattr(task, "delay", lambda _task=task, **kwargs: _task.apply(kwargs=kwargs))


def test_load_demo_creates_everything_once(transactional_db, worker_inline, isolated_files):
    User.objects.create_superuser(username="root", password="pw")
    out = io.StringIO()
    call_command("load_demo", "--limit", "120", stdout=out)
    project = Project.objects.get(name="demo")
    version = DatasetVersion.objects.get(project=project, name="minidata")
    assert version.status == "ready"
    assert (version.channels, version.width, version.height, version.resize_mode) == (1, 28, 28, "squash")
    assert version.split_seed == 1 and version.class_names == [str(d) for d in range(10)]
    assert sum(sum(c.values()) for c in version.counts.values()) == 120
    assert (isolated_files / "mnist-demo" / "0").is_dir()
    assert "minidata" in out.getvalue()

    again = io.StringIO()
    call_command("load_demo", "--limit", "120", stdout=again)
    assert ImportJob.objects.count() == 1 and DatasetVersion.objects.count() == 1 and Asset.objects.count() == 120
    assert "created" not in again.getvalue() and "queued" not in again.getvalue()
