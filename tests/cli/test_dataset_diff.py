"""`crucible dataset diff A B` against the curation API."""

import json

import pytest

from tests.cli.conftest import one_error_line

pytest.importorskip("curation.apis")

from curation.models import Asset, DatasetItem, DatasetVersion


def _version(project, user, name, rows):
    version = DatasetVersion.objects.create(
        project=project, name=name, channels=1, width=28, height=28, resize_mode="squash", split_seed=1,
        class_names=sorted({label for _, label, _ in rows}), status=DatasetVersion.Status.READY, created_by=user,
    )  # fmt: skip
    positions = {"train": 0, "val": 0}
    for i, label, split in rows:
        asset = Asset.objects.get_or_create(
            sha256=f"{i:064x}",
            defaults={"storage_name": f"a/{i}", "size_bytes": 1, "width": 28, "height": 28, "mode": "L",
                      "format": "PNG"},
        )[0]  # fmt: skip
        DatasetItem.objects.create(
            version=version, asset=asset, label=label, label_index=0, split=split, position=positions[split]
        )
        positions[split] += 1
    return version


@pytest.fixture
def versions(project, admin_user):
    """v1: assets 0-5 (0-2 "0", 3-5 "1"); v2 drops 0, relabels 1 and 4, moves 2, adds 6 and 7."""
    v1 = _version(project, admin_user, "v1", [(i, "0" if i < 3 else "1", "train") for i in range(6)])
    v2 = _version(
        project,
        admin_user,
        "v2",
        [(1, "1", "train"), (2, "0", "val"), (3, "1", "train"), (4, "0", "train"), (5, "1", "train"),
         (6, "0", "train"), (7, "1", "val")],
    )  # fmt: skip
    return v1, v2


def test_diff_prints_summary_classes_and_items(cli, versions):
    _v1, v2 = versions
    result = cli("dataset", "diff", "digits/v1", str(v2.pk))
    assert result.exit_code == 0, result.stderr
    out = result.output
    assert "digits/v1 -> digits/v2: 2 added, 1 removed, 2 relabelled, 1 moved split, 2 unchanged" in out
    assert "RELABELLED IN" in out and "CLASS" in out
    assert "relabelled (2):" in out and f"{1:064x}"[:12] in out and "0 (train) -> 1 (train)" in out
    assert "moved (1):" in out and "0 (train) -> 0 (val)" in out


def test_diff_json_and_limit(cli, versions):
    result = cli("dataset", "diff", "digits/v1", "digits/v2", "--limit", "1", "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.output)
    assert answer["summary"] == {"added": 2, "removed": 1, "relabelled": 2, "moved": 1, "unchanged": 2}
    assert answer["limit"] == 1 and len(answer["items"]["added"]) == 1


def test_diff_of_an_unknown_version_is_one_line(cli, versions):
    assert (
        one_error_line(cli("dataset", "diff", "digits/v1", "digits/nope")) == "error: dataset 'digits/nope' not found"
    )
    assert one_error_line(cli("dataset", "diff", "99999", "digits/v1")) == "error: dataset 99999 not found"


def test_diff_says_who_changed_each_label_and_through_what(cli, project, admin_user, versions):
    from datetime import timedelta

    from curation.labels import asset_label_set
    from curation.models import LabelEvent, ProjectAsset

    v1, v2 = versions
    # Asset 4's label changed between the two versions, through review 17.
    asset = Asset.objects.get(sha256=f"{4:064x}")
    pa = ProjectAsset.objects.create(project=project, asset=asset, label="1")
    asset_label_set(project_asset_id=pa.pk, label="0", actor=admin_user, via="review", ref=17)
    between = v1.created_at + (v2.created_at - v1.created_at) / 2
    LabelEvent.objects.filter(project_asset=pa).update(created_at=between + timedelta(microseconds=1))
    result = cli("dataset", "diff", "digits/v1", "digits/v2")
    assert result.exit_code == 0, result.stderr
    changed = [ln for ln in result.output.splitlines() if "1 (train) -> 0 (train)" in ln]
    assert len(changed) == 1 and changed[0].endswith(f"by {admin_user.username} via review 17")
    # Asset 1's change was logged nowhere: nothing is claimed about who made it.
    assert next(ln for ln in result.output.splitlines() if "0 (train) -> 1 (train)" in ln).endswith("1 (train)")
