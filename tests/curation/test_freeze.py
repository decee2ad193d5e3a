"""Frozen dataset versions, the evaluation set, the leak guard, the diff's label history, the explorer."""

import pytest

from crucible.core.errors import Conflict, ValidationFailed
from curation import findings, selectors, services
from curation.labels import asset_label_set
from curation.models import DatasetItem, DatasetVersion, ProjectAsset
from curation.tasks import import_run

from .test_findings import encoded, pattern, write

SPEC = {"channels": 1, "width": 28, "height": 28, "resize_mode": "squash"}


@pytest.fixture
def clean(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    """Classes a and b of 10 distinct pictures each, and b/copy.png: a near copy of a/3 labelled b."""
    files = {f"a/{i}.png": encoded(pattern(i)) for i in range(10)}
    files |= {f"b/{i}.png": encoded(pattern(100 + i)) for i in range(10)}
    files["b/copy.png"] = encoded(pattern(3, brighter=8))
    folder = write(isolated_files / "clean", files)
    with django_capture_on_commit_callbacks():
        job = services.import_start(project=project, user=admin_user, path=str(folder))
    import_run.apply(kwargs={"job_id": job.pk})
    return project


def sha(project, path: str) -> str:
    return ProjectAsset.objects.get(project=project, source_path__endswith=path).asset.sha256


def train_seed(*shas: str, val_percent: int = 25) -> int:
    """A split seed that puts all the given assets in the train split."""
    return next(s for s in range(1000) if all(services._split_keys(s, h)[0] >= val_percent / 100 for h in shas))


def create(project, user, capture, name="v1", **kwargs):
    with capture():
        return services.dataset_version_create(
            project=project, user=user, name=name, **{"split_seed": 1, **SPEC, **kwargs}
        )


def test_freeze_marks_the_version_frozen_once(clean, admin_user, django_capture_on_commit_callbacks):
    version = create(clean, admin_user, django_capture_on_commit_callbacks)
    assert not version.is_frozen
    frozen = services.dataset_version_freeze(version=version, user=admin_user)
    assert frozen.is_frozen and frozen.frozen_by == admin_user
    assert services.dataset_version_manifest_hash(version=frozen) == frozen.content_hash
    with pytest.raises(Conflict) as err:
        services.dataset_version_freeze(version=frozen, user=admin_user)
    assert err.value.code == "version_frozen"


def test_freeze_refuses_items_that_no_longer_match_the_hash(clean, admin_user, django_capture_on_commit_callbacks):
    version = create(clean, admin_user, django_capture_on_commit_callbacks)
    item = DatasetItem.objects.filter(version=version, label="a").first()
    DatasetItem.objects.filter(pk=item.pk).update(label="b")
    with pytest.raises(Conflict) as err:
        services.dataset_version_freeze(version=version, user=admin_user)
    assert err.value.code == "content_mismatch"
    version.refresh_from_db()
    assert version.frozen_at is None


def test_evaluation_members_go_to_test_and_never_train(clean, admin_user, django_capture_on_commit_callbacks):
    members = [sha(clean, f"a/{i}.png") for i in (0, 1, 2)]
    assert services.evaluation_set_update(project=clean, user=admin_user, add=members) == 3
    version = create(clean, admin_user, django_capture_on_commit_callbacks, split_seed=train_seed(*members))
    splits = dict(DatasetItem.objects.filter(version=version).values_list("asset__sha256", "split"))
    assert {splits[m] for m in members} == {"test"}
    assert version.counts["test"]["a"] >= 3
    assert services.dataset_version_freeze(version=version, user=admin_user).is_frozen


def test_freeze_refuses_a_version_training_on_an_evaluation_image_or_its_copy(
    clean, admin_user, django_capture_on_commit_callbacks
):
    a3, copy = sha(clean, "a/3.png"), sha(clean, "b/copy.png")
    version = create(clean, admin_user, django_capture_on_commit_callbacks, split_seed=train_seed(a3, copy))
    services.evaluation_set_update(project=clean, user=admin_user, add=[a3])  # after the version was made
    with pytest.raises(Conflict) as err:
        services.dataset_version_freeze(version=version, user=admin_user)
    assert err.value.code == "leak"
    offenders = {(o["evaluation"], o["train"]): o["distance"] for o in err.value.fields["offenders"]}
    assert offenders[(a3, a3)] == 0 and offenders[(a3, copy)] <= findings.near_duplicate_radius()
    assert err.value.fields["count"] == 2
    version.refresh_from_db()
    assert version.frozen_at is None


def test_create_and_freeze_with_a_leak_creates_nothing(clean, admin_user, django_capture_on_commit_callbacks):
    a3, copy = sha(clean, "a/3.png"), sha(clean, "b/copy.png")
    services.evaluation_set_update(project=clean, user=admin_user, add=[a3])
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(Conflict) as err:
        services.dataset_version_create_frozen(
            project=clean, user=admin_user, name="leaky", split_seed=train_seed(copy), **SPEC
        )
    assert err.value.code == "leak"
    assert not DatasetVersion.objects.exists() and not callbacks  # no version, no shards queued


def test_evaluation_set_update_refuses_unknown_assets(clean, admin_user):
    with pytest.raises(ValidationFailed) as err:
        services.evaluation_set_update(project=clean, user=admin_user, add=[sha(clean, "a/0.png"), "f" * 64])
    assert err.value.code == "unknown_asset"
    assert not ProjectAsset.objects.filter(evaluation=True).exists()


def test_freeze_and_evaluation_set_api(clean, admin_user, api, django_capture_on_commit_callbacks):
    client = api(admin_user)
    version = create(clean, admin_user, django_capture_on_commit_callbacks)
    answer = client.post(f"/api/v1/datasets/{version.pk}/freeze/")
    assert answer.status_code == 200 and answer.json()["is_frozen"] and answer.json()["frozen_at"]
    again = client.post(f"/api/v1/datasets/{version.pk}/freeze/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "version_frozen"

    a3 = sha(clean, "a/3.png")
    assert client.post("/api/v1/projects/digits/evaluation-set/", {"add": [a3]}, format="json").json() == {"count": 1}
    assert client.get("/api/v1/projects/digits/evaluation-set/").json()["results"] == [{"sha256": a3, "label": "a"}]
    body = {"name": "v2", **SPEC, "split_seed": train_seed(sha(clean, "b/copy.png")), "freeze": True}
    with django_capture_on_commit_callbacks():
        leak = client.post("/api/v1/projects/digits/datasets/", body, format="json")
    assert leak.status_code == 409 and leak.json()["error"]["code"] == "leak"
    assert leak.json()["error"]["fields"]["offenders"][0]["evaluation"] == a3
    assert not DatasetVersion.objects.filter(name="v2").exists()


def test_diff_says_who_relabelled_and_through_what(
    clean, admin_user, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    v1 = create(clean, admin_user, django_capture_on_commit_callbacks, name="v1")
    pas = list(ProjectAsset.objects.filter(project=clean, label="a").order_by("pk")[:3])
    asset_label_set(project_asset_id=pas[0].pk, label="b", actor=admin_user, via="edit")
    asset_label_set(project_asset_id=pas[0].pk, label="b", actor=admin_user, via="review")  # no change, no event
    asset_label_set(project_asset_id=pas[1].pk, label="x", actor=None, via="finding", ref=17)
    asset_label_set(project_asset_id=pas[1].pk, label="b", actor=admin_user, via="review", ref=42)
    v2 = create(clean, admin_user, django_capture_on_commit_callbacks, name="v2")
    asset_label_set(project_asset_id=pas[2].pk, label="b", actor=admin_user, via="edit")  # after v2: not shown
    with django_assert_max_num_queries(6):
        diff = selectors.dataset_version_diff(user=admin_user, a=v1, b=v2)
    by_sha = {i["sha256"]: i for i in diff["items"]["relabelled"]}
    assert set(by_sha) == {pas[0].asset.sha256, pas[1].asset.sha256}
    assert by_sha[pas[0].asset.sha256]["changed_by"] | {"at": None} == {
        "actor": "admin", "via": "edit", "ref": None, "label": "b", "at": None
    }  # fmt: skip
    assert by_sha[pas[1].asset.sha256]["changed_by"]["via"] == "review"
    assert by_sha[pas[1].asset.sha256]["changed_by"]["ref"] == 42


def test_explorer_filters_and_pages(clean, admin_user, api, django_capture_on_commit_callbacks):
    v1 = create(clean, admin_user, django_capture_on_commit_callbacks, name="v1")
    pa = ProjectAsset.objects.filter(project=clean, label="a").order_by("pk").first()
    asset_label_set(project_asset_id=pa.pk, label="b", actor=admin_user, via="edit")
    v2 = create(clean, admin_user, django_capture_on_commit_callbacks, name="v2")
    findings.findings_scan(project=clean, user=admin_user)
    client = api(admin_user)
    url = f"/api/v1/datasets/{v2.pk}/explore/"

    changed = client.get(url, {"changed_since": v1.pk}).json()
    assert [i["sha256"] for i in changed["results"]] == [pa.asset.sha256] and changed["next"] is None
    only_a = client.get(url, {"label": "a", "split": "train"}).json()["results"]
    assert only_a and {(i["label"], i["split"]) for i in only_a} == {("a", "train")}
    near = client.get(url, {"finding_kind": "near_duplicate"}).json()["results"]
    assert [i["sha256"] for i in near] == [sha(clean, "a/3.png")]  # the main asset of its group

    seen, after = [], None
    while True:
        page = client.get(url, {"limit": 7, **({"after": after} if after else {})}).json()
        seen += [i["id"] for i in page["results"]]
        after = page["next"]
        if not after:
            break
    assert seen == sorted(DatasetItem.objects.filter(version=v2).values_list("pk", flat=True))
    bad = client.get(url, {"finding_kind": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["finding_kind"]


def test_dataset_page_offers_the_explorer_filters(clean, admin_user, client, django_capture_on_commit_callbacks):
    v1 = create(clean, admin_user, django_capture_on_commit_callbacks, name="v1")
    v2 = create(clean, admin_user, django_capture_on_commit_callbacks, name="v2")
    client.force_login(admin_user)
    html = client.get(f"/datasets/{v2.pk}/").content.decode()
    assert f'data-url="/api/v1/datasets/{v2.pk}/explore/"' in html
    assert '<option value="near_duplicate">Near duplicate</option>' in html
    assert f'<option value="{v1.pk}">v1</option>' in html and "frontend/js/explore.js" in html


def test_band_lookup_finds_the_near_copy_of_one_image(clean, admin_user):
    findings.findings_scan(project=clean, user=admin_user)
    a3 = ProjectAsset.objects.get(project=clean, source_path__endswith="a/3.png")
    near = selectors.project_assets_near(user=admin_user, project=clean, phash=a3.asset.phash.phash, radius=3)
    assert [r["sha256"] for r in near][:1] == [a3.asset.sha256] and near[0]["distance"] == 0
    assert sha(clean, "b/copy.png") in {r["sha256"] for r in near}
    assert all(r["distance"] <= 3 for r in near) and len(near) == 2
    with pytest.raises(ValidationFailed):
        selectors.project_assets_near(user=admin_user, project=clean, phash=0, radius=4)
