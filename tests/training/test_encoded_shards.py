"""The training engine over encoded-image shards: the same numbers as over npy shards of the same data."""

import dataclasses

import numpy as np
import pytest
import torch

from curation.shards import EncodedImages, write_encoded
from training.engine import TrainConfig, TrainData, load_checkpoint, loop, train
from training.engine.loop import compute_mean, evaluate


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def metrics(result):
    return [dataclasses.astuple(e)[:5] for e in result.epochs]  # epoch, losses, accuracy, lr (not timings)


def _folders(tmp_path, splits):
    """The same splits written as npy shards and as encoded shards; returns both folders."""
    npy, enc = tmp_path / "npy", tmp_path / "encoded"
    for folder in (npy, enc):
        folder.mkdir()
    for split, (x, y) in splits.items():
        np.save(npy / f"{split}_x.npy", x)
        write_encoded(enc, split, x)
        for folder in (npy, enc):
            np.save(folder / f"{split}_y.npy", y)
    return npy, enc


def _colour_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """96x96 RGB images whose class (0-2) is the channel that carries a bright square."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 3, 96, 96), dtype=np.uint8)
    for i, label in enumerate(y):
        r, c = rng.integers(0, 60, 2)
        x[i, label, r : r + 36, c : c + 36] = rng.integers(150, 256)
    return x, y


def test_encoded_and_npy_shards_of_the_same_digits_train_to_the_same_numbers(digits, tmp_path):
    x, y = digits
    npy, enc = _folders(tmp_path, {"train": (x[:240], y[:240]), "val": (x[240:320], y[240:320])})
    from_npy = TrainData.from_dir(npy, num_classes=10)
    from_enc = TrainData.from_dir(enc, num_classes=10)
    assert isinstance(from_enc.train_x, EncodedImages) and isinstance(from_npy.train_x, np.memmap)
    assert from_enc.shape == from_npy.shape == (1, 28, 28)
    config = TrainConfig(epochs=2, batch_size=32, mean_subtraction="image", augmentation="shift")
    a = train(data=from_npy, config=config, seed=7, checkpoint_dir=tmp_path / "a", device="cpu")
    b = train(data=from_enc, config=config, seed=7, checkpoint_dir=tmp_path / "b", device="cpu")
    assert metrics(a) == metrics(b) and len(a.epochs) == 2 and a.epochs[-1].val_loss is not None
    wa, wb = (load_checkpoint(tmp_path / run / "epoch-2.pt") for run in ("a", "b"))
    assert torch.equal(wa["mean"], wb["mean"])
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])


def test_large_colour_images_train_from_encoded_shards_as_from_npy(tmp_path):
    x, y = _colour_set(56, seed=1)
    npy, enc = _folders(tmp_path, {"train": (x[:40], y[:40]), "val": (x[40:], y[40:])})
    config = TrainConfig(network="lenet", epochs=1, batch_size=16, mean_subtraction="pixel")
    a = train(data=TrainData.from_dir(npy), config=config, seed=3, checkpoint_dir=tmp_path / "a", device="cpu")
    b = train(data=TrainData.from_dir(enc), config=config, seed=3, checkpoint_dir=tmp_path / "b", device="cpu")
    assert metrics(a) == metrics(b) and np.isfinite(a.epochs[0].train_loss)


def test_training_decodes_a_batch_at_a_time_never_the_whole_split(digits, tmp_path, monkeypatch):
    x, y = digits
    _, enc = _folders(tmp_path, {"train": (x[:200], y[:200]), "val": (x[200:260], y[200:260])})
    data = TrainData.from_dir(enc, num_classes=10)
    sizes: list[int] = []
    decode = data.train_x._decode_rows
    monkeypatch.setattr(data.train_x, "_decode_rows", lambda rows: sizes.append(len(rows)) or decode(rows))
    monkeypatch.setattr(loop, "MEAN_CHUNK_BYTES", 50 * 28 * 28)  # the mean too reads 50 images at a time
    config = TrainConfig(epochs=1, batch_size=32, mean_subtraction="image")
    train(data=data, config=config, seed=1, checkpoint_dir=tmp_path / "run", device="cpu")
    assert sum(sizes) == 200 + 200  # the mean's pass, then one epoch
    assert max(sizes) <= 50


def test_mean_and_evaluation_over_encoded_images_equal_those_over_the_array(digits, tmp_path, monkeypatch):
    x, y = digits
    write_encoded(tmp_path, "val", x[:300])
    images = EncodedImages.open(tmp_path, "val")
    for mode in ("image", "pixel"):
        expected = compute_mean(x[:300], mode)
        monkeypatch.setattr(loop, "MEAN_CHUNK_BYTES", 7 * 28 * 28)
        assert torch.equal(compute_mean(images, mode), expected)
        monkeypatch.undo()
        assert torch.equal(compute_mean(images, mode), expected)
    model = loop.build_network("lenet", channels=1, height=28, width=28, num_classes=10)
    device = torch.device("cpu")
    on_array = evaluate(model, x[:300], y[:300], device=device, batch_size=64)
    on_encoded = evaluate(model, images, y[:300], device=device, batch_size=64)
    assert on_array == on_encoded and on_array[0] is not None
