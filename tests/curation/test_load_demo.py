import io
import json
import stat

import pytest
from django.core.management import call_command

from crucible.core.models import Membership, Project, User
from curation import tasks
from curation.models import Asset, DatasetVersion, ImportJob, ProjectAsset
from labeling.models import QueueItem


@pytest.fixture
def worker_inline(monkeypatch):
    """Queued tasks run at once in this process, after their transaction commits."""
    for task in (tasks.import_run, tasks.dataset_materialize):
        monkeypatch.setattr(task, "delay", lambda _task=task, **kwargs: _task.apply(kwargs=kwargs))


def test_load_demo_creates_everything_once(
    transactional_db, worker_inline, isolated_files, settings, tmp_path, monkeypatch
):
    settings.DATA_DIR = tmp_path / "data"
    monkeypatch.delenv("CRUCIBLE_DEMO_PASSWORD", raising=False)
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

    # The labelling demo: the same images without labels, ten classes keyed 0-9, all queued.
    labels = Project.objects.get(name="demo-labels")
    assets = ProjectAsset.objects.filter(project=labels)
    assert assets.count() == 120 and set(assets.values_list("label", flat=True)) == {""}
    assert {a.asset_id for a in assets} <= set(Asset.objects.values_list("pk", flat=True))
    assert [(c.name, c.key) for c in labels.label_schema.classes.order_by("position")] == [
        (str(d), str(d)) for d in range(10)
    ]
    assert QueueItem.objects.filter(project=labels, state="open").count() == 120
    passwords_file = settings.DATA_DIR / "demo_passwords.json"
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
    passwords = json.loads(passwords_file.read_text())
    for username, role in (("annotator", "annotator"), ("reviewer", "reviewer")):
        user = User.objects.get(username=username)
        assert user.check_password(passwords[username])
        assert set(Membership.objects.filter(user=user).values_list("project__name", "role")) == {
            ("demo", role),
            ("demo-labels", role),
        }
        assert passwords[username] in out.getvalue() and passwords[username] in again.getvalue()
    assert QueueItem.objects.count() == 120 and ProjectAsset.objects.count() == 240  # nothing twice


def test_load_demo_takes_the_demo_password_from_the_environment(
    transactional_db, worker_inline, isolated_files, settings, tmp_path, monkeypatch
):
    settings.DATA_DIR = tmp_path / "data"
    monkeypatch.setenv("CRUCIBLE_DEMO_PASSWORD", "try-me")
    User.objects.create_superuser(username="root", password="pw")
    call_command("load_demo", "--limit", "20", stdout=io.StringIO())
    assert User.objects.get(username="annotator").check_password("try-me")
    assert User.objects.get(username="reviewer").check_password("try-me")
    assert not (settings.DATA_DIR / "demo_passwords.json").exists()
