"""Bad input to the import sources: each bad entry is reported and the rest goes on; bad requests are
refused before anything is created."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from curation import import_sources
from curation.models import ImportJob, ProjectAsset
from curation.tasks import import_run

from .conftest import png_bytes, zip_of
from .test_imaging import _bomb_png


def _start(project, user, capture, **kwargs) -> ImportJob:
    with capture():
        job = import_sources.import_source_start(project=project, user=user, **kwargs)
    import_run.apply(kwargs={"job_id": job.pk})
    job.refresh_from_db()
    return job


def _reasons(job: ImportJob) -> dict[str, str]:
    return {e["path"]: e["reason"] for e in job.errors}


def _manifest_zip(files: dict[str, bytes], listed: list[str]) -> SimpleUploadedFile:
    manifest = "path\n" + "".join(f"{p}\n" for p in listed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.csv", manifest)
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return SimpleUploadedFile("set.zip", buf.getvalue(), content_type="application/zip")


def test_zip_entries_that_climb_out_are_reported_and_the_rest_is_imported(
    project, admin_user, django_capture_on_commit_callbacks
):
    upload = _manifest_zip(
        {"ok.png": png_bytes(1), "../x.png": png_bytes(2), "/abs.png": png_bytes(3)},
        ["ok.png", "../x.png", "/abs.png", "sub/../../y.png"],
    )
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", upload=upload)
    assert (job.status, job.imported) == ("done", 1), job.message
    assert _reasons(job) == {
        "../x.png": "zip entry points outside the archive, not extracted",
        "/abs.png": "zip entry points outside the archive, not extracted",
        "sub/../../y.png": "path leaves the zip, not read",
    }
    assert list(ProjectAsset.objects.values_list("source_path", flat=True)) == ["ok.png"]


def test_symbolic_links_inside_a_zip_are_not_followed(project, admin_user, django_capture_on_commit_callbacks):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.csv", "path\nok.png\nlink.png\n")
        zf.writestr("ok.png", png_bytes(1))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16) | 0x20  # a symbolic link, as `zip --symlinks` stores it
        zf.writestr(link, "/etc/passwd")
    upload = SimpleUploadedFile("set.zip", buf.getvalue())
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", upload=upload)
    assert job.imported == 1
    assert _reasons(job) == {"link.png": "symbolic link inside the zip, not followed"}
    assert ProjectAsset.objects.count() == 1


def test_manifest_paths_and_links_leaving_the_import_roots_are_not_read(
    project, admin_user, isolated_files, tmp_path, django_capture_on_commit_callbacks
):
    folder = isolated_files / "set"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png_bytes(1))
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(2))
    os.symlink(secret, folder / "link.png")
    manifest = folder / "m.csv"
    manifest.write_text(f"path\nok.png\nlink.png\n../../secret.png\n{secret}\n")
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", path=str(manifest))
    assert job.imported == 1
    assert _reasons(job) == {
        "link.png": "path leaves the import roots, not read",
        "../../secret.png": "path leaves the import roots, not read",
        str(secret): "path leaves the import roots, not read",
    }


def test_decompression_bombs_are_refused_by_pixels_and_by_compression_ratio(
    project, admin_user, django_capture_on_commit_callbacks
):
    flat = io.BytesIO()
    Image.new("L", (2000, 1000)).save(flat, format="BMP")  # 2 MB of zeros: deflates about 1000 to 1
    upload = _manifest_zip(
        {"ok.png": png_bytes(1), "pixels.png": _bomb_png(120_000, 120_000), "flat.bmp": flat.getvalue()},
        ["ok.png", "pixels.png", "flat.bmp"],
    )
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", upload=upload)
    assert job.imported == 1
    reasons = _reasons(job)
    assert reasons["pixels.png"] == "image of 120000x120000 pixels exceeds the limit of 40000000"
    assert "compression ratio above 200, not extracted" in reasons["flat.bmp"]


def test_a_zip_member_larger_than_it_declares_is_not_extracted(project, admin_user, django_capture_on_commit_callbacks):
    upload = _manifest_zip({"ok.png": png_bytes(1), "liar.png": png_bytes(2, size=(64, 64))}, ["ok.png", "liar.png"])
    data = bytearray(upload.read())
    # Declare 100 bytes in the central directory (what readers trust); the member really holds more.
    at = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4) + 4)
    assert data[at + 46 : at + 46 + 8] == b"liar.png"
    data[at + 24 : at + 28] = struct.pack("<I", 100)
    job = _start(
        project,
        admin_user,
        django_capture_on_commit_callbacks,
        source_kind="manifest",
        upload=SimpleUploadedFile("set.zip", bytes(data)),
    )
    assert job.imported == 1
    assert _reasons(job)["liar.png"].startswith("cannot be extracted")


def test_files_are_typed_by_content_not_by_name(project, admin_user, django_capture_on_commit_callbacks):
    upload = _manifest_zip(
        {"jpeg.png": png_bytes(1, fmt="JPEG"), "text.png": b"hello, I am not an image", "ok.png": png_bytes(2)},
        ["jpeg.png", "text.png", "ok.png"],
    )
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", upload=upload)
    assert job.imported == 2
    assert _reasons(job) == {"text.png": "not an image"}
    formats = dict(ProjectAsset.objects.values_list("source_path", "asset__format"))
    assert formats == {"jpeg.png": "JPEG", "ok.png": "PNG"}


def test_manifest_naming_missing_files_imports_the_others(project, admin_user, django_capture_on_commit_callbacks):
    upload = _manifest_zip({"ok.png": png_bytes(1)}, ["ok.png", "gone.png", "sub/gone.png"])
    job = _start(project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", upload=upload)
    assert (job.status, job.imported) == ("done", 1)
    assert _reasons(job) == {"gone.png": "file not found in the zip", "sub/gone.png": "file not found in the zip"}


def test_labels_outside_the_label_schema_are_reported(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    from labeling.models import LabelClass, LabelSchema

    schema = LabelSchema.objects.create(project=project)
    LabelClass.objects.create(schema=schema, name="cat", key="c", position=0)
    LabelClass.objects.create(schema=schema, name="dog", key="d", position=1)
    folder = isolated_files / "set"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(i))
    (folder / "m.csv").write_text("path,label\n0.png,cat\n1.png,cow\n2.png,dog\n")
    job = _start(
        project, admin_user, django_capture_on_commit_callbacks, source_kind="manifest", path=str(folder / "m.csv")
    )
    assert job.imported == 2
    assert _reasons(job) == {"1.png": "label 'cow' is not a class of the project"}
    assert sorted(ProjectAsset.objects.values_list("label", flat=True)) == ["cat", "dog"]


def test_text_csv_in_cp1252_is_decoded_and_the_message_says_so(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    csv_file = isolated_files / "t.csv"
    csv_file.write_bytes("text,label\nCrème brûlée,dessert\nCafé noir,drink\n".encode("cp1252"))
    job = _start(
        project,
        admin_user,
        django_capture_on_commit_callbacks,
        source_kind="text_csv",
        path=str(csv_file),
        column="text",
        label_column="label",
    )
    assert job.imported == 2, job.message
    assert "the CSV was read as" in job.message and "utf-8" not in job.message
    from curation.selectors import asset_read_bytes

    texts = sorted(asset_read_bytes(pa.asset).decode() for pa in ProjectAsset.objects.select_related("asset"))
    assert texts == ["Café noir", "Crème brûlée"]


@pytest.mark.parametrize(
    ("data", "kwargs", "code"),
    [
        ({"source_kind": "manifest", "file": b"not a zip"}, {}, "not_a_zip"),
        ({"source_kind": "manifest", "file": zip_of({"a.png": png_bytes(1)})}, {}, "list_missing"),
        ({"source_kind": "manifest", "path": "/etc/passwd"}, {}, "path_outside_roots"),
        ({"source_kind": "manifest", "path": "relative.csv"}, {}, "path_not_absolute"),
        ({"source_kind": "s3", "path": "http://bucket/x"}, {}, "invalid_s3_url"),
        ({"source_kind": "s3"}, {}, "bucket_required"),
        ({"source_kind": "text_csv", "file": b"a,b\n1,2\n"}, {}, "column_required"),
        ({"source_kind": "coco", "path": "/x.zip"}, {}, "import_source_required"),
        ({"source_kind": "nonsense", "path": "/x"}, {}, "invalid"),
    ],
)
def test_bad_requests_are_refused_with_a_code_and_nothing_is_created(api, project, admin_user, data, kwargs, code):
    if isinstance(data.get("file"), bytes):
        data["file"] = SimpleUploadedFile("upload.zip", data["file"])
    resp = api(admin_user).post(f"/api/v1/projects/{project.name}/imports/", data, format="multipart")
    assert resp.status_code == 400, resp.json()
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert not ImportJob.objects.exists()


def test_manifest_missing_its_path_column_is_refused(api, project, admin_user, isolated_files):
    manifest = isolated_files / "m.json"
    manifest.write_text(json.dumps([{"file": "a.png"}]))
    resp = api(admin_user).post(
        f"/api/v1/projects/{project.name}/imports/", {"source_kind": "manifest", "path": str(manifest)}, format="json"
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_manifest"
    assert not ImportJob.objects.exists()
