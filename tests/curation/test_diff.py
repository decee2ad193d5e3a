"""Label-level diff between two dataset versions of a project."""

import pytest

from crucible.core.models import Project
from curation import selectors, services
from curation.models import Asset, DatasetItem, DatasetVersion, ProjectAsset

SPEC = {"channels": 1, "width": 28, "height": 28, "resize_mode": "squash"}


def _asset(i: int) -> Asset:
    return Asset.objects.get_or_create(
        sha256=f"{i:064x}",
        defaults={"storage_name": f"assets/{i}.png", "size_bytes": 100, "width": 28, "height": 28, "mode": "L",
                  "format": "PNG"},
    )[0]  # fmt: skip


def _version(project, user, name, rows, **spec) -> DatasetVersion:
    """A version whose manifest is `rows`: (asset number, label, split)."""
    labels = sorted({label for _, label, _ in rows})
    version = DatasetVersion.objects.create(
        project=project, name=name, split_seed=1, class_names=labels, status=DatasetVersion.Status.READY,
        created_by=user, **{**SPEC, **spec},
    )  # fmt: skip
    positions = {"train": 0, "val": 0, "test": 0}
    items = []
    for i, label, split in rows:
        items.append(
            DatasetItem(
                version=version, asset=_asset(i), label=label, label_index=labels.index(label), split=split,
                position=positions[split],
            )
        )  # fmt: skip
        positions[split] += 1
    DatasetItem.objects.bulk_create(items)
    return version


def _split(i: int) -> str:
    return "train" if i % 2 == 0 else "val"


@pytest.fixture
def pair(project, admin_user):
    """Version a (assets 0-9: 0-4 cat, 5-9 dog) and b, which removes 0 and 5, relabels 1 cat->dog,
    2 cat->bird and 6 dog->cat, moves 3 to train, keeps 4, 7, 8, 9 and adds 10 bird, 11 dog, 12 cat."""
    a = _version(project, admin_user, "a", [(i, "cat" if i < 5 else "dog", _split(i)) for i in range(10)])
    b_rows = [
        (1, "dog", _split(1)),
        (2, "bird", _split(2)),
        (6, "cat", _split(6)),
        (3, "cat", "train"),
        (4, "cat", _split(4)),
        *[(i, "dog", _split(i)) for i in (7, 8, 9)],
        (10, "bird", "train"),
        (11, "dog", "val"),
        (12, "cat", "train"),
    ]
    b = _version(project, admin_user, "b", b_rows, width=32, resize_mode="crop")
    return a, b


def test_summary_per_class_and_items(pair, admin_user):
    a, b = pair
    diff = selectors.dataset_version_diff(user=admin_user, a=a, b=b)
    assert diff["summary"] == {"added": 3, "removed": 2, "relabelled": 3, "moved": 1, "unchanged": 4}
    assert [c["label"] for c in diff["classes"]] == ["bird", "cat", "dog"]
    classes = {c.pop("label"): c for c in diff["classes"]}
    assert classes["cat"] == {
        "added": 1, "removed": 1, "relabelled_in": 1, "relabelled_out": 2, "moved": 1, "unchanged": 1
    }  # fmt: skip
    assert classes["dog"] == {
        "added": 1, "removed": 1, "relabelled_in": 1, "relabelled_out": 1, "moved": 0, "unchanged": 3
    }  # fmt: skip
    assert classes["bird"] == {
        "added": 1, "removed": 0, "relabelled_in": 1, "relabelled_out": 0, "moved": 0, "unchanged": 0
    }  # fmt: skip
    items = diff["items"]
    assert [i["sha256"] for i in items["added"]] == [f"{n:064x}" for n in (10, 11, 12)]
    assert items["added"][0] == {
        "sha256": f"{10:064x}", "old_label": None, "new_label": "bird", "old_split": None, "new_split": "train"
    }  # fmt: skip
    assert {(i["sha256"], i["old_label"], i["new_label"]) for i in items["removed"]} == {
        (f"{0:064x}", "cat", None),
        (f"{5:064x}", "dog", None),
    }
    assert [(i["old_label"], i["new_label"]) for i in items["relabelled"]] == [
        ("cat", "dog"),
        ("cat", "bird"),
        ("dog", "cat"),
    ]
    assert items["moved"] == [
        {"sha256": f"{3:064x}", "old_label": "cat", "new_label": "cat", "old_split": "val", "new_split": "train"}
    ]
    assert {(r["from"], r["to"], r["count"]) for r in diff["relabels"]} == {
        ("cat", "dog", 1), ("cat", "bird", 1), ("dog", "cat", 1)
    }  # fmt: skip
    assert diff["spec_changed"] == [
        {"field": "size", "a": "28x28", "b": "32x28"},
        {"field": "resize_mode", "a": "squash", "b": "crop"},
    ]
    # The other way round: added and removed swap, relabels reverse.
    back = selectors.dataset_version_diff(user=admin_user, a=b, b=a)
    assert back["summary"] == {"added": 2, "removed": 3, "relabelled": 3, "moved": 1, "unchanged": 4}
    assert selectors.dataset_version_diff(user=admin_user, a=a, b=a)["summary"] == {
        "added": 0, "removed": 0, "relabelled": 0, "moved": 0, "unchanged": 10
    }  # fmt: skip


def test_limit_bounds_the_lists_not_the_counts(pair, admin_user):
    a, b = pair
    diff = selectors.dataset_version_diff(user=admin_user, a=a, b=b, limit=1)
    assert diff["summary"]["added"] == 3 and diff["summary"]["relabelled"] == 3
    assert {kind: len(items) for kind, items in diff["items"].items()} == {
        "added": 1, "removed": 1, "relabelled": 1, "moved": 1
    }  # fmt: skip
    assert diff["items"]["added"][0]["sha256"] == f"{10:064x}"  # the first by asset hash
    assert all(
        not items for items in selectors.dataset_version_diff(user=admin_user, a=a, b=b, limit=0)["items"].values()
    )


def test_query_count_does_not_grow_with_the_items(project, admin_user, engineer, django_assert_max_num_queries):
    small_a = _version(project, admin_user, "sa", [(i, str(i % 3), _split(i)) for i in range(6)])
    small_b = _version(project, admin_user, "sb", [(i, str(i % 2), "train") for i in range(3, 9)])
    Asset.objects.bulk_create(
        Asset(sha256=f"{i:064x}", storage_name="p", size_bytes=1, width=28, height=28, mode="L", format="PNG")
        for i in range(1000, 3000)
    )
    big_a = _version(project, admin_user, "ba", [(i, str(i % 5), _split(i)) for i in range(1000, 2600)])
    big_b = _version(project, admin_user, "bb", [(i, str(i % 7), _split(i // 3)) for i in range(1400, 3000)])
    for user in (admin_user, engineer):
        for a, b in ((small_a, small_b), (big_a, big_b)):
            with django_assert_max_num_queries(9):
                diff = selectors.dataset_version_diff(user=user, a=a, b=b, limit=50)
            assert all(len(items) <= 50 for items in diff["items"].values())
    diff = selectors.dataset_version_diff(user=admin_user, a=big_a, b=big_b)
    s = diff["summary"]
    assert (s["added"], s["removed"]) == (400, 400)
    assert s["relabelled"] + s["moved"] + s["unchanged"] == 1200
    expected_relabelled = sum(1 for i in range(1400, 2600) if i % 5 != i % 7)
    assert s["relabelled"] == expected_relabelled


def test_api_diff_permissions_and_projects(api, pair, project, admin_user, annotator, make_user):
    a, b = pair
    resp = api(admin_user).get(f"/api/v1/datasets/{a.pk}/diff/{b.pk}/?limit=2")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["summary"]["relabelled"] == 3 and body["limit"] == 2 and len(body["items"]["relabelled"]) == 2
    assert (body["a"]["id"], body["b"]["name"]) == (a.pk, "b")
    assert api(admin_user).get(f"/api/v1/datasets/{a.pk}/diff/{b.pk}/?limit=-1").status_code == 400
    stranger = make_user("stranger")
    for user, code in ((annotator, 403), (stranger, 404)):
        assert api(user).get(f"/api/v1/datasets/{a.pk}/diff/{b.pk}/").status_code == code
    other = Project.objects.create(name="other", created_by=admin_user)
    c = _version(other, admin_user, "c", [(1, "cat", "train")])
    resp = api(admin_user).get(f"/api/v1/datasets/{a.pk}/diff/{c.pk}/")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "different_projects"
    assert api(admin_user).get(f"/api/v1/datasets/{a.pk}/diff/999999/").status_code == 404


def test_create_records_the_parent(api, project, admin_user, django_capture_on_commit_callbacks):
    for i in range(8):
        ProjectAsset.objects.create(project=project, asset=_asset(i), label=str(i % 2))
    with django_capture_on_commit_callbacks():
        first = services.dataset_version_create(project=project, user=admin_user, name="v1", split_seed=3, **SPEC)
    ProjectAsset.objects.filter(asset__sha256=f"{1:064x}").update(label="0")
    with django_capture_on_commit_callbacks():
        resp = api(admin_user).post(
            f"/api/v1/projects/{project.name}/datasets/",
            {"name": "v2", "split_seed": 3, "parent": first.pk, **SPEC},
            format="json",
        )
    assert resp.status_code == 201, resp.content
    second = DatasetVersion.objects.get(name="v2")
    assert second.parent == first and resp.json()["parent"] == first.pk
    diff = selectors.dataset_version_diff(user=admin_user, a=first, b=second)
    # Same seed, same split: the relabelled image does not move.
    assert diff["summary"] == {"added": 0, "removed": 0, "relabelled": 1, "moved": 0, "unchanged": 7}
    other = Project.objects.create(name="other", created_by=admin_user)
    foreign = _version(other, admin_user, "c", [(1, "cat", "train")])
    resp = api(admin_user).post(
        f"/api/v1/projects/{project.name}/datasets/", {"name": "v3", "parent": foreign.pk, **SPEC}, format="json"
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_parent"


def test_dataset_page_offers_the_other_versions(client, pair, admin_user):
    a, b = pair
    DatasetVersion.objects.filter(pk=b.pk).update(parent=a)
    client.force_login(admin_user)
    page = client.get(f"/datasets/{b.pk}/").content.decode()
    assert 'id="diff-other"' in page and f'<option value="{a.pk}">a (parent)</option>' in page
    lone = Project.objects.create(name="lone", created_by=admin_user)
    single = _version(lone, admin_user, "only", [(1, "cat", "train")])
    assert 'id="diff-other"' not in client.get(f"/datasets/{single.pk}/").content.decode()
