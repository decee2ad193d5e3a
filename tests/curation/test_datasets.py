import hashlib
import json

import numpy as np
import pytest

from curation import imaging, selectors, services
from curation.models import Asset, DatasetItem, DatasetVersion
from curation.tasks import dataset_materialize, import_run

from .conftest import write_tree

SPEC = {"channels": 1, "width": 28, "height": 28, "resize_mode": "squash"}


@pytest.fixture
def imported(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    """The project with 3 classes ("2", "10", "x") of 20 labelled images each."""
    folder = write_tree(isolated_files / "digits", {"2": 20, "10": 20, "x": 20})
    with django_capture_on_commit_callbacks():
        job = services.import_start(project=project, user=admin_user, path=str(folder))
    import_run.apply(kwargs={"job_id": job.pk})
    return project


def _create(project, user, django_capture_on_commit_callbacks, *, materialize=True, **kwargs):
    params = {**SPEC, "name": "minidata", "split_seed": 1, **kwargs}
    with django_capture_on_commit_callbacks() as callbacks:
        version = services.dataset_version_create(project=project, user=user, **params)
    assert len(callbacks) == 1
    if materialize:
        dataset_materialize.apply(kwargs={"version_id": version.pk})
        version.refresh_from_db()
    return version


def _splits(version):
    return dict(DatasetItem.objects.filter(version=version).values_list("asset__sha256", "split"))


def test_create_counts_classes_and_writes_shards(imported, admin_user, django_capture_on_commit_callbacks):
    version = _create(imported, admin_user, django_capture_on_commit_callbacks, val_percent=25, test_percent=10)
    assert version.status == "ready", version.error
    assert version.class_names == ["2", "10", "x"]  # natural order
    totals = {split: sum(c.values()) for split, c in version.counts.items()}
    assert sum(totals.values()) == 60 and all(totals.values())
    assert set(version.counts["train"]) == {"2", "10", "x"}
    assert version.shard_name == f"shards/{version.content_hash}"
    assert version.stats["polarity"] == "dark_background" and version.stats["source_sizes"][0]["size"] == "28x28"
    folder = selectors.dataset_shard_dir(version=version)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["class_names"] == ["2", "10", "x"] and manifest["spec"] == SPEC
    for split in ("train", "val", "test"):
        x, y = selectors.dataset_split_arrays(version=version, split=split)
        assert isinstance(x, np.memmap) and not x.flags.writeable
        assert x.shape == (totals[split], 1, 28, 28) and x.dtype == np.uint8
        assert y.shape == (totals[split],) and y.dtype == np.int64
        items = list(DatasetItem.objects.filter(version=version, split=split).order_by("position"))
        assert [i.label_index for i in items] == y.tolist()
        assert [version.class_names[k] for k in y.tolist()] == [i.label for i in items]


def test_same_seed_same_split_different_seed_different_split(imported, admin_user, django_capture_on_commit_callbacks):
    a = _create(imported, admin_user, django_capture_on_commit_callbacks, name="a", split_seed=7, materialize=False)
    b = _create(imported, admin_user, django_capture_on_commit_callbacks, name="b", split_seed=7, materialize=False)
    c = _create(imported, admin_user, django_capture_on_commit_callbacks, name="c", split_seed=8, materialize=False)
    assert _splits(a) == _splits(b)
    assert a.content_hash == b.content_hash
    assert _splits(a) != _splits(c)
    assert a.content_hash != c.content_hash


def test_random_seed_is_recorded(imported, admin_user, django_capture_on_commit_callbacks):
    version = _create(imported, admin_user, django_capture_on_commit_callbacks, split_seed=None, materialize=False)
    assert version.split_seed is not None
    again = _create(
        imported,
        admin_user,
        django_capture_on_commit_callbacks,
        name="again",
        split_seed=version.split_seed,
        materialize=False,
    )
    assert _splits(again) == _splits(version)


def test_equal_content_reuses_shards(imported, admin_user, django_capture_on_commit_callbacks):
    first = _create(imported, admin_user, django_capture_on_commit_callbacks, name="first")
    folder = selectors.dataset_shard_dir(version=first)
    stamp = (folder / "train_x.npy").stat().st_mtime_ns
    second = _create(imported, admin_user, django_capture_on_commit_callbacks, name="second")
    assert second.status == "ready" and second.shard_name == first.shard_name
    assert (folder / "train_x.npy").stat().st_mtime_ns == stamp  # not rebuilt
    assert second.stats == first.stats
    x, y = selectors.dataset_split_arrays(version=second, split="test")  # test_percent 0: an empty split
    assert x.shape == (0, 1, 28, 28) and y.shape == (0,)


def test_max_and_min_per_class(imported, admin_user, project, isolated_files, django_capture_on_commit_callbacks):
    small = write_tree(isolated_files / "more", {"rare": 3, "2": 1}, seed=5)
    with django_capture_on_commit_callbacks():
        job = services.import_start(project=project, user=admin_user, path=str(small))
    import_run.apply(kwargs={"job_id": job.pk})
    version = _create(
        project, admin_user, django_capture_on_commit_callbacks, min_per_class=5, max_per_class=10, materialize=False
    )
    assert version.class_names == ["2", "10", "x"]
    for label in version.class_names:
        assert sum(version.counts[split][label] for split in ("train", "val", "test")) == 10
    # the kept items are not biased towards one split
    assert sum(version.counts["train"].values()) >= 15


def test_gallery_and_detail(api, imported, admin_user, django_capture_on_commit_callbacks):
    version = _create(imported, admin_user, django_capture_on_commit_callbacks)
    resp = api(admin_user).get(f"/api/v1/datasets/{version.pk}/gallery/?split=train&per_class=2")
    assert resp.status_code == 200
    classes = resp.json()["classes"]
    assert list(classes) == ["2", "10", "x"] and all(len(v) == 2 for v in classes.values())
    url = classes["2"][0]["url"]
    assert url == f"/api/v1/projects/{imported.pk}/assets/{classes['2'][0]['sha256']}/content/"
    assert api(admin_user).get(url).status_code == 200
    detail = api(admin_user).get(f"/api/v1/datasets/{version.pk}/").json()
    assert detail["project_name"] == "digits" and detail["status"] == "ready"
    assert sum(detail["totals"].values()) == 60
    listed = api(admin_user).get(f"/api/v1/projects/{imported.name}/datasets/?name=minidata").json()["results"]
    assert [d["id"] for d in listed] == [version.pk]
    assert api(admin_user).get(f"/api/v1/projects/{imported.name}/datasets/?name=nope").json()["results"] == []


def test_create_through_the_api(api, imported, admin_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        resp = api(admin_user).post(
            f"/api/v1/projects/{imported.name}/datasets/", {"name": "minidata", **SPEC}, format="json"
        )
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["status"] == "materializing" and body["val_percent"] == 25 and body["split_seed"] is not None
    assert len(callbacks) == 1
    again = api(admin_user).post(
        f"/api/v1/projects/{imported.name}/datasets/", {"name": "minidata", **SPEC}, format="json"
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_name"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"width": 0, "height": 0}, "width"),
        ({"width": 2000}, "width"),
        ({"channels": 2}, "channels"),
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"val_percent": 100}, "val_percent"),
        ({"val_percent": 60, "test_percent": 40}, "val_percent"),
        ({"min_per_class": 10, "max_per_class": 5}, "min_per_class"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_impossible_parameters_are_refused(api, imported, admin_user, change, field):
    resp = api(admin_user).post(
        f"/api/v1/projects/{imported.name}/datasets/", {"name": "bad", **SPEC, **change}, format="json"
    )
    assert resp.status_code == 400
    assert field in resp.json()["error"]["fields"]
    assert not DatasetVersion.objects.exists()


def test_too_few_classes_after_filtering(api, imported, admin_user):
    resp = api(admin_user).post(
        f"/api/v1/projects/{imported.name}/datasets/", {"name": "big", **SPEC, "min_per_class": 50}, format="json"
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "too_few_classes"
    assert not DatasetVersion.objects.exists()


def test_annotator_gets_403_and_stranger_404(
    api, imported, admin_user, annotator, make_user, django_capture_on_commit_callbacks
):
    version = _create(imported, admin_user, django_capture_on_commit_callbacks)
    stranger = make_user("stranger")
    for user, code in ((annotator, 403), (stranger, 404)):
        assert api(user).get(f"/api/v1/datasets/{version.pk}/").status_code == code
        assert api(user).get(f"/api/v1/datasets/{version.pk}/gallery/").status_code == code
        assert api(user).get(f"/api/v1/projects/{imported.name}/datasets/").status_code == code
        resp = api(user).post(f"/api/v1/projects/{imported.name}/datasets/", {"name": "n", **SPEC}, format="json")
        assert resp.status_code == code
    assert DatasetVersion.objects.count() == 1


def test_failed_materialize_says_why(imported, admin_user, django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    version = _create(imported, admin_user, django_capture_on_commit_callbacks, materialize=False)
    item = DatasetItem.objects.filter(version=version).select_related("asset").first()
    default_storage.delete(item.asset.storage_name)
    dataset_materialize.apply(kwargs={"version_id": version.pk})
    version.refresh_from_db()
    assert version.status == "failed"
    # The pack held every asset: the error names the first one that could not be read.
    in_pack = Asset.objects.filter(storage_name=item.asset.storage_name).values_list("sha256", flat=True)
    assert len(in_pack) == 60
    assert any(f"asset {sha[:12]} could not be read" in version.error for sha in in_pack)
    assert not default_storage.exists(f"shards/{version.content_hash}/manifest.json")


@pytest.mark.parametrize("mode", ["crop", "fill", "half_crop"])
def test_colour_shards_in_every_mode(imported, admin_user, django_capture_on_commit_callbacks, mode):
    version = _create(
        imported, admin_user, django_capture_on_commit_callbacks, channels=3, width=16, height=12, resize_mode=mode
    )
    x, _ = selectors.dataset_split_arrays(version=version, split="train")
    assert x.shape[1:] == (3, 12, 16)


def test_dataset_from_packed_assets_equals_one_from_the_original_images(
    imported, admin_user, isolated_files, django_capture_on_commit_callbacks
):
    version = _create(imported, admin_user, django_capture_on_commit_callbacks, resize_mode="fill", width=20)
    assert version.status == "ready", version.error
    assert not Asset.objects.filter(offset__isnull=True).exists()  # every asset came from a pack
    originals = {}
    for path in (isolated_files / "digits").glob("*/*.png"):
        data = path.read_bytes()
        originals[hashlib.sha256(data).hexdigest()] = data
    for split in ("train", "val"):
        x, y = selectors.dataset_split_arrays(version=version, split=split)
        items = list(
            DatasetItem.objects.filter(version=version, split=split)
            .order_by("position")
            .values_list("asset__sha256", "label_index")
        )
        assert len(items) == len(x) == len(y) > 0
        for i, (sha, label_index) in enumerate(items):
            expected, _ = imaging.preprocess(
                imaging.decode(originals[sha], max_pixels=10**6).image,
                channels=1,
                width=20,
                height=28,
                resize_mode="fill",
                fill_seed=bytes.fromhex(sha),
            )
            assert np.array_equal(x[i], expected) and y[i] == label_index
