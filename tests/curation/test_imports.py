import hashlib
import os
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from crucible.core.errors import ValidationFailed
from curation import selectors, services
from curation.models import Asset, ImportJob, ProjectAsset
from curation.tasks import import_run

from .conftest import png_bytes, write_tree, zip_of
from .test_imaging import _bomb_png


def _import_folder(project, user, folder, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.import_start(project=project, user=user, path=str(folder))
    assert len(callbacks) == 1  # queued after commit
    import_run.apply(kwargs={"job_id": job.pk})
    job.refresh_from_db()
    return job


def test_folder_import_reports_unreadable_files_and_imports_the_rest(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"0": 3, "1": 2, "10": 2})
    (folder / "1" / "notes.png").write_bytes(b"just some text")
    (folder / "10" / "cut.png").write_bytes(png_bytes(999)[:-40])
    (folder / "10" / "readme.txt").write_text("hello")
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    assert job.status == "done", job.message
    assert (job.total, job.processed, job.imported, job.duplicates) == (10, 10, 7, 0)
    reasons = {e["path"]: e["reason"] for e in job.errors}
    assert reasons == {
        "1/notes.png": "not an image",
        "10/cut.png": "truncated PNG",
        "10/readme.txt": "not an image file (.txt)",
    }
    labels = sorted(ProjectAsset.objects.filter(project=project).values_list("label", flat=True))
    assert labels == ["0", "0", "0", "1", "1", "10", "10"]
    asset = Asset.objects.first()
    assert asset.storage_name.startswith("packs/") and asset.length == asset.size_bytes
    assert default_storage.exists(asset.storage_name)
    assert (asset.width, asset.height, asset.mode, asset.format) == (28, 28, "L", "PNG")


def test_reimport_adds_nothing_and_counts_duplicates(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 2, "b": 2})
    _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    again = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    assert again.status == "done"
    assert (again.imported, again.duplicates) == (0, 4)
    assert ProjectAsset.objects.count() == 4 and Asset.objects.count() == 4


def test_import_task_is_idempotent(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    folder = write_tree(isolated_files / "digits", {"a": 2, "b": 2})
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    import_run.apply(kwargs={"job_id": job.pk})  # delivered twice
    job.refresh_from_db()
    assert (job.imported, job.duplicates) == (4, 0)
    assert ProjectAsset.objects.count() == 4


def test_same_file_in_two_projects_is_stored_once(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks, make_user
):
    from crucible.core.models import Project

    other = Project.objects.create(name="other")
    folder = write_tree(isolated_files / "digits", {"a": 1, "b": 1})
    _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    job = _import_folder(other, admin_user, folder, django_capture_on_commit_callbacks)
    assert job.imported == 2
    assert Asset.objects.count() == 2 and ProjectAsset.objects.count() == 4


def test_symlink_leaving_the_roots_is_reported_not_followed(
    project, admin_user, isolated_files, tmp_path, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 2, "b": 2})
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(4242))
    os.symlink(secret, folder / "a" / "link.png")
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    assert job.imported == 4
    assert job.errors == [{"path": "a/link.png", "reason": "symbolic link leaving the import roots, not followed"}]


def test_zip_import_with_wrapper_folder(api, project, admin_user, django_capture_on_commit_callbacks):
    files = {f"train_small/{label}/{i}.png": png_bytes(10 * int(label) + i) for label in "012" for i in range(3)}
    files["train_small/2/bomb.png"] = _bomb_png(120_000, 120_000)
    upload = SimpleUploadedFile("digits.zip", zip_of(files), content_type="application/zip")
    with django_capture_on_commit_callbacks() as callbacks:
        resp = api(admin_user).post(f"/api/v1/projects/{project.name}/imports/", {"file": upload}, format="multipart")
    assert resp.status_code == 202, resp.json()
    body = resp.json()
    assert body["status"] == "queued" and body["source_kind"] == "zip" and body["source_label"] == "digits.zip"
    assert len(callbacks) == 1
    import_run.apply(kwargs={"job_id": body["id"]})
    job = api(admin_user).get(f"/api/v1/imports/{body['id']}/").json()
    assert job["status"] == "done"
    assert (job["total"], job["imported"]) == (10, 9)
    assert job["errors"] == [
        {"path": "train_small/2/bomb.png", "reason": "image of 120000x120000 pixels exceeds the limit of 40000000"}
    ]
    classes = api(admin_user).get(f"/api/v1/projects/{project.name}/classes/").json()["results"]
    assert classes == [{"label": "0", "count": 3}, {"label": "1", "count": 3}, {"label": "2", "count": 3}]
    assert not default_storage.exists(ImportJob.objects.get().source)  # the upload is dropped once imported
    listed = api(admin_user).get(f"/api/v1/projects/{project.name}/imports/").json()["results"]
    assert [j["id"] for j in listed] == [body["id"]]


def test_asset_content_serves_the_stored_bytes(
    api, project, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 1, "b": 1})
    _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    data = (folder / "a" / "0.png").read_bytes()
    asset = Asset.objects.get(size_bytes=len(data), project_assets__label="a")
    resp = api(admin_user).get(f"/api/v1/projects/{project.name}/assets/{asset.sha256}/content/")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "image/png"
    assert b"".join(resp.streaming_content) == data
    assert api(admin_user).get(f"/api/v1/projects/{project.name}/assets/{'0' * 64}/content/").status_code == 404


def _post_zip(api, user, project, data: bytes, name="x.zip"):
    upload = SimpleUploadedFile(name, data, content_type="application/zip")
    return api(user).post(f"/api/v1/projects/{project.name}/imports/", {"file": upload}, format="multipart")


TWO_CLASSES = {"a/1.png": png_bytes(1), "b/1.png": png_bytes(2)}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"this is not a zip", "not_a_zip"),
        (zip_of({}), "empty_zip"),
        (zip_of({**TWO_CLASSES, "../evil/1.png": png_bytes(3)}), "unsafe_zip_entry"),
        (zip_of({**TWO_CLASSES, "/etc/evil.png": png_bytes(3)}), "unsafe_zip_entry"),
        (zip_of({"a/1.png": png_bytes(1), "a/2.png": png_bytes(2)}), "too_few_classes"),
        (zip_of({"a/1.png": png_bytes(1), "b/notes.txt": b"hi"}), "too_few_classes"),
    ],
)
def test_bad_zips_are_refused_and_nothing_is_created(api, project, admin_user, data, code):
    resp = _post_zip(api, admin_user, project, data)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]
    assert not ImportJob.objects.exists()
    assert not default_storage.exists("imports") or not os.listdir(default_storage.path("imports"))


def test_bad_folders_are_refused(api, project, admin_user, isolated_files, tmp_path):
    outside = write_tree(tmp_path / "outside", {"a": 1, "b": 1})
    one_class = write_tree(isolated_files / "one", {"a": 2})
    escape = isolated_files / "escape"
    os.symlink(outside, escape)
    cases = {
        str(outside): "path_outside_roots",
        str(escape): "path_outside_roots",
        str(isolated_files / "missing"): "path_not_found",
        str(one_class): "too_few_classes",
        "relative/path": "path_not_absolute",
    }
    for path, code in cases.items():
        resp = api(admin_user).post(f"/api/v1/projects/{project.name}/imports/", {"path": path}, format="json")
        assert resp.status_code == 400, path
        assert resp.json()["error"]["code"] == code, path
    resp = api(admin_user).post(f"/api/v1/projects/{project.name}/imports/", {}, format="json")
    assert resp.json()["error"]["code"] == "import_source_required"
    assert not ImportJob.objects.exists()


def test_only_engineers_and_admins_import(api, project, member, annotator, isolated_files):
    reviewer = member(project, "reviewer")
    folder = write_tree(isolated_files / "digits", {"a": 1, "b": 1})
    url = f"/api/v1/projects/{project.name}/imports/"
    assert api(reviewer).post(url, {"path": str(folder)}, format="json").status_code == 403
    assert api(reviewer).get(url).status_code == 200
    assert api(annotator).post(url, {"path": str(folder)}, format="json").status_code == 403
    assert api(annotator).get(url).status_code == 403
    assert api(annotator).get(f"/api/v1/projects/{project.name}/classes/").status_code == 403
    assert not ImportJob.objects.exists()


def test_non_members_see_nothing(
    api, project, admin_user, make_user, isolated_files, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 1, "b": 1})
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    stranger = make_user("stranger")
    assert api(stranger).get(f"/api/v1/imports/{job.pk}/").status_code == 404
    assert api(stranger).get(f"/api/v1/projects/{project.name}/imports/").status_code == 404
    assert api(stranger).post(f"/api/v1/projects/{project.name}/imports/", {"path": str(folder)}).status_code == 404


def test_annotator_gets_403_on_a_job_of_their_project(
    api, project, admin_user, annotator, isolated_files, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 1, "b": 1})
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    resp = api(annotator).get(f"/api/v1/imports/{job.pk}/")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"


def test_service_refuses_both_sources(project, admin_user):
    upload = SimpleUploadedFile("x.zip", zip_of(TWO_CLASSES))
    with pytest.raises(ValidationFailed):
        services.import_start(project=project, user=admin_user, upload=upload, path="/tmp")


def _pack_files(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("packs/*") if not p.name.startswith("."))


def test_small_assets_land_in_one_pack_and_read_back_exactly(
    api, project, admin_user, isolated_files, settings, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 5, "b": 5})
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    assert job.imported == 10
    media = Path(default_storage.path(""))
    packs = _pack_files(media)
    assert len(packs) == 1  # one file created for ten assets
    assert not (media / "assets").exists()
    pack = Path(default_storage.path(f"packs/{packs[0]}"))
    assert packs[0] == f"{hashlib.sha256(pack.read_bytes()).hexdigest()}.pack"  # named by its content
    for path in sorted(folder.glob("*/*.png")):
        data = path.read_bytes()
        asset = Asset.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert (asset.storage_name, asset.length) == (f"packs/{packs[0]}", len(data))
        assert selectors.asset_read_bytes(asset) == data
        resp = api(admin_user).get(f"/api/v1/projects/{project.name}/assets/{asset.sha256}/content/")
        assert resp.status_code == 200 and resp["Content-Type"] == "image/png"
        assert b"".join(resp.streaming_content) == data


def test_asset_above_the_pack_threshold_gets_its_own_file(
    api, project, admin_user, isolated_files, settings, django_capture_on_commit_callbacks
):
    folder = write_tree(isolated_files / "digits", {"a": 2, "b": 2})
    big = png_bytes(77, size=(300, 300))
    (folder / "a" / "big.png").write_bytes(big)
    settings.CRUCIBLE_PACK_MAX_ASSET_BYTES = len(big) - 1
    job = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    assert job.imported == 5
    asset = Asset.objects.get(sha256=hashlib.sha256(big).hexdigest())
    assert asset.storage_name == f"assets/{asset.sha256[:2]}/{asset.sha256}.png"
    assert (asset.offset, asset.length) == (None, None)
    assert Path(default_storage.path(asset.storage_name)).read_bytes() == big
    assert selectors.asset_read_bytes(asset) == big
    resp = api(admin_user).get(f"/api/v1/projects/{project.name}/assets/{asset.sha256}/content/")
    assert b"".join(resp.streaming_content) == big
    packed = Asset.objects.exclude(pk=asset.pk)
    assert packed.count() == 4 and {a.storage_name for a in packed} == {packed[0].storage_name}
    assert all(a.offset is not None for a in packed)


def test_reimport_adds_no_pack_and_no_rows(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    from crucible.core.models import Project

    folder = write_tree(isolated_files / "digits", {"a": 3, "b": 3})
    _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    media = Path(default_storage.path(""))
    packs = _pack_files(media)
    locations = sorted(Asset.objects.values_list("sha256", "storage_name", "offset", "length"))
    again = _import_folder(project, admin_user, folder, django_capture_on_commit_callbacks)
    other = _import_folder(Project.objects.create(name="other"), admin_user, folder, django_capture_on_commit_callbacks)
    assert (again.imported, again.duplicates, other.imported) == (0, 6, 6)
    assert _pack_files(media) == packs and len(packs) == 1
    assert sorted(Asset.objects.values_list("sha256", "storage_name", "offset", "length")) == locations
    assert ProjectAsset.objects.count() == 12


def test_resume_after_a_crash_before_the_rows_keeps_one_location(
    project, admin_user, isolated_files, django_capture_on_commit_callbacks, monkeypatch
):
    folder = write_tree(isolated_files / "digits", {"a": 3, "b": 3})
    with django_capture_on_commit_callbacks():
        job = services.import_start(project=project, user=admin_user, path=str(folder))

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost")

    # The pack is written, then the worker dies before the batch's rows are committed.
    monkeypatch.setattr(services, "_insert_ignoring_conflicts", crash)
    with pytest.raises(RuntimeError):
        services._import_files(ImportJob.objects.get(pk=job.pk))
    assert not Asset.objects.exists()
    monkeypatch.undo()
    import_run.apply(kwargs={"job_id": job.pk})
    job.refresh_from_db()
    assert (job.status, job.imported) == ("done", 6)
    assert Asset.objects.count() == 6 and ProjectAsset.objects.count() == 6
    assert len({a.storage_name for a in Asset.objects.all()}) == 1
    for asset in Asset.objects.all():
        assert hashlib.sha256(selectors.asset_read_bytes(asset)).hexdigest() == asset.sha256
