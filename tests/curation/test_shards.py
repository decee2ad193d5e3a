"""Encoded-image shards: the format itself, and dataset versions of large images materialized into it."""

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from crucible.core.errors import Conflict
from curation import imaging, selectors, services, shards
from curation.models import DatasetItem
from curation.shards import EncodedImages, EncodedWriter, write_encoded
from curation.tasks import dataset_materialize, import_run

BIG = {"channels": 3, "width": 96, "height": 96, "resize_mode": "fill"}


def _images(n: int, shape=(3, 20, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture
def encoded(tmp_path):
    x = _images(10)
    write_encoded(tmp_path, "train", x)
    return x, EncodedImages.open(tmp_path, "train")


def test_encoded_images_index_like_an_array(encoded):
    x, images = encoded
    assert images.shape == (10, 3, 20, 16) and images.dtype == np.uint8 and len(images) == 10
    assert np.array_equal(images[3], x[3]) and np.array_equal(images[-1], x[9])
    assert np.array_equal(images[2:7:2], x[2:7:2]) and np.array_equal(images[:], x)
    assert images[5:5].shape == (0, 3, 20, 16)
    order = np.array([7, 0, 7, 3, -2])  # unsorted, repeated, negative: kept as asked
    assert np.array_equal(images[order], x[order])
    assert np.array_equal(images[[1, 4]], x[[1, 4]]) and images[np.array([], dtype=np.int64)].shape == (0, 3, 20, 16)
    assert np.array_equal(images[[4, 1], 2], x[[4, 1], 2]) and np.array_equal(images[6, 0, 3:5], x[6, 0, 3:5])
    batch = images[np.array([1, 2])]
    assert batch.flags.c_contiguous and batch.flags.writeable  # torch.from_numpy takes it as is
    for bad in (10, -11, np.array([0, 10]), [3, -11]):
        with pytest.raises(IndexError):
            images[bad]
    with pytest.raises(IndexError):
        images[np.array([0.5])]


def test_grayscale_and_shape_read_from_the_images(tmp_path):
    x = _images(4, shape=(1, 9, 33), seed=1)
    write_encoded(tmp_path, "val", x)
    images = EncodedImages.open(tmp_path, "val")
    assert images.shape == (4, 1, 9, 33) and np.array_equal(images[[3, 1]], x[[3, 1]])
    write_encoded(tmp_path, "test", x[:0])
    empty = EncodedImages.open(tmp_path, "test", shape=(1, 9, 33))
    assert len(empty) == 0 and empty[:].shape == (0, 1, 9, 33)


def test_a_batch_decodes_only_its_own_rows(encoded, tmp_path):
    x, images = encoded
    data = bytearray((tmp_path / "train_x.bin").read_bytes())
    start, end = int(images.offsets[5]), int(images.offsets[6])
    data[start + 40 : end] = bytes(end - start - 40)  # garble row 5 only
    (tmp_path / "train_x.bin").write_bytes(bytes(data))
    garbled = EncodedImages.open(tmp_path, "train")
    assert np.array_equal(garbled[[0, 4, 6, 9]], x[[0, 4, 6, 9]])
    with pytest.raises(ValueError, match="row 5"):
        garbled[[4, 5, 6, 7]]


def test_writer_takes_rows_in_any_order_and_refuses_gaps(tmp_path):
    x = _images(6, seed=2)
    writer = EncodedWriter(tmp_path, "train", n=6, shape=x.shape[1:])
    for i in (4, 0, 5, 2, 1, 3):
        writer[i] = x[i]
    writer.close()
    assert np.array_equal(EncodedImages.open(tmp_path, "train")[:], x)
    assert sorted(p.name for p in tmp_path.glob("*train*")) == ["train_offsets.npy", "train_x.bin"]  # no spill
    gap = EncodedWriter(tmp_path, "val", n=3, shape=x.shape[1:])
    gap[0], gap[2] = x[0], x[2]
    with pytest.raises(ValueError, match="never written"):
        gap.close()
    assert not (tmp_path / "val_x.bin").exists() and not (tmp_path / "val_offsets.npy").exists()
    with pytest.raises(ValueError, match="expected"):
        EncodedWriter(tmp_path, "test", n=1, shape=(3, 4, 4))[0] = x[0]


def test_offsets_that_do_not_fit_the_file_are_refused(encoded, tmp_path):
    with open(tmp_path / "train_x.bin", "ab") as f:
        f.write(b"extra")
    with pytest.raises(ValueError, match="does not match its offsets"):
        EncodedImages.open(tmp_path, "train")


def test_format_follows_the_threshold():
    assert shards.shard_format(channels=3, width=64, height=64, raw_max_bytes=64 * 64 * 3) == "npy"
    assert shards.shard_format(channels=3, width=65, height=64, raw_max_bytes=64 * 64 * 3) == "encoded"
    assert shards.shard_format(channels=1, width=96, height=96, raw_max_bytes=64 * 64 * 3) == "npy"


# Dataset versions


def _rgb_png(seed: int) -> bytes:
    """A distinct 120x100 colour image: gradients and noise, so resizing has real work to do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:100, 0:120]
    arr = np.stack([(xx * 2 + seed) % 256, (yy * 2) % 256, (xx + yy) % 256], axis=-1)
    arr = np.clip(arr + rng.integers(0, 30, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def colour_project(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    """The project with 2 classes of 9 colour images each; returns it and {sha256: bytes}."""
    originals = {}
    k = 0
    for label in ("cat", "dog"):
        (isolated_files / "pets" / label).mkdir(parents=True)
        for i in range(9):
            k += 1
            data = _rgb_png(k)
            (isolated_files / "pets" / label / f"{i}.png").write_bytes(data)
            originals[hashlib.sha256(data).hexdigest()] = data
    with django_capture_on_commit_callbacks():
        job = services.import_start(project=project, user=admin_user, path=str(isolated_files / "pets"))
    import_run.apply(kwargs={"job_id": job.pk})
    return project, originals


def _create(project, user, capture, *, materialize=True, **kwargs):
    params = {**BIG, "name": "big", "split_seed": 3, "val_percent": 30, **kwargs}
    with capture():
        version = services.dataset_version_create(project=project, user=user, **params)
    if materialize:
        dataset_materialize.apply(kwargs={"version_id": version.pk})
        version.refresh_from_db()
    return version


def _expected(version, split, originals):
    shas = DatasetItem.objects.filter(version=version, split=split).order_by("position")
    return np.stack(
        [
            imaging.preprocess(
                imaging.decode(originals[sha], max_pixels=10**6).image,
                channels=version.channels,
                width=version.width,
                height=version.height,
                resize_mode=version.resize_mode,
                fill_seed=bytes.fromhex(sha),
            )[0]
            for sha in shas.values_list("asset__sha256", flat=True)
        ]
    )


def test_large_images_materialize_as_encoded_shards_equal_to_the_preprocessed_images(
    colour_project, admin_user, django_capture_on_commit_callbacks
):
    project, originals = colour_project
    version = _create(project, admin_user, django_capture_on_commit_callbacks)
    assert version.status == "ready", version.error
    folder = selectors.dataset_shard_dir(version=version)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "encoded"
    assert sorted(manifest["files"]) == sorted(
        f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("x.bin", "offsets.npy", "y.npy")
    )
    assert not list(folder.glob("*_x.npy"))
    for name, info in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == info["sha256"]
    raw_bytes = 0
    for split in ("train", "val"):
        x, y = selectors.dataset_split_arrays(version=version, split=split)
        assert isinstance(x, EncodedImages) and x.shape[1:] == (3, 96, 96) and len(x) == len(y) > 0
        assert np.array_equal(x[:], _expected(version, split, originals))  # lossless, bit for bit
        raw_bytes += x[:].nbytes
    assert sum(info["bytes"] for name, info in manifest["files"].items() if name.endswith(".bin")) < raw_bytes
    x, y = selectors.dataset_split_arrays(version=version, split="test")  # test_percent 0: empty
    assert x.shape == (0, 3, 96, 96) and len(y) == 0
    # The statistics come from the decoded train images, as for npy shards.
    train = selectors.dataset_split_arrays(version=version, split="train")[0][:]
    assert version.stats["mean_brightness"] == round(float(train.astype(np.float64).mean()), 2)
    # The content hash still checks out when the version is frozen.
    services.dataset_version_freeze(version=version, user=admin_user)


def test_the_content_hash_changes_with_the_format(
    colour_project, admin_user, settings, django_capture_on_commit_callbacks
):
    project, _ = colour_project
    encoded = _create(project, admin_user, django_capture_on_commit_callbacks, name="encoded")
    settings.CRUCIBLE_SHARD_RAW_MAX_BYTES = 96 * 96 * 3
    raw = _create(project, admin_user, django_capture_on_commit_callbacks, name="raw")
    assert encoded.content_hash != raw.content_hash and encoded.shard_name != raw.shard_name
    manifest = json.loads((selectors.dataset_shard_dir(version=raw) / "manifest.json").read_text())
    assert manifest["format"] == "npy"
    for split in ("train", "val"):  # the same images either way
        x_raw, y_raw = selectors.dataset_split_arrays(version=raw, split=split)
        x_enc, y_enc = selectors.dataset_split_arrays(version=encoded, split=split)
        assert isinstance(x_raw, np.memmap) and isinstance(x_enc, EncodedImages)
        assert np.array_equal(x_enc[:], x_raw) and np.array_equal(y_enc, y_raw)
    # Each freezes under the threshold it was created with: its hash is recomputed with its format.
    services.dataset_version_freeze(version=raw, user=admin_user)
    settings.CRUCIBLE_SHARD_RAW_MAX_BYTES = 64 * 64 * 3
    services.dataset_version_freeze(version=encoded, user=admin_user)


def test_same_spec_reuses_encoded_shards_without_rebuilding(
    colour_project, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    project, _ = colour_project
    builds = []
    build = services._build_shards
    monkeypatch.setattr(
        services, "_build_shards", lambda version, folder: builds.append(version.pk) or build(version, folder)
    )
    first = _create(project, admin_user, django_capture_on_commit_callbacks, name="first")
    folder = selectors.dataset_shard_dir(version=first)
    stamp = (folder / "train_x.bin").stat().st_mtime_ns
    second = _create(project, admin_user, django_capture_on_commit_callbacks, name="second")
    assert second.status == "ready" and second.shard_name == first.shard_name
    assert builds == [first.pk]  # built once
    assert (folder / "train_x.bin").stat().st_mtime_ns == stamp
    assert second.stats == first.stats


@pytest.fixture
def remote_storage(settings):
    """Storage with no local folder (as S3): workers download shards into their cache and verify them."""
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    assert selectors.storage_root() is None


def test_encoded_shards_download_verified_and_a_corrupted_bin_is_refused(
    remote_storage, colour_project, admin_user, settings, django_capture_on_commit_callbacks
):
    project, originals = colour_project
    version = _create(project, admin_user, django_capture_on_commit_callbacks)
    assert version.status == "ready", version.error
    cache = settings.CRUCIBLE_CACHE_DIR / "shards" / version.content_hash
    assert selectors.dataset_shard_dir(version=version) == cache  # the worker that built them keeps them
    shutil.rmtree(cache)  # another worker: downloads and checks every file
    folder = selectors.dataset_shard_dir(version=version)
    assert (folder / ".verified").exists()
    x, _ = selectors.dataset_split_arrays(version=version, split="train")
    assert np.array_equal(x[:], _expected(version, "train", originals))

    shutil.rmtree(cache)
    name = f"{version.shard_name}/train_x.bin"
    with default_storage.open(name, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    default_storage.delete(name)
    default_storage.save(name, ContentFile(bytes(data)))
    with pytest.raises(Conflict) as caught:
        selectors.dataset_shard_dir(version=version)
    assert caught.value.code == "shard_corrupt" and "train_x.bin" in caught.value.message
    assert not cache.exists() and not list(cache.parent.glob(".download-*"))  # nothing half-written kept
