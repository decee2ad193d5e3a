"""Label imports: every format round-trips with its export, entries are matched by sha256 or name, bad
entries are reported while the rest goes on, and unreadable files fail with nothing applied."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from crucible.core.models import Membership, Project, Role
from curation.models import Asset, LabelEvent, ProjectAsset
from labeling import exports, imports
from labeling.models import ExportJob, LabelClass, LabelImportJob, LabelSchema
from tests.curation.conftest import png_bytes

CLASS_NAMES = ["cat", "dog", "bird"]
SIZE = (40, 30)

# The decided labels of four images, per schema kind, as validate_result stores them.
LABELS = {
    "single_label": [{"label": "cat"}, {"label": "dog"}, {"label": "cat"}, {"label": "bird"}],
    "multi_label": [{"labels": []}, {"labels": ["cat"]}, {"labels": ["cat", "dog"]}, {"labels": ["bird"]}],
    "boxes": [
        {"boxes": []},
        {"boxes": [{"label": "cat", "x": 1.5, "y": 2.0, "w": 10.0, "h": 8.0}]},
        {
            "boxes": [
                {"label": "bird", "x": 0.0, "y": 0.0, "w": 40.0, "h": 30.0},
                {"label": "dog", "x": 12.25, "y": 7.0, "w": 27.75, "h": 3.5},
            ]
        },
        {"boxes": [{"label": "dog", "x": 3.0, "y": 4.0, "w": 5.0, "h": 6.0}]},
    ],
}
SUPPORTED = [
    ("jsonl", "single_label"),
    ("jsonl", "multi_label"),
    ("jsonl", "boxes"),
    ("csv", "single_label"),
    ("csv", "multi_label"),
    ("csv", "boxes"),
    ("coco", "single_label"),
    ("coco", "multi_label"),
    ("coco", "boxes"),
    ("folder", "single_label"),
    ("yolo", "boxes"),
    ("voc", "boxes"),
]


@pytest.fixture(autouse=True)
def isolated_files(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


def make_project(name: str, kind: str, owner) -> Project:
    """A project with a schema of `kind` over CLASS_NAMES; `owner` is its admin."""
    project = Project.objects.create(name=name, created_by=owner)
    Membership.objects.get_or_create(project=project, user=owner, defaults={"role": Role.ADMIN})
    schema = LabelSchema.objects.create(project=project, kind=kind)
    for i, cls in enumerate(CLASS_NAMES):
        LabelClass.objects.create(schema=schema, name=cls, key=cls[0], position=i)
    return project


def add_images(project: Project, n: int, *, prefix: str = "imgs/img") -> list[ProjectAsset]:
    """`n` real PNGs of SIZE, stored; the same seeds give the same assets in every project."""
    out = []
    for i in range(n):
        data = png_bytes(500 + i, size=SIZE, mode="RGB")
        sha = hashlib.sha256(data).hexdigest()
        name = f"assets/{sha}.png"
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(data))
        asset, _ = Asset.objects.get_or_create(
            sha256=sha,
            defaults={
                "storage_name": name,
                "size_bytes": len(data),
                "width": SIZE[0],
                "height": SIZE[1],
                "mode": "RGB",
                "format": "PNG",
            },
        )
        out.append(ProjectAsset.objects.create(project=project, asset=asset, source_path=f"{prefix}{i}.png"))
    return out


def set_labels(assets: list[ProjectAsset], kind: str, labels: list[dict]) -> None:
    for pa, result in zip(assets, labels, strict=False):
        if kind == "single_label":
            ProjectAsset.objects.filter(pk=pa.pk).update(label=result["label"])
        else:
            ProjectAsset.objects.filter(pk=pa.pk).update(annotation=result)


def current(project: Project, kind: str) -> dict[str, dict | None]:
    """The project's labels by sha256, in result shape (None for an unlabelled asset)."""
    out: dict[str, dict | None] = {}
    for pa in ProjectAsset.objects.filter(project=project).select_related("asset"):
        if kind == "single_label":
            out[pa.asset.sha256] = {"label": pa.label} if pa.label else None
        else:
            out[pa.asset.sha256] = pa.annotation
    return out


def export_file(project: Project, user, fmt: str, tmp_path: Path) -> Path:
    job = ExportJob.objects.create(project=project, created_by=user, format=fmt)
    exports.labels_export_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE, job.error
    path = tmp_path / Path(job.file_name).name
    with default_storage.open(job.file_name, "rb") as fh:
        path.write_bytes(fh.read())
    return path


def run_job(project: Project, user, fmt: str, name: str, data: bytes) -> LabelImportJob:
    job = imports.labels_import_start(project=project, user=user, format=fmt, upload=SimpleUploadedFile(name, data))
    imports.labels_import_run(job_id=job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.parametrize(("fmt", "kind"), SUPPORTED)
def test_export_then_import_into_a_fresh_project_gives_the_same_labels(fmt, kind, admin_user, tmp_path):
    source = make_project("source", kind, admin_user)
    assets = add_images(source, 5)  # the fifth stays unlabelled and is not exported
    set_labels(assets, kind, LABELS[kind])
    path = export_file(source, admin_user, fmt, tmp_path)

    target = make_project("target", kind, admin_user)
    add_images(target, 5)
    job = run_job(target, admin_user, fmt, path.name, path.read_bytes())

    assert job.status == "done", job.error
    assert (job.labelled, job.unmatched, job.errors) == (4, 0, [])
    assert current(target, kind) == current(source, kind)
    events = LabelEvent.objects.filter(project_asset__project=target)
    assert events.count() == 4 and {e.via for e in events} == {"label_import"} and {e.ref for e in events} == {job.pk}


def test_entries_are_matched_by_path_base_name_and_stem(admin_user, tmp_path):
    project = make_project("p", "single_label", admin_user)
    add_images(project, 3, prefix="deep/folder/pic")
    lines = [
        {"source_path": "deep/folder/pic0.png", "label": "cat"},
        {"source_path": "elsewhere/pic1.png", "label": "dog"},  # by base name
        {"source_path": "nothing-like-it.png", "label": "dog"},  # unmatched
        {"sha256": "f" * 64, "label": "cat"},  # unmatched: no such sha256, no name
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    job = run_job(project, admin_user, "jsonl", "labels.jsonl", body)
    assert (job.status, job.labelled, job.unmatched, job.errors) == ("done", 2, 2, [])
    labels = dict(ProjectAsset.objects.filter(project=project).values_list("source_path", "label"))
    assert labels == {"deep/folder/pic0.png": "cat", "deep/folder/pic1.png": "dog", "deep/folder/pic2.png": ""}

    # VOC and YOLO files are named after their image: the stem is enough.
    boxes = imports.formats.yolo_lines([{"label": "dog", "x": 0, "y": 0, "w": 20, "h": 15}], 40, 30, {"dog": 1})
    project.label_schema.kind = "boxes"
    project.label_schema.save()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("classes.txt", "cat\ndog\nbird\n")
        zf.writestr("labels/pic2.txt", boxes)
    job = run_job(project, admin_user, "yolo", "y.zip", buf.getvalue())
    assert (job.status, job.labelled, job.errors) == ("done", 1, [])
    pa = ProjectAsset.objects.get(project=project, source_path="deep/folder/pic2.png")
    assert pa.annotation == {"boxes": [{"label": "dog", "x": 0.0, "y": 0.0, "w": 20.0, "h": 15.0}]}


def test_bad_entries_are_reported_and_the_rest_is_applied(admin_user):
    project = make_project("p", "boxes", admin_user)
    add_images(project, 4)
    lines = [
        json.dumps({"source_path": "imgs/img0.png", "boxes": [{"label": "cat", "x": 1, "y": 1, "w": 5, "h": 5}]}),
        json.dumps({"source_path": "imgs/img1.png", "boxes": [{"label": "horse", "x": 1, "y": 1, "w": 5, "h": 5}]}),
        json.dumps({"source_path": "imgs/img2.png", "boxes": [{"label": "cat", "x": 30, "y": 1, "w": 20, "h": 5}]}),
        "{not json",
        json.dumps({"source_path": "imgs/img3.png", "label": "cat"}),
    ]
    job = run_job(project, admin_user, "jsonl", "l.jsonl", "\n".join(lines).encode())
    assert job.status == "done" and job.labelled == 1
    reasons = {e["entry"]: e["reason"] for e in job.errors}
    assert "unknown_class" in reasons["line 2"] and "horse" in reasons["line 2"]
    assert "box_outside_image" in reasons["line 3"]
    assert "not JSON" in reasons["line 4"]
    assert "no boxes" in reasons["line 5"]
    labelled = ProjectAsset.objects.filter(project=project, annotation__isnull=False)
    assert list(labelled.values_list("source_path", flat=True)) == ["imgs/img0.png"]


def test_only_the_first_1000_errors_are_kept(admin_user, monkeypatch):
    monkeypatch.setattr(imports, "MAX_STORED_ERRORS", 3)
    project = make_project("p", "single_label", admin_user)
    add_images(project, 1)
    body = "".join(json.dumps({"source_path": "imgs/img0.png", "label": "horse"}) + "\n" for _ in range(5))
    job = run_job(project, admin_user, "jsonl", "l.jsonl", body.encode())
    assert job.status == "done" and len(job.errors) == 3


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buf.getvalue()


GOOD_VOC = imports.formats.voc_xml(
    filename="img0.png", width=40, height=30, depth=3, boxes=[{"label": "cat", "x": 1, "y": 1, "w": 4, "h": 4}]
)


@pytest.mark.parametrize(
    ("fmt", "name", "data", "message"),
    [
        ("yolo", "labels.zip", b"PK not really", "not a zip"),
        ("coco", "coco.json", b"{'images': ", "not JSON"),
        (
            "voc",
            "voc.zip",
            _zip({"Annotations/img0.xml": GOOD_VOC, "Annotations/img1.xml": b"<annotation><object>"}),
            "Annotations/img1.xml: not well-formed XML",
        ),
        ("folder", "f.zip", _zip({"cat/img0.png": b"x", "../../etc/a.png": b"x"}), "outside"),
    ],
)
def test_an_unreadable_file_fails_the_job_with_nothing_applied(fmt, name, data, message, admin_user):
    project = make_project("p", "boxes" if fmt != "folder" else "single_label", admin_user)
    add_images(project, 2)
    job = run_job(project, admin_user, fmt, name, data)
    assert job.status == "failed" and message in job.error and job.error.startswith(name)
    assert "\n" not in job.error and job.finished_at
    assert not LabelEvent.objects.exists()
    assert not ProjectAsset.objects.filter(annotation__isnull=False).exists()
    assert not ProjectAsset.objects.exclude(label="").exists()
    imports.labels_import_run(job_id=job.pk)  # a finished job is not run again
    assert LabelImportJob.objects.get(pk=job.pk).error == job.error


def test_a_latin1_csv_is_read_and_the_job_says_so(admin_user):
    project = make_project("p", "single_label", admin_user)
    [pa] = add_images(project, 1, prefix="imgs/café")
    data = "source_path,label\nimgs/café0.png,dog\n".encode("latin-1")
    job = run_job(project, admin_user, "csv", "l.csv", data)
    assert job.status == "done" and job.labelled == 1 and "not UTF-8" in job.error
    assert ProjectAsset.objects.get(pk=pa.pk).label == "dog"


def test_a_shared_base_name_is_reported_not_guessed(admin_user):
    project = make_project("p", "single_label", admin_user)
    add_images(project, 1, prefix="a/x")
    [other] = add_images(Project.objects.create(name="tmp", created_by=admin_user), 1, prefix="b/x")
    # the same file name in two folders of one project
    second = Asset.objects.create(
        sha256="e" * 64, storage_name="assets/none", size_bytes=1, width=40, height=30, mode="RGB", format="PNG"
    )
    ProjectAsset.objects.create(project=project, asset=second, source_path="b/x0.png")
    job = run_job(project, admin_user, "jsonl", "l.jsonl", b'{"source_path": "x0.png", "label": "cat"}\n')
    assert job.labelled == 0 and "several assets" in job.errors[0]["reason"]
    assert other.project_id != project.pk


def test_api_uploads_runs_and_reports(api, admin_user, member, django_capture_on_commit_callbacks):
    from crucible.celery_app import app

    project = make_project("p", "single_label", admin_user)
    add_images(project, 2)
    body = b'{"source_path": "imgs/img0.png", "label": "cat"}\n{"source_path": "zzz.png", "label": "cat"}\n'
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            resp = api(admin_user).post(
                f"/api/v1/projects/{project.name}/label-imports/",
                {"format": "jsonl", "file": SimpleUploadedFile("labels.jsonl", body)},
                format="multipart",
            )
    finally:
        app.conf.task_always_eager = False
    assert resp.status_code == 202, resp.json()
    job_id = resp.json()["id"]
    body = api(admin_user).get(f"/api/v1/labeling/label-imports/{job_id}/").json()
    assert body["status"] == "done" and body["labelled"] == 1 and body["unmatched"] == 1
    assert body["format"] == "jsonl" and body["source_label"] == "labels.jsonl" and body["errors"] == []

    annotator = member(project, Role.ANNOTATOR, "ann")
    resp = api(annotator).post(
        f"/api/v1/projects/{project.name}/label-imports/",
        {"format": "jsonl", "file": SimpleUploadedFile("l.jsonl", b"{}")},
        format="multipart",
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert api(annotator).get(f"/api/v1/labeling/label-imports/{job_id}/").status_code == 403


def test_api_refuses_an_unknown_format_and_a_missing_file(api, admin_user):
    project = make_project("p", "single_label", admin_user)
    url = f"/api/v1/projects/{project.name}/label-imports/"
    resp = api(admin_user).post(
        url, {"format": "xml", "file": SimpleUploadedFile("a.xml", b"<a/>")}, format="multipart"
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_format"
    resp = api(admin_user).post(url, {"format": "jsonl"}, format="multipart")
    assert resp.status_code == 400 and "file" in resp.json()["error"]["fields"]
    assert not LabelImportJob.objects.exists()
