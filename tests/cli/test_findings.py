"""`crucible findings ...` and `crucible dataset freeze` against the curation API."""

import json

import pytest

from tests.cli.conftest import one_error_line

pytest.importorskip("curation.findings")

from curation import findings as findings_services
from curation.models import Asset, DatasetVersion, Finding, ProjectAsset
from curation.tasks import findings_scan as findings_scan_task


def _assets(project, n):
    out = []
    for i in range(n):
        asset = Asset.objects.create(
            sha256=f"{i + 1:064x}", storage_name=f"a/{i}", size_bytes=1, width=28, height=28, mode="L", format="PNG"
        )
        out.append(ProjectAsset.objects.create(project=project, asset=asset, label="0" if i % 2 else "1"))
    return out


@pytest.fixture
def found(project):
    """Two findings: an unreadable asset and a duplicate group of three (the first is the oldest)."""
    pas = _assets(project, 6)
    unreadable = findings_services.findings_upsert(
        project=project, kind="unreadable", key=pas[0].asset.sha256, evidence={"reason": "truncated PNG"},
        project_asset_id=pas[0].pk,
    )  # fmt: skip
    group = findings_services.findings_upsert(
        project=project, kind="near_duplicate", key=pas[1].asset.sha256,
        evidence={"reason": "hashes close", "members": [pas[1].pk, pas[2].pk, pas[3].pk], "labels": ["0", "1"]},
        project_asset_id=pas[1].pk,
    )  # fmt: skip
    return pas, unreadable, group


def test_findings_lists_and_filters(cli, found):
    _pas, _unreadable, group = found
    result = cli("findings", "digits")
    assert result.exit_code == 0, result.stderr
    assert "unreadable" in result.output and "near_duplicate" in result.output and "2 finding(s)" in result.output
    assert "truncated PNG" in result.output
    only = json.loads(cli("findings", "digits", "--kind", "near_duplicate", "--json").output)
    assert [f["id"] for f in only["results"]] == [group.pk]
    assert json.loads(cli("findings", "digits", "--decision", "drop", "--json").output)["results"] == []


def test_decide_one_then_again_is_one_error_line(cli, found):
    pas, unreadable, _group = found
    result = cli("findings", "decide", str(unreadable.pk), "--decision", "drop", "--note", "broken file")
    assert result.exit_code == 0, result.stderr
    assert f"finding {unreadable.pk} (unreadable): drop" in result.output
    assert ProjectAsset.objects.get(pk=pas[0].pk).excluded
    line = one_error_line(cli("findings", "decide", str(unreadable.pk), "--decision", "keep"))
    assert "already decided" in line and "(already_decided)" in line


def test_decide_by_rule_keeps_the_oldest_of_each_group(cli, found):
    pas, _unreadable, group = found
    result = cli("findings", "decide", "--rule", "keep_oldest_duplicate", "digits")
    assert result.exit_code == 0, result.stderr
    assert "rule keep_oldest_duplicate: 1 finding(s) decided" in result.output
    assert Finding.objects.get(pk=group.pk).decision == "merge"
    excluded = set(ProjectAsset.objects.filter(excluded=True).values_list("pk", flat=True))
    assert excluded == {pas[2].pk, pas[3].pk}


def test_bad_decide_usage_changes_nothing(cli, found):
    _pas, unreadable, _group = found
    assert cli("findings", "decide", str(unreadable.pk)).exit_code == 2  # no --decision
    assert cli("findings", "decide", "digits", "--decision", "keep").exit_code == 2  # not an id
    assert "not found" in one_error_line(cli("findings", "decide", "99999", "--decision", "keep"))
    assert "nope" in one_error_line(cli("findings", "decide", "--rule", "drop_unreadable", "nope"))
    assert set(Finding.objects.values_list("decision", flat=True)) == {"open"}


def test_scan_queues(cli, project, monkeypatch):
    sent = []
    monkeypatch.setattr(findings_scan_task, "delay", lambda **kw: sent.append(kw))
    result = cli("findings", "scan", "digits")
    assert result.exit_code == 0, result.stderr
    assert "scan of digits queued" in result.output and sent == [{"project_id": project.pk}]


def test_dataset_freeze_creates_and_freezes_or_freezes_existing(cli, project, monkeypatch):
    from curation.tasks import dataset_materialize

    monkeypatch.setattr(dataset_materialize, "delay", lambda **kw: None)
    _assets(project, 8)
    result = cli("dataset", "freeze", "digits", "--name", "v1", "--grayscale", "--size", "28", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    version = DatasetVersion.objects.get(name="v1")
    assert version.is_frozen and f"dataset digits/v1 (id {version.pk}) frozen" in result.output
    assert "(version_frozen)" in one_error_line(cli("dataset", "freeze", "digits", "--name", "v1"))

    assert cli("dataset", "create", "digits", "--name", "v2", "--grayscale", "--size", "28").exit_code == 0
    assert cli("dataset", "freeze", "digits", "--name", "v2", "--json").exit_code == 0
    assert DatasetVersion.objects.get(name="v2").is_frozen
    assert cli("dataset", "freeze", "digits", "--name", "v3", "--size", "28").exit_code == 2  # no colour choice


def test_dataset_freeze_with_a_leak_is_one_line_and_creates_nothing(cli, project, monkeypatch):
    _assets(project, 8)
    # These assets have no pixels to hash: the guard's answer is stood in for (the guard itself is
    # tested in tests/curation/test_freeze.py); what is tested here is the command's all-or-nothing.
    from curation import services

    monkeypatch.setattr(
        services, "dataset_version_leaks", lambda **kw: [{"evaluation": "e" * 64, "train": "t" * 64, "distance": 1}]
    )
    line = one_error_line(cli("dataset", "freeze", "digits", "--name", "v1", "--color", "--size", "28x28"))
    assert "(leak)" in line and "evaluation-set images" in line
    assert not DatasetVersion.objects.exists()
