"""import and dataset commands against the curation API."""

import json
import zipfile

import pytest

from tests.cli.conftest import make_digit_folder, one_error_line

pytest.importorskip("curation.apis")

from curation.models import Asset, DatasetVersion, ImportJob, ProjectAsset


def test_import_uploads_a_zipped_local_folder(cli, project, tmp_path):
    folder = make_digit_folder(tmp_path / "train_small", {"0": 3, "1": 3})
    result = cli("import", "digits", str(folder))
    assert result.exit_code == 0, result.stderr
    job = ImportJob.objects.get()
    assert (job.project, job.source_kind, job.status) == (project, ImportJob.Source.ZIP, ImportJob.Status.QUEUED)
    assert f"import {job.pk} queued" in result.output


def test_import_a_zip_as_json(cli, project, tmp_path):
    folder = make_digit_folder(tmp_path / "train_small", {"0": 2, "1": 2})
    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for png in folder.rglob("*.png"):
            zf.write(png, png.relative_to(folder).as_posix())
    answer = json.loads(cli("import", "digits", str(archive), "--json").output)
    assert answer["status"] == "queued" and answer["id"] == ImportJob.objects.get().pk


def test_import_of_a_missing_local_path_creates_nothing(cli, project, tmp_path):
    line = one_error_line(cli("import", "digits", str(tmp_path / "nope")))
    assert "no such local file or folder" in line
    assert not ImportJob.objects.exists()


def test_import_into_an_unknown_project(cli, tmp_path):
    folder = make_digit_folder(tmp_path / "d", {"0": 1, "1": 1})
    assert one_error_line(cli("import", "nope", str(folder))) == "error: project 'nope' not found"


def test_server_import_outside_the_roots_is_refused(cli, project, tmp_path):
    folder = make_digit_folder(tmp_path / "elsewhere", {"0": 1, "1": 1})
    line = one_error_line(cli("import", "digits", str(folder), "--server"))
    assert "(" in line  # the server's code
    assert not ImportJob.objects.exists()


def test_import_wait_shows_the_summary_of_a_finished_job(cli, project, tmp_path, monkeypatch):
    """--wait polls the job; the worker's part is played by marking the job done meanwhile."""
    folder = make_digit_folder(tmp_path / "d", {"0": 2, "1": 2})
    from crucible import cli as cli_module

    real_get = cli_module.Client.import_get

    def finished_get(self, job_id):
        ImportJob.objects.filter(pk=job_id).update(
            status="done", total=5, processed=5, imported=4, errors=[{"path": "1/bad.png", "reason": "not an image"}]
        )
        return real_get(self, job_id)

    monkeypatch.setattr(cli_module.Client, "import_get", finished_get)
    result = cli("import", "digits", str(folder), "--wait")
    assert result.exit_code == 0, result.stderr
    assert "4 imported" in result.output and "1 unreadable" in result.output
    assert "1/bad.png: not an image" in result.output


@pytest.fixture
def minidata(project, admin_user) -> DatasetVersion:
    return DatasetVersion.objects.create(
        project=project, name="minidata", channels=1, width=28, height=28, resize_mode="squash", split_seed=42,
        class_names=["0", "9"], counts={"train": {"0": 30, "9": 466}, "val": {"0": 10, "9": 155}, "test": {}},
        status=DatasetVersion.Status.READY, created_by=admin_user,
    )  # fmt: skip


def test_dataset_show_list_and_errors(cli, minidata):
    shown = cli("dataset", "show", "digits/minidata")
    assert shown.exit_code == 0, shown.stderr
    assert "grayscale, 28x28, resize squash" in shown.output
    assert "seed 42" in shown.output
    assert "466" in shown.output and "█" in shown.output
    assert json.loads(cli("dataset", "show", str(minidata.pk), "--json").output)["name"] == "minidata"
    assert "minidata" in cli("dataset", "list", "digits").output
    assert one_error_line(cli("dataset", "show", "digits/nope")) == "error: dataset 'digits/nope' not found"


@pytest.fixture
def labelled(project):
    """Labelled assets as an import leaves them (rows only: no worker materializes in these tests)."""
    for i in range(8):
        asset = Asset.objects.create(
            sha256=f"{i:064x}", storage_name=f"assets/{i}.png", size_bytes=100, width=28, height=28, mode="L",
            format="PNG",
        )  # fmt: skip
        ProjectAsset.objects.create(project=project, asset=asset, label=str(i % 2), source_path=f"{i % 2}/{i}.png")


def test_dataset_create_sends_the_spec(cli, labelled):
    result = cli(
        "dataset", "create", "digits", "--name", "big", "--color", "--size", "32x24", "--resize", "crop",
        "--val", "20", "--test", "10", "--seed", "5", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.output)
    assert (answer["name"], answer["status"]) == ("big", "materializing")
    ds = DatasetVersion.objects.get(name="big")
    assert (ds.channels, ds.width, ds.height, ds.resize_mode) == (3, 32, 24, "crop")
    assert (ds.val_percent, ds.test_percent, ds.split_seed) == (20, 10, 5)


def test_dataset_create_needs_a_colour_choice(cli, labelled):
    result = cli("dataset", "create", "digits", "--name", "big", "--size", "28x28")
    assert result.exit_code == 2 and "--grayscale or --color" in result.stderr
    assert not DatasetVersion.objects.exists()


def test_dataset_create_without_labelled_images_is_one_line(cli, project):
    line = one_error_line(cli("dataset", "create", "digits", "--name", "d", "--grayscale", "--size", "28x28"))
    assert "at least two classes" in line
    assert not DatasetVersion.objects.exists()


def test_dataset_create_refuses_a_bad_split(cli, labelled):
    result = cli("dataset", "create", "digits", "--name", "bad", "--grayscale", "--size", "28", "--val", "150")
    line = one_error_line(result)
    assert "(invalid)" in line or "val" in line
    assert not DatasetVersion.objects.filter(name="bad").exists()


def test_import_status_lists_unreadable_files(cli, project):
    job = ImportJob.objects.create(
        project=project, source_kind="zip", source="imports/x.zip", source_label="x.zip", status="done",
        total=3, processed=3, imported=2, errors=[{"path": "9/bad.png", "reason": "truncated image"}],
    )  # fmt: skip
    result = cli("import-status", str(job.pk))
    assert result.exit_code == 0, result.stderr
    assert f"import {job.pk} done: 3 of 3 files, 2 imported, 0 duplicates, 1 unreadable" in result.output
    assert "9/bad.png: truncated image" in result.output
    assert one_error_line(cli("import-status", "99999")).startswith("error: ")
