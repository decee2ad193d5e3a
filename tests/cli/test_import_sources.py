"""`crucible import` with --manifest, --digits, --urls, --s3, --text-csv and --format."""

import json
import zipfile

import pytest

from tests.cli.conftest import make_digit_folder, one_error_line

pytest.importorskip("curation.import_sources")

from curation.models import ImportJob, ProjectAsset
from curation.tasks import import_run


def _run(job_id: int) -> ImportJob:
    import_run.apply(kwargs={"job_id": job_id})
    return ImportJob.objects.get(pk=job_id)


def test_local_manifest_is_sent_zipped_with_the_files_it_lists(cli, project, tmp_path):
    folder = make_digit_folder(tmp_path / "set", {"0": 2, "1": 1})
    (folder / "unlisted.png").write_bytes((folder / "0" / "0_0.png").read_bytes())
    manifest = folder / "manifest.csv"
    manifest.write_text("path,label\n0/0_0.png,zero\n0/0_1.png,zero\n1/1_0.png,one\nnot/there.png,one\n")
    result = cli("import", "digits", "--manifest", str(manifest), "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.output)
    assert answer["source_kind"] == "manifest" and answer["status"] == "queued"
    job = _run(answer["id"])
    assert (job.status, job.imported) == ("done", 3), job.message
    assert job.errors == [{"path": "not/there.png", "reason": "file not found in the zip"}]
    labels = dict(ProjectAsset.objects.values_list("source_path", "label"))
    assert labels == {"0/0_0.png": "zero", "0/0_1.png": "zero", "1/1_0.png": "one"}


def test_local_digits_list_is_sent_with_labels_txt(cli, project, tmp_path):
    folder = make_digit_folder(tmp_path / "set", {"0": 1, "1": 1})
    (folder / "labels.txt").write_text("zero\none\n")
    (folder / "train.txt").write_text("0/0_0.png 0\n1/1_0.png 1\n")
    result = cli("import", "digits", "--digits", str(folder / "train.txt"), "--json")
    assert result.exit_code == 0, result.stderr
    job = _run(json.loads(result.output)["id"])
    assert (job.source_kind, job.status, job.imported) == ("digits", "done", 2), job.message
    assert sorted(ProjectAsset.objects.values_list("label", flat=True)) == ["one", "zero"]


def test_text_csv_and_s3_and_urls_are_queued(cli, project, tmp_path):
    texts = tmp_path / "t.csv"
    texts.write_text("body,tag\nhello,greeting\n")
    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.com/a.png\n")
    for args, kind, label in (
        (["--text-csv", str(texts), "--column", "body", "--label-column", "tag"], "text_csv", "t.csv"),
        (["--s3", "s3://bucket/data"], "s3", "s3://bucket/data/"),
        (["--urls", str(urls)], "urls", "urls.txt"),
    ):
        result = cli("import", "digits", *args)
        assert result.exit_code == 0, result.stderr
        job = ImportJob.objects.latest("id")
        assert (job.source_kind, job.source_label, job.status) == (kind, label, "queued")
        assert f"import {job.pk} queued" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text-csv", "t.csv"], "--text-csv needs --column"),
        (["--format", "coco", "t.csv"], "not a zip file"),
        (["--format", "coco", "--manifest", "t.csv"], "are two sources"),
        (["--s3", "bucket/data"], "--s3 takes s3://bucket/prefix"),
        (["--manifest", "missing.csv"], "no such local file"),
        (["--column", "x", "--manifest", "t.csv"], "--column and --label-column go with --text-csv"),
    ],
)
def test_bad_source_options_give_one_line_and_create_nothing(cli, project, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    line = one_error_line(cli("import", "digits", *args))
    assert message in line
    assert not ImportJob.objects.exists()


def test_server_manifest_outside_the_roots_is_refused_with_the_servers_code(cli, project, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\na.png\n")
    line = one_error_line(cli("import", "digits", "--manifest", str(manifest), "--server"))
    assert "path_outside_roots" in line or "outside the folders" in line
    assert not ImportJob.objects.exists()


def test_local_zip_with_format_is_uploaded_as_is(cli, project, tmp_path):
    folder = make_digit_folder(tmp_path / "coco", {"0": 2})
    archive = tmp_path / "coco.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for png in folder.rglob("*.png"):
            zf.write(png, f"images/{png.name}")
    result = cli("import", "digits", str(archive), "--format", "coco", "--json")
    assert result.exit_code == 0, result.stderr
    job = _run(json.loads(result.output)["id"])
    assert (job.source_kind, job.status, job.imported) == ("coco", "done", 2)
