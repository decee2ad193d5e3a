"""`crucible labels import` against a live server; the import task runs in-process (Celery's eager mode)."""

import json

import pytest

from curation.models import ProjectAsset
from tests.cli.conftest import one_error_line
from tests.labeling.test_label_imports import LABELS, add_images, current, make_project, set_labels


@pytest.fixture
def eager_tasks(settings):
    from crucible.celery_app import app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


@pytest.fixture
def project(admin_user, storage):
    project = make_project("shapes", "single_label", admin_user)
    add_images(project, 3)
    return project


def test_import_prints_labelled_unmatched_and_errors(cli, project, eager_tasks, tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [
        {"source_path": "imgs/img0.png", "label": "cat"},
        {"source_path": "imgs/img1.png", "label": "dog"},
        {"source_path": "imgs/img2.png", "label": "horse"},
        {"source_path": "unknown.png", "label": "cat"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("labels", "import", project.name, str(path), "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert "done: 2 labelled, 1 unmatched, 1 errors" in result.output
    assert "line 3: unknown class 'horse'" in result.output
    labels = dict(ProjectAsset.objects.filter(project=project).values_list("source_path", "label"))
    assert labels == {"imgs/img0.png": "cat", "imgs/img1.png": "dog", "imgs/img2.png": ""}

    result = cli("--json", "labels", "import", project.name, str(path), "--format", "jsonl")
    answer = json.loads(result.output)
    # the same labels again: nothing changes
    assert answer["status"] == "done" and answer["labelled"] == 0 and answer["unmatched"] == 1


def test_yolo_export_then_import_through_the_cli(cli, admin_user, storage, eager_tasks, tmp_path):
    source = make_project("source", "boxes", admin_user)
    set_labels(add_images(source, 4), "boxes", LABELS["boxes"])
    target = make_project("target", "boxes", admin_user)
    add_images(target, 4)
    out = tmp_path / "yolo.zip"
    result = cli("labels", "export", source.name, "--format", "yolo", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    result = cli("labels", "import", target.name, str(out), "--format", "yolo")
    assert result.exit_code == 0, result.stderr
    assert "4 labelled, 0 unmatched, 0 errors" in result.output
    assert current(target, "boxes") == current(source, "boxes")


def test_import_errors_are_one_line(cli, project, eager_tasks, tmp_path):
    bad = tmp_path / "coco.json"
    bad.write_text("{nope")
    line = one_error_line(cli("labels", "import", project.name, str(bad), "--format", "coco"))
    assert "failed: coco.json: the file is not JSON" in line
    assert "not found" in one_error_line(cli("labels", "import", "nope", str(bad), "--format", "coco"))
    assert cli("labels", "import", project.name, str(bad), "--format", "xml").exit_code == 2
    assert cli("labels", "import", project.name, str(tmp_path / "missing"), "--format", "coco").exit_code == 2
