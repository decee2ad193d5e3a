"""Imports from manifests, DIGITS lists, URLs, S3 prefixes, text CSVs and annotated zips."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from crucible.core.errors import ValidationFailed
from curation import import_sources, services
from curation.models import Asset, ImportJob, ProjectAsset
from curation.tasks import import_run

from .conftest import png_bytes, zip_of


def _run(job: ImportJob) -> ImportJob:
    import_run.apply(kwargs={"job_id": job.pk})
    job.refresh_from_db()
    return job


def _start(project, user, capture, **kwargs) -> ImportJob:
    with capture() as callbacks:
        job = import_sources.import_source_start(project=project, user=user, **kwargs)
    assert len(callbacks) == 1  # queued after commit
    return _run(job)


def _labels(project) -> dict[str, str]:
    return dict(ProjectAsset.objects.filter(project=project).values_list("source_path", "label"))


def _write_images(folder, names: list[str], seed: int = 0) -> None:
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(seed + i))


# Manifests


def test_csv_manifest_imports_listed_files_with_labels_and_reports_missing_ones(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    folder = isolated_files / "set"
    _write_images(folder, ["img/a.png", "img/b.png", "img/c.png", "unlisted.png"])
    manifest = folder / "manifest.csv"
    manifest.write_text("path,label\nimg/a.png,cat\nimg/b.png,dog\nimg/gone.png,dog\nimg/c.png,\n")
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", path=str(manifest))
    assert job.status == "done", job.message
    assert (job.total, job.imported) == (4, 3)
    assert job.errors == [{"path": "img/gone.png", "reason": "file not found"}]
    assert _labels(project) == {"img/a.png": "cat", "img/b.png": "dog", "img/c.png": ""}

    again = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", path=str(manifest))
    assert (again.status, again.imported, again.duplicates) == ("done", 0, 3)
    assert ProjectAsset.objects.count() == 3 and Asset.objects.count() == 3


def test_json_manifest_inside_an_uploaded_zip(api, project, admin_user, django_capture_on_commit_callbacks):
    manifest = [{"path": "pics/1.png", "label": "a"}, {"path": "pics/2.png", "label": "b"}, "pics/3.png"]
    files = {f"pics/{i}.png": png_bytes(i) for i in (1, 2, 3)}
    files["wrap/../manifest.json"] = b""  # normalised away by the zip listing, not a manifest
    files = {k: v for k, v in files.items() if v}
    files["manifest.json"] = json.dumps(manifest).encode()
    upload = SimpleUploadedFile("set.zip", zip_of(files), content_type="application/zip")
    with django_capture_on_commit_callbacks():
        resp = api(admin_user).post(
            f"/api/v1/projects/{project.name}/imports/", {"source_kind": "manifest", "file": upload}, format="multipart"
        )
    assert resp.status_code == 202, resp.json()
    assert resp.json()["source_kind"] == "manifest"
    job = _run(ImportJob.objects.get(pk=resp.json()["id"]))
    assert (job.status, job.imported, job.errors) == ("done", 3, [])
    assert _labels(project) == {"pics/1.png": "a", "pics/2.png": "b", "pics/3.png": ""}
    assert not default_storage.exists(json.loads(job.source)["upload"])  # the upload is dropped once imported


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("cp1252", ("cp1252", "latin_1")), ("utf-16", ("utf-16",))],
)
def test_manifest_in_another_encoding_is_decoded_and_the_message_says_how(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks, encoding, expected
):
    folder = isolated_files / "set"
    _write_images(folder, ["café.png", "crème.png"])
    manifest = folder / "manifest.csv"
    manifest.write_bytes("path,label\ncafé.png,Sûr\ncrème.png,Été\n".encode(encoding))  # utf-16 writes a BOM
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", path=str(manifest))
    assert job.status == "done" and job.imported == 2, job.message
    assert _labels(project) == {"café.png": "Sûr", "crème.png": "Été"}
    assert any(f"the manifest was read as {name}" in job.message for name in expected), job.message


def test_manifest_with_unknown_columns_is_refused_and_nothing_is_created(api, project, admin_user, isolated_files):
    manifest = isolated_files / "manifest.csv"
    manifest.write_text("path,label,weight\na.png,cat,2\n")
    resp = api(admin_user).post(
        f"/api/v1/projects/{project.name}/imports/", {"source_kind": "manifest", "path": str(manifest)}, format="json"
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "manifest_unknown_columns" and "weight" in error["message"]
    assert not ImportJob.objects.exists()


def test_manifest_import_interrupted_half_way_resumes_with_one_asset_per_file(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks, monkeypatch
):
    folder = isolated_files / "set"
    names = [f"{i}.png" for i in range(10)]
    _write_images(folder, names)
    manifest = folder / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{'ab'[i % 2]}\n" for i, n in enumerate(names)))
    with django_capture_on_commit_callbacks():
        job = import_sources.import_source_start(
            project=project, user=admin_user, source_kind="manifest", path=str(manifest)
        )
    monkeypatch.setattr(services, "IMPORT_BATCH", 16)  # batches of 2, 4 and 4 files
    real_store, calls = services._store_batch, []

    def store_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(services, "_store_batch", store_then_die)
    with pytest.raises(RuntimeError):
        import_run.apply(kwargs={"job_id": job.pk}, throw=True)
    half = ProjectAsset.objects.count()
    assert 0 < half < 10  # the first batch is in, the rest is not
    job.refresh_from_db()
    job.status = ImportJob.Status.RUNNING  # as a worker killed outright leaves it
    job.finished_at = None
    job.save()
    monkeypatch.setattr(services, "_store_batch", real_store)
    job = _run(job)
    assert (job.status, job.imported, job.errors) == ("done", 10, [])
    assert ProjectAsset.objects.count() == 10 and Asset.objects.count() == 10
    assert sorted(_labels(project)) == sorted(names)


# DIGITS lists


def test_digits_list_maps_label_indexes_to_class_names(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    folder = isolated_files / "digits"
    _write_images(folder, ["x/0.png", "x/1.png", "x/2.png"])
    (folder / "labels.txt").write_text("zero\none\n")
    absolute = folder / "x" / "2.png"
    (folder / "train.txt").write_text(f"x/0.png 0\nx/1.png 1\n{absolute} 1\nx/3.png 7\nnot-a-line\n")
    job = _start(
        project, admin_user, django_capture_on_commit_callbacks, source_kind="digits", path=str(folder / "train.txt")
    )
    assert job.status == "done" and job.imported == 3, job.message
    assert _labels(project) == {"x/0.png": "zero", "x/1.png": "one", str(absolute): "one"}
    assert sorted(e["reason"] for e in job.errors) == [
        "label index 7 is out of range (labels.txt has 2 classes)",
        "not a 'path label_index' line",
    ]
    again = _start(
        project, admin_user, django_capture_on_commit_callbacks, source_kind="digits", path=str(folder / "train.txt")
    )
    assert (again.imported, again.duplicates) == (0, 3)
    assert ProjectAsset.objects.count() == 3


def test_digits_zip_needs_labels_txt(project, admin_user):
    upload = SimpleUploadedFile("d.zip", zip_of({"train.txt": b"a.png 0\n", "a.png": png_bytes(1)}))
    with pytest.raises(ValidationFailed) as exc:
        import_sources.import_source_start(project=project, user=admin_user, source_kind="digits", upload=upload)
    assert exc.value.code == "labels_missing"
    assert not ImportJob.objects.exists()


def test_digits_zip_imports(project, admin_user, django_capture_on_commit_callbacks):
    files = {"d/train.txt": b"img/a.png 1\nimg/b.png 0\n", "d/labels.txt": b"cat\ndog\n"}
    files |= {"d/img/a.png": png_bytes(1), "d/img/b.png": png_bytes(2)}
    upload = SimpleUploadedFile("d.zip", zip_of(files))
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="digits", upload=upload)
    assert (job.status, job.imported) == ("done", 2)
    assert _labels(project) == {"d/img/a.png": "dog", "d/img/b.png": "cat"}


# URLs


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/flaky.png" and self.hits[self.path] == 1:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", "/a.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    _Handler.files = {"/a.png": png_bytes(1), "/b.png": png_bytes(2), "/flaky.png": png_bytes(3)}
    _Handler.files["/big.png"] = png_bytes(4, size=(200, 200))
    _Handler.hits = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_list_is_fetched_with_retries_and_labels_from_csv(
    project, admin_user, settings, http_server, django_capture_on_commit_callbacks
):
    settings.CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS = True
    listing = f"url,label\n{http_server}/a.png,cat\n{http_server}/flaky.png,dog\n{http_server}/missing.png,dog\n"
    listing += f"{http_server}/moved.png,cat\nfile:///etc/passwd,cat\n"
    upload = SimpleUploadedFile("urls.csv", listing.encode(), content_type="text/csv")
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="urls", upload=upload)
    assert job.status == "done", job.message
    assert job.imported == 2  # a.png and flaky.png; moved.png is a.png again
    assert job.duplicates == 1
    assert _labels(project) == {f"{http_server}/a.png": "cat", f"{http_server}/flaky.png": "dog"}
    reasons = {e["path"]: e["reason"] for e in job.errors}
    assert reasons == {
        f"{http_server}/missing.png": "HTTP 404",
        "file:///etc/passwd": "file scheme: only http and https are fetched",
    }
    assert _Handler.hits["/flaky.png"] == 2  # one retry after the 503
    assert _Handler.hits["/missing.png"] == 1  # a 404 is not retried

    again = _start(
        project, admin_user, django_capture_on_commit_callbacks, source_kind="urls", urls=[f"{http_server}/a.png"]
    )
    assert (again.imported, again.duplicates) == (0, 1)
    assert ProjectAsset.objects.count() == 2


def test_urls_to_private_addresses_are_refused_unless_allowed(
    project, admin_user, settings, http_server, django_capture_on_commit_callbacks
):
    settings.CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS = False
    job = _start(
        project, admin_user, django_capture_on_commit_callbacks, source_kind="urls", urls=[f"{http_server}/a.png"]
    )
    assert job.imported == 0
    assert "private address" in job.errors[0]["reason"]
    assert _Handler.hits == {}  # nothing was requested


def test_url_larger_than_the_cap_is_not_read(
    project, admin_user, settings, http_server, django_capture_on_commit_callbacks, monkeypatch
):
    settings.CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS = True
    monkeypatch.setattr(import_sources, "MAX_FILE_BYTES", 1000)
    job = _start(
        project,
        admin_user,
        django_capture_on_commit_callbacks,
        source_kind="urls",
        urls=[f"{http_server}/big.png", f"{http_server}/a.png"],
    )
    assert job.imported == 1
    assert job.errors[0]["path"].endswith("/big.png") and "exceeds the limit of 1000" in job.errors[0]["reason"]


def test_inline_urls_with_another_scheme_are_refused(api, project, admin_user):
    resp = api(admin_user).post(
        f"/api/v1/projects/{project.name}/imports/",
        {"source_kind": "urls", "urls": ["ftp://example.com/a.png"]},
        format="json",
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unsupported_url_scheme"
    assert not ImportJob.objects.exists()


# S3


def _stubbed_s3(monkeypatch, objects: dict[str, bytes], runs: int = 1):
    import boto3

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    stubber = Stubber(client)
    for _ in range(runs):
        stubber.add_response(
            "list_objects_v2",
            {
                "Contents": [{"Key": k, "Size": len(v)} for k, v in objects.items()],
                "IsTruncated": False,
                "KeyCount": len(objects),
            },
            {"Bucket": "bucket", "Prefix": "data/"},
        )
        for key, data in sorted(objects.items()):
            if key.endswith(".png") and key.count("/") >= 2:
                stubber.add_response(
                    "get_object",
                    {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentLength": len(data)},
                    {"Bucket": "bucket", "Key": key},
                )
    stubber.activate()
    monkeypatch.setattr(import_sources, "s3_client", lambda: client)
    return stubber


def test_s3_prefix_takes_the_class_from_the_parent_folder(
    api, project, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    objects = {
        "data/cat/1.png": png_bytes(1),
        "data/cat/2.png": png_bytes(2),
        "data/dog/3.png": png_bytes(3),
        "data/readme.png": png_bytes(4),
    }
    stubber = _stubbed_s3(monkeypatch, objects, runs=2)
    with django_capture_on_commit_callbacks():
        resp = api(admin_user).post(
            f"/api/v1/projects/{project.name}/imports/",
            {"source_kind": "s3", "bucket": "bucket", "prefix": "data"},
            format="json",
        )
    assert resp.status_code == 202, resp.json()
    assert resp.json()["source_label"] == "s3://bucket/data/"
    job = _run(ImportJob.objects.get(pk=resp.json()["id"]))
    assert (job.status, job.imported) == ("done", 3), job.message
    assert _labels(project) == {"cat/1.png": "cat", "cat/2.png": "cat", "dog/3.png": "dog"}
    assert job.errors == [{"path": "readme.png", "reason": "not inside a class folder"}]
    with django_capture_on_commit_callbacks():
        again = import_sources.import_source_start(
            project=project, user=admin_user, source_kind="s3", path="s3://bucket/data/"
        )
    again = _run(again)
    assert (again.imported, again.duplicates) == (0, 3)
    stubber.assert_no_pending_responses()


def test_s3_listing_error_fails_the_job_with_a_message(
    project, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    import boto3

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    stubber = Stubber(client)
    stubber.add_client_error("list_objects_v2", service_error_code="NoSuchBucket", http_status_code=404)
    stubber.activate()
    monkeypatch.setattr(import_sources, "s3_client", lambda: client)
    job = _start(
        project, admin_user, django_capture_on_commit_callbacks, source_kind="s3", bucket="bucket", prefix="data/"
    )
    assert job.status == "failed" and "cannot be listed" in job.message and "NoSuchBucket" in job.message
    assert not ProjectAsset.objects.exists()


# Texts from a CSV


def test_text_csv_imports_a_column_with_labels(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    csv_file = isolated_files / "reviews.csv"
    csv_file.write_text('id,review,sentiment\n1,"great, really",pos\n2,awful,neg\n3,,neg\n4,great; again,pos\n')
    kwargs = {"source_kind": "text_csv", "path": str(csv_file), "column": "review", "label_column": "sentiment"}
    job = _start(project, admin_user, django_capture_on_commit_callbacks, **kwargs)
    assert (job.status, job.total, job.imported) == ("done", 4, 3), job.message
    assert job.errors == [{"path": "line 4", "reason": "empty review"}]
    texts = ProjectAsset.objects.filter(project=project, asset__kind="text")
    assert sorted(texts.values_list("label", flat=True)) == ["neg", "pos", "pos"]
    again = _start(project, admin_user, django_capture_on_commit_callbacks, **kwargs)
    assert (again.imported, again.duplicates) == (0, 3)
    assert texts.count() == 3


def test_text_csv_with_an_unknown_column_is_refused(api, project, admin_user):
    upload = SimpleUploadedFile("t.csv", b"id,text\n1,hello\n", content_type="text/csv")
    resp = api(admin_user).post(
        f"/api/v1/projects/{project.name}/imports/",
        {"source_kind": "text_csv", "file": upload, "column": "body"},
        format="multipart",
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "unknown_column" and "id, text" in resp.json()["error"]["message"]
    assert not ImportJob.objects.exists()


# Annotated zips

_COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 28, "height": 28}, {"id": 2, "file_name": "b.jpg"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 12]}],
    "categories": [{"id": 7, "name": "cat"}],
}
_VOC = (
    b"<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>2</xmin><ymin>3</ymin>"
    b"<xmax>12</xmax><ymax>15</ymax></bndbox></object></annotation>"
)


@pytest.mark.parametrize(
    ("kind", "files", "box"),
    [
        (
            "coco",
            {"images/a.jpg": 1, "images/b.jpg": 2, "annotations.json": json.dumps(_COCO).encode()},
            {"label": "cat", "x": 2, "y": 3, "w": 10, "h": 12},
        ),
        (
            "yolo",
            {"images/a.png": 1, "images/b.png": 2, "labels/a.txt": b"0 0.5 0.5 0.5 0.5\n", "classes.txt": b"cat\n"},
            {"label": "cat", "x": 7, "y": 7, "w": 14, "h": 14},
        ),
        (
            "voc",
            {"JPEGImages/a.png": 1, "JPEGImages/b.png": 2, "Annotations/a.xml": _VOC},
            {"label": "cat", "x": 2, "y": 3, "w": 10, "h": 12},
        ),
    ],
)
def test_annotated_zip_imports_its_images_then_their_boxes(
    project, admin_user, django_capture_on_commit_callbacks, kind, files, box
):
    from labeling.models import LabelClass, LabelSchema

    schema = LabelSchema.objects.create(project=project, kind="boxes")
    LabelClass.objects.create(schema=schema, name="cat", key="c", position=0)
    content = {
        name: png_bytes(value, fmt="JPEG" if name.endswith(".jpg") else "PNG") if isinstance(value, int) else value
        for name, value in files.items()
    }

    def run() -> ImportJob:
        upload = SimpleUploadedFile(f"{kind}.zip", zip_of(content))
        return _start(project, admin_user, django_capture_on_commit_callbacks, source_kind=kind, upload=upload)

    job = run()
    assert (job.status, job.imported, job.errors) == ("done", 2, []), job.message
    # A COCO file lists b.jpg with no boxes: labelled as holding none; YOLO and VOC do not mention b.
    assert f"labels set on {2 if kind == 'coco' else 1} images" in job.message
    annotated = ProjectAsset.objects.get(source_path__endswith="a." + ("jpg" if kind == "coco" else "png"))
    assert [{k: (round(v) if k != "label" else v) for k, v in b.items()} for b in annotated.annotation["boxes"]] == [
        box
    ]
    other = ProjectAsset.objects.exclude(pk=annotated.pk).get()
    assert other.annotation == ({"boxes": []} if kind == "coco" else None)
    again = run()
    assert (again.imported, again.duplicates) == (0, 2)
    assert ProjectAsset.objects.count() == 2


def test_coco_zip_without_annotations_imports_the_images_and_says_so(
    project, admin_user, django_capture_on_commit_callbacks
):
    upload = SimpleUploadedFile("coco.zip", zip_of({"a.png": png_bytes(1), "b.png": png_bytes(2)}))
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="coco", upload=upload)
    assert (job.status, job.imported) == ("done", 2)
    assert "the boxes were not applied: the zip holds no annotations (.json)" in job.message
