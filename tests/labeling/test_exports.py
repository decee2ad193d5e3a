"""Exports of a project's labels: each format's content, permissions, and memory that stays flat."""

import csv
import hashlib
import io
import json
import tracemalloc
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from crucible.core.models import Role
from curation.models import Asset, ProjectAsset
from labeling import exports, services
from labeling.models import ExportJob
from tests.curation.conftest import png_bytes

from .conftest import CLASSES, add_assets


@pytest.fixture
def labelled(project, engineer, annotator, member):
    """Four assets with files (two of them in one pack), three labelled through the queue, one not labelled."""
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 2, with_files=True)
    # Two assets packed into one file, as the importer stores small images.
    blobs = [png_bytes(100), png_bytes(101)]
    default_storage.save("packs/p1.pack", ContentFile(b"".join(blobs)))
    offset = 0
    for i, data in enumerate(blobs):
        asset = Asset.objects.create(
            sha256=hashlib.sha256(data).hexdigest(),
            storage_name="packs/p1.pack",
            offset=offset,
            length=len(data),
            size_bytes=len(data),
            width=28,
            height=28,
            mode="L",
            format="PNG",
        )
        ProjectAsset.objects.create(project=project, asset=asset, source_path=f"packed/{i}.png")
        offset += len(data)
    services.queue_items_add(project=project, user=engineer)
    answers = ["cat", "dog", "cat"]
    for n, answer in enumerate(answers):
        lease = services.lease_claim_next(project=project, annotator=annotator)[0]
        services.annotation_submit(
            item_id=lease.item_id,
            annotator=annotator,
            result={"label": answer},
            time_spent_ms=1000 + n,
            idempotency_key=f"k{n}",
        )
    return project


def _run(project, user, fmt) -> tuple[ExportJob, bytes]:
    job = exports.labels_export_start(project=project, user=user, format=fmt)
    exports.labels_export_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE, job.error
    with default_storage.open(job.file_name, "rb") as fh:
        return job, fh.read()


def _expected(project):
    out = {}
    for pa in ProjectAsset.objects.filter(project=project).exclude(label="").select_related("asset"):
        out[pa.asset.sha256] = pa
    return out


def test_jsonl_export_holds_labels_and_annotations(labelled, engineer):
    job, data = _run(labelled, engineer, "jsonl")
    assert job.rows == 3 and job.file_name == f"exports/{job.pk}-digits.jsonl" and job.finished_at
    lines = [json.loads(line) for line in data.decode().splitlines()]
    expected = _expected(labelled)
    assert {r["sha256"] for r in lines} == set(expected)
    for r in lines:
        pa = expected[r["sha256"]]
        assert set(r) == {"sha256", "source_path", "label", "width", "height", "annotations"}
        assert (r["label"], r["source_path"], r["width"], r["height"]) == (pa.label, pa.source_path, 28, 28)
        [a] = r["annotations"]
        assert a["annotator"] == "ann" and a["label"] == pa.label
        assert a["time_spent_ms"] >= 1000 and a["created_at"]
    assert sorted(r["label"] for r in lines) == ["cat", "cat", "dog"]


def test_csv_export_has_one_line_per_annotation(labelled, engineer):
    job, data = _run(labelled, engineer, "csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert list(rows[0]) == exports.CSV_FIELDS
    assert len(rows) == 3 and job.rows == 3
    expected = _expected(labelled)
    for r in rows:
        assert r["label"] == expected[r["sha256"]].label == r["annotation_label"]
        assert r["annotator"] == "ann" and r["width"] == "28"


def test_folder_export_is_an_imagefolder_zip_with_the_stored_bytes(labelled, engineer):
    job, data = _run(labelled, engineer, "folder")
    assert job.file_name.endswith(".zip")
    expected = _expected(labelled)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"{pa.label}/{sha}.png" for sha, pa in expected.items())
        for name in names:
            body = zf.read(name)
            assert hashlib.sha256(body).hexdigest() == name.split("/")[1].removesuffix(".png")


def test_export_of_a_missing_file_fails_with_a_reason(labelled, engineer):
    default_storage.delete("packs/p1.pack")
    job = exports.labels_export_start(project=labelled, user=engineer, format="folder")
    exports.labels_export_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.FAILED and "export failed" in job.error and job.finished_at
    # a finished job is not run again
    exports.labels_export_run(job_id=job.pk)
    assert ExportJob.objects.get(pk=job.pk).status == job.status


def test_api_starts_reads_and_downloads(api, labelled, engineer, django_capture_on_commit_callbacks, settings):
    from crucible.celery_app import app

    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            resp = api(engineer).post(f"/api/v1/projects/{labelled.name}/exports/", {"format": "jsonl"}, format="json")
    finally:
        app.conf.task_always_eager = False
    assert resp.status_code == 202, resp.json()
    job_id = resp.json()["id"]
    body = api(engineer).get(f"/api/v1/labeling/exports/{job_id}/").json()
    assert body["status"] == "done" and body["rows"] == 3 and body["format"] == "jsonl"
    assert body["file_url"] == f"/api/v1/labeling/exports/{job_id}/file/"
    resp = api(engineer).get(body["file_url"])
    assert resp.status_code == 200
    assert resp["Content-Type"] == "application/x-ndjson"
    assert "attachment" in resp["Content-Disposition"]
    assert len(b"".join(resp.streaming_content).splitlines()) == 3


def test_file_of_a_queued_export_is_a_409(api, labelled, engineer):
    job = exports.labels_export_start(project=labelled, user=engineer, format="csv")
    resp = api(engineer).get(f"/api/v1/labeling/exports/{job.pk}/file/")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "export_not_ready"


def test_reviewer_may_export_and_annotator_may_not(api, project, member, annotator):
    reviewer = member(project, Role.REVIEWER, "rev")
    resp = api(reviewer).post(f"/api/v1/projects/{project.name}/exports/", {"format": "csv"}, format="json")
    assert resp.status_code == 202, resp.json()
    job_id = resp.json()["id"]
    resp = api(annotator).post(f"/api/v1/projects/{project.name}/exports/", {"format": "csv"}, format="json")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert api(annotator).get(f"/api/v1/labeling/exports/{job_id}/").status_code == 403
    assert api(annotator).get(f"/api/v1/labeling/exports/{job_id}/file/").status_code == 403


def test_unknown_format_is_a_400(api, project, engineer):
    resp = api(engineer).post(f"/api/v1/projects/{project.name}/exports/", {"format": "xml"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_format"
    assert not ExportJob.objects.exists()


def _bulk_project_assets(project, n, tag, fields) -> None:
    """`n` assets (sha256 of `tag` and the row number) in the project, `fields(i)` on the i-th project asset."""
    assets = Asset.objects.bulk_create(
        Asset(
            sha256=hashlib.sha256(f"{tag}{i}".encode()).hexdigest(),
            storage_name=f"assets/{i}.png",
            size_bytes=1,
            width=28,
            height=28,
            mode="L",
            format="PNG",
        )
        for i in range(n)
    )
    ProjectAsset.objects.bulk_create(
        ProjectAsset(project=project, asset=a, source_path=f"d/{i}.png", **fields(i)) for i, a in enumerate(assets)
    )


def _export_traced(project, user, fmt) -> tuple[ExportJob, int]:
    """Run an export of `fmt` under tracemalloc: the finished job and the peak of traced memory."""
    job = ExportJob.objects.create(project=project, created_by=user, format=fmt)
    tracemalloc.start()
    try:
        exports.labels_export_run(job_id=job.pk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    job.refresh_from_db()
    return job, peak


def test_jsonl_export_of_20000_rows_runs_in_constant_memory(project, engineer, annotator):
    n = 20_000
    _bulk_project_assets(project, n, "m", lambda i: {"label": ("cat", "dog")[i % 2]})
    job, peak = _export_traced(project, engineer, "jsonl")
    assert job.status == ExportJob.Status.DONE and job.rows == n
    with default_storage.open(job.file_name, "rb") as fh:
        assert sum(1 for _ in fh) == n
    print(f"jsonl export of {n} rows: tracemalloc peak {peak / 1e6:.2f} MB")
    # Measured about 2 MB (a page of 2,000 rows); everything at once would be well over 20 MB.
    assert peak < 8_000_000, peak


# COCO, YOLO and Pascal VOC


def _box_project(admin_user, kind="boxes"):
    from tests.labeling.test_label_imports import LABELS, add_images, make_project, set_labels

    project = make_project("boxed", kind, admin_user)
    assets = add_images(project, 4)
    set_labels(assets, kind, LABELS[kind])
    return project


def test_coco_export_of_boxes(admin_user):
    project = _box_project(admin_user)
    job, data = _run(project, admin_user, "coco")
    assert job.file_name.endswith(".json") and job.rows == 4
    coco = json.loads(data)
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "bird"]
    assert [i["file_name"] for i in coco["images"]] == [f"imgs/img{i}.png" for i in range(4)]
    assert all(i["width"] == 40 and i["height"] == 30 and len(i["sha256"]) == 64 for i in coco["images"])
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"], a["iscrowd"]))
    assert 1 not in by_image  # an image with no boxes has no annotations
    assert by_image[2] == [(1, [1.5, 2.0, 10.0, 8.0], 0)]
    assert sorted(by_image[3]) == [(2, [12.25, 7.0, 27.75, 3.5], 0), (3, [0.0, 0.0, 40.0, 30.0], 0)]


def test_yolo_export_is_a_zip_of_images_labels_and_class_files(admin_user):
    project = _box_project(admin_user)
    _job, data = _run(project, admin_user, "yolo")
    expected = _all_by_sha(project)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert names == {"classes.txt", "data.yaml"} | {f"images/{s}.png" for s in expected} | {
            f"labels/{s}.txt" for s in expected
        }
        assert zf.read("classes.txt").decode().split() == ["cat", "dog", "bird"]
        assert 'names: ["cat", "dog", "bird"]' in zf.read("data.yaml").decode()
        for sha, pa in expected.items():
            assert hashlib.sha256(zf.read(f"images/{sha}.png")).hexdigest() == sha
            lines = zf.read(f"labels/{sha}.txt").decode().splitlines()
            assert len(lines) == len(pa.annotation["boxes"])
            if pa.source_path == "imgs/img1.png":  # cat box 1.5,2 10x8 in 40x30
                assert lines == ["0 0.162500 0.200000 0.250000 0.266667"]


def test_voc_export_is_a_zip_of_xml_and_images(admin_user):
    from xml.etree import ElementTree as ET

    project = _box_project(admin_user)
    _job, data = _run(project, admin_user, "voc")
    expected = _all_by_sha(project)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.read("ImageSets/Main/default.txt").decode().split()) == sorted(expected)
        for sha, pa in expected.items():
            root = ET.fromstring(zf.read(f"Annotations/{sha}.xml"))
            assert root.findtext("filename") == f"{sha}.png" and root.findtext("size/depth") == "3"
            assert (root.findtext("size/width"), root.findtext("size/height")) == ("40", "30")
            objects = [(o.findtext("name"), o.findtext("bndbox/xmax")) for o in root.findall("object")]
            assert len(objects) == len(pa.annotation["boxes"])
            assert zf.read(f"JPEGImages/{sha}.png")[:4] == b"\x89PNG"


def _all_by_sha(project):
    return {pa.asset.sha256: pa for pa in ProjectAsset.objects.filter(project=project).select_related("asset")}


@pytest.mark.parametrize(("fmt", "kind"), [("folder", "boxes"), ("folder", "multi_label"), ("yolo", "single_label")])
def test_a_format_that_does_not_fit_the_schema_is_a_400(api, admin_user, fmt, kind):
    project = _box_project(admin_user, kind)
    resp = api(admin_user).post(f"/api/v1/projects/{project.name}/exports/", {"format": fmt}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "format_unsupported"
    assert fmt not in resp.json()["error"]["fields"]["format"]
    assert not ExportJob.objects.exists()


def test_multi_label_jsonl_and_csv_carry_the_label_list(admin_user):
    project = _box_project(admin_user, "multi_label")
    _job, data = _run(project, admin_user, "jsonl")
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert sorted(map(tuple, (r["labels"] for r in rows))) == [(), ("bird",), ("cat",), ("cat", "dog")]
    assert all("label" not in r for r in rows)
    _job, data = _run(project, admin_user, "csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert sorted(r["labels"] for r in rows) == ['["bird"]', '["cat", "dog"]', '["cat"]', "[]"]


def test_coco_export_of_20000_boxed_images_runs_in_constant_memory(project, engineer):
    from labeling.models import LabelClass, LabelSchema

    schema = LabelSchema.objects.create(project=project, kind="boxes")
    LabelClass.objects.create(schema=schema, name="cat", key="c", position=0)
    n = 20_000
    box = {"label": "cat", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0}
    _bulk_project_assets(project, n, "c", lambda i: {"annotation": {"boxes": [box, box]}})
    job, peak = _export_traced(project, engineer, "coco")
    assert job.status == ExportJob.Status.DONE and job.rows == n
    with default_storage.open(job.file_name, "rb") as fh:
        size = len(fh.read())
        fh.seek(0)
        coco = json.load(fh)
    assert len(coco["images"]) == n and len(coco["annotations"]) == 2 * n
    print(f"coco export of {n} images ({size / 1e6:.1f} MB of JSON): tracemalloc peak {peak / 1e6:.2f} MB")
    # Measured about 6.7 MB: one page of 2,000 assets with their parsed box lists; the whole document
    # as Python objects would be several times the 7 MB file.
    assert peak < 12_000_000, peak
