"""`crucible labels export` against a live server; the export task runs in-process (Celery's eager mode)."""

import csv
import json
import zipfile

import pytest

from labeling import services
from tests.cli.conftest import one_error_line
from tests.labeling.conftest import CLASSES, add_assets


@pytest.fixture
def eager_tasks(settings):
    from crucible.celery_app import app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def labelled(project, admin_user, annotator, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    services.label_schema_set(project=project, user=admin_user, classes=CLASSES)
    add_assets(project, 3, with_files=True)
    services.queue_items_add(project=project, user=admin_user)
    for n, answer in enumerate(["cat", "dog", "cat"]):
        lease = services.lease_claim_next(project=project, annotator=annotator)[0]
        services.annotation_submit(
            item_id=lease.item_id,
            annotator=annotator,
            result={"label": answer},
            time_spent_ms=500,
            idempotency_key=f"{n}",
        )
    return project


def test_export_jsonl_waits_and_downloads(cli, labelled, eager_tasks, tmp_path):
    out = tmp_path / "labels.jsonl"
    result = cli("labels", "export", labelled.name, "--format", "jsonl", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert f"saved {out}" in result.output and "3 labelled images" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == ["cat", "cat", "dog"]
    assert all(r["annotations"][0]["annotator"] == "ann" for r in rows)
    assert not out.with_name("labels.jsonl.part").exists()


def test_export_csv_and_folder_with_json_output(cli, labelled, eager_tasks, tmp_path):
    out = tmp_path / "labels.csv"
    result = cli("--json", "labels", "export", labelled.name, "--format", "csv", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.output)
    assert answer["status"] == "done" and answer["rows"] == 3 and answer["path"] == str(out)
    assert len(list(csv.DictReader(out.open()))) == 3

    zipped = tmp_path / "labels.zip"
    result = cli("labels", "export", labelled.name, "--format", "folder", "-o", str(zipped), "--json")
    assert result.exit_code == 0, result.stderr
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(name.split("/")[0] for name in zf.namelist()) == ["cat", "cat", "dog"]


def test_export_errors_are_one_line(cli, project, eager_tasks, tmp_path):
    assert "not found" in one_error_line(cli("labels", "export", "nope", "--format", "csv", "-o", str(tmp_path / "x")))
    result = cli("labels", "export", project.name, "--format", "xml", "-o", str(tmp_path / "x"))
    assert result.exit_code == 2  # click refuses the choice before asking the server


def test_export_by_an_annotator_is_forbidden(anon_cli, project, annotator, tmp_path):
    from crucible.core.services import token_for

    env = {**anon_cli.env, "CRUCIBLE_TOKEN": token_for(user=annotator)}
    result = type(anon_cli)(env)("labels", "export", project.name, "--format", "csv", "-o", str(tmp_path / "x"))
    assert "forbidden" in one_error_line(result)


def test_export_coco(cli, labelled, eager_tasks, tmp_path):
    out = tmp_path / "coco.json"
    result = cli("labels", "export", labelled.name, "--format", "coco", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    coco = json.loads(out.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(coco["images"]) == 3
    assert sorted(names[a["category_id"]] for a in coco["annotations"]) == ["cat", "cat", "dog"]


def test_export_in_a_format_the_schema_does_not_fit_is_one_line(cli, labelled, eager_tasks, tmp_path):
    line = one_error_line(cli("labels", "export", labelled.name, "--format", "yolo", "-o", str(tmp_path / "x")))
    assert "does not fit a single_label schema" in line and "(format_unsupported)" in line
