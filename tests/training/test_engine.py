"""The PyTorch engine on its own: networks, reproducibility, exact resume, schedules, inference."""

import dataclasses

import numpy as np
import pytest
import torch

from training.engine import Predictor, TrainConfig, TrainData, build_network, load_checkpoint, loop, train
from training.engine.loop import compute_mean, shift_batch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def metrics(result):
    return [dataclasses.astuple(e)[:5] for e in result.epochs]  # epoch, losses, accuracy, lr (not timings)


def test_lenet_fits_any_size_and_channels():
    for channels, size in [(1, 28), (3, 32), (1, 64), (3, 100)]:
        net = build_network("lenet", channels=channels, height=size, width=size, num_classes=7)
        assert net(torch.zeros(2, channels, size, size)).shape == (2, 7)
    conv_channels = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv_channels == [20, 50]


def test_resnet18_adapts_stem_to_small_grayscale_images():
    net = build_network("resnet18", channels=1, height=28, width=28, num_classes=10)
    assert net.conv1.in_channels == 1 and net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    big = build_network("resnet18", channels=3, height=96, width=96, num_classes=4)
    assert big.conv1.kernel_size == (7, 7)


def test_unknown_network_lists_the_known_ones():
    with pytest.raises(ValueError, match="lenet, resnet18"):
        build_network("alexnet", channels=1, height=28, width=28, num_classes=10)


def test_same_seed_gives_identical_metrics_and_weights(small_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=32)
    a = train(data=small_data, config=config, seed=11, checkpoint_dir=tmp_path / "a", device="cpu")
    b = train(data=small_data, config=config, seed=11, checkpoint_dir=tmp_path / "b", device="cpu")
    c = train(data=small_data, config=config, seed=12, checkpoint_dir=tmp_path / "c", device="cpu")
    assert metrics(a) == metrics(b)
    assert metrics(a) != metrics(c)
    wa = load_checkpoint(tmp_path / "a" / "epoch-2.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "epoch-2.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_from_checkpoint_continues_exactly(small_data, tmp_path, optimizer):
    config = TrainConfig(
        epochs=3,
        batch_size=32,
        optimizer=optimizer,
        lr=0.01 if optimizer == "sgd" else 0.001,
        lr_policy="step",
        lr_step_epochs=1,
        lr_gamma=0.5,
        weight_decay=1e-4,
    )
    full = train(data=small_data, config=config, seed=5, checkpoint_dir=tmp_path / "full", device="cpu")
    resumed = train(
        data=small_data,
        config=config,
        seed=5,
        checkpoint_dir=tmp_path / "resumed",
        device="cpu",
        resume_from=tmp_path / "full" / "epoch-1.pt",
    )
    assert [e.epoch for e in resumed.epochs] == [2, 3]
    assert metrics(resumed) == metrics(full)[1:]


def test_checkpoint_holds_everything_to_resume(small_data, tmp_path):
    train(data=small_data, config=TrainConfig(epochs=1), seed=3, checkpoint_dir=tmp_path, device="cpu")
    ckpt = load_checkpoint(tmp_path / "epoch-1.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "meta", "config", "seed", "mean"} <= set(ckpt)
    assert ckpt["format"] == 2
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python", "generator"}
    assert ckpt["meta"] == {"network": "lenet", "channels": 1, "height": 28, "width": 28, "num_classes": 10}


def test_step_policy_lowers_the_rate_every_n_epochs(small_data, tmp_path):
    config = TrainConfig(epochs=5, batch_size=64, lr=0.02, lr_policy="step", lr_step_epochs=2, lr_gamma=0.5)
    result = train(data=small_data, config=config, seed=1, checkpoint_dir=tmp_path, device="cpu")
    assert [e.learning_rate for e in result.epochs] == pytest.approx([0.02, 0.02, 0.01, 0.01, 0.005])
    fixed = train(
        data=small_data,
        config=dataclasses.replace(config, epochs=2, lr_policy="fixed"),
        seed=1,
        checkpoint_dir=tmp_path / "fixed",
        device="cpu",
    )
    assert [e.learning_rate for e in fixed.epochs] == pytest.approx([0.02, 0.02])


def test_callbacks_report_progress_and_stop_after_a_batch(small_data, tmp_path):
    progress, polls = [], []

    def should_stop():
        polls.append(1)
        return len(polls) >= 2

    import training.engine.loop as loop

    loop_interval = loop.STOP_POLL_INTERVAL_S
    loop.STOP_POLL_INTERVAL_S = 0.0
    try:
        result = train(
            data=small_data,
            config=TrainConfig(epochs=3, batch_size=16),
            seed=1,
            checkpoint_dir=tmp_path,
            device="cpu",
            on_progress=lambda d, t, r: progress.append((d, t)),
            should_stop=should_stop,
        )
    finally:
        loop.STOP_POLL_INTERVAL_S = loop_interval
    assert result.stopped and result.epochs == []
    assert progress[0] == (1, 3 * 15)
    assert not list(tmp_path.glob("*.pt"))


def test_epoch_callback_gets_each_checkpoint(small_data, tmp_path):
    seen = []
    train(
        data=small_data,
        config=TrainConfig(epochs=2),
        seed=1,
        checkpoint_dir=tmp_path,
        device="cpu",
        on_epoch=lambda result, path: seen.append((result.epoch, path.name, path.exists())),
    )
    assert seen == [(1, "epoch-1.pt", True), (2, "epoch-2.pt", True)]


def test_fine_tune_takes_matching_weights_only(small_data, tmp_path):
    train(data=small_data, config=TrainConfig(epochs=1), seed=1, checkpoint_dir=tmp_path / "a", device="cpu")
    five = TrainData(
        train_x=small_data.train_x,
        train_y=small_data.train_y % 5,
        val_x=small_data.val_x,
        val_y=small_data.val_y % 5,
        num_classes=5,
    )
    result = train(
        data=five,
        config=TrainConfig(epochs=1),
        seed=2,
        checkpoint_dir=tmp_path / "b",
        device="cpu",
        init_from=tmp_path / "a" / "epoch-1.pt",
    )
    assert result.skipped_weights == ["classifier.3.bias", "classifier.3.weight"]


def test_defaults_are_digits_lenet_solver():
    config = TrainConfig()
    assert (config.network, config.epochs, config.batch_size, config.optimizer) == ("lenet", 30, 64, "sgd")
    assert (config.lr, config.momentum, config.lr_policy, config.lr_step_epochs, config.lr_gamma) == (
        0.01,
        0.9,
        "step",
        10,
        0.1,
    )
    assert config.mean_subtraction == "none"
    assert config.augmentation == "shift"  # bench/bench_accuracy.py: >= 0.96 on seeds 1-5 only with it


def test_mean_is_exact_whatever_the_chunking(digits, monkeypatch):
    x = digits[0][:1000]
    image = compute_mean(x, "image")
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert torch.equal(image, torch.from_numpy(x.astype(np.float64).mean(0).astype(np.float32)))
    pixel = compute_mean(x, "pixel")
    assert pixel.shape == (1, 1, 1) and float(pixel) == pytest.approx(float(x.mean()), rel=1e-6)
    assert compute_mean(x, "none") is None and compute_mean(x[:0], "image") is None
    monkeypatch.setattr(loop, "MEAN_CHUNK", 7)
    assert torch.equal(compute_mean(x, "image"), image)
    colour = np.stack([x[:, 0], x[:, 0] // 2, x[:, 0] // 4], axis=1)
    assert compute_mean(colour, "pixel").shape == (3, 1, 1) and compute_mean(colour, "image").shape == (3, 28, 28)


@pytest.mark.parametrize("mode", ["image", "pixel", "none"])
def test_checkpoint_keeps_the_training_mean_and_inference_applies_it(small_data, tmp_path, mode):
    config = TrainConfig(epochs=2, mean_subtraction=mode)
    result = train(data=small_data, config=config, seed=1, checkpoint_dir=tmp_path, device="cpu")
    ckpt = load_checkpoint(tmp_path / "epoch-2.pt")
    expected = compute_mean(small_data.train_x, mode)
    assert (ckpt["mean"] is None) if expected is None else torch.equal(ckpt["mean"], expected)
    # The predictor transforms inputs exactly as validation did: the same accuracy, image for image.
    probs = Predictor(ckpt).predict_proba(np.asarray(small_data.val_x))
    assert (probs.argmax(1) == small_data.val_y).mean() == result.epochs[-1].val_accuracy


def test_mean_subtraction_changes_training(small_data, tmp_path):
    runs = {
        mode: train(
            data=small_data,
            config=TrainConfig(epochs=1, mean_subtraction=mode),
            seed=1,
            checkpoint_dir=tmp_path / mode,
            device="cpu",
        )
        for mode in ("image", "none")
    }
    assert metrics(runs["image"]) != metrics(runs["none"])


def test_format_1_checkpoint_without_a_mean_resumes_and_predicts_without_one(small_data, tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, mean_subtraction="none", augmentation="none")
    full = train(data=small_data, config=config, seed=4, checkpoint_dir=tmp_path / "full", device="cpu")
    old = load_checkpoint(tmp_path / "full" / "epoch-1.pt")
    del old["mean"]
    old["format"] = 1
    old["config"].pop("mean_subtraction")
    old["config"].pop("augmentation")
    torch.save(old, tmp_path / "old.pt")
    assert Predictor.load(tmp_path / "old.pt").mean is None
    # Even under today's default config, the run goes on as it started: without a mean.
    resumed = train(
        data=small_data,
        config=TrainConfig(epochs=3, batch_size=32),
        seed=4,
        checkpoint_dir=tmp_path / "resumed",
        device="cpu",
        resume_from=tmp_path / "old.pt",
    )
    assert metrics(resumed) == metrics(full)[1:]
    assert load_checkpoint(tmp_path / "resumed" / "epoch-3.pt")["config"]["augmentation"] == "none"


def test_predictor_gives_probabilities_with_the_training_scale(small_data, tmp_path):
    train(data=small_data, config=TrainConfig(epochs=2), seed=1, checkpoint_dir=tmp_path, device="cpu")
    predictor = Predictor.load(tmp_path / "epoch-2.pt")
    probs = predictor.predict_proba(np.asarray(small_data.val_x[:10]))
    assert probs.shape == (10, 10)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict_proba(np.zeros((1, 3, 28, 28), dtype=np.uint8))


def test_config_check_names_each_problem():
    problems = TrainConfig(
        network="x", epochs=0, batch_size=0, lr=0, optimizer="rmsprop", mean_subtraction="median", augmentation="flip"
    ).check()
    assert set(problems) == {"network", "epochs", "batch_size", "lr", "optimizer", "mean_subtraction", "augmentation"}
    assert "shift, none" in problems["augmentation"]


# Augmentation


def test_shift_translates_each_image_by_at_most_two_pixels_with_zero_fill(digits):
    x = np.ascontiguousarray(digits[0][:200])
    shifted = shift_batch(x, torch.Generator().manual_seed(3))
    assert shifted.dtype == np.uint8 and shifted.shape == x.shape
    assert np.array_equal(shifted, shift_batch(x, torch.Generator().manual_seed(3)))  # the generator decides
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    seen = set()
    for image, out in zip(padded, shifted, strict=True):
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(image[:, dy : dy + 28, dx : dx + 28], out)
        ]
        assert matches  # a crop of the zero-padded image: a translation by dy-2, dx-2 with zeros let in
        seen.update(matches)
    assert len(seen) == 25  # every offset from -2 to +2 in both directions occurs
    assert np.array_equal(shift_batch(x, torch.Generator(), pixels=0), x)
    assert shift_batch(x[:0], torch.Generator()).shape == (0, 1, 28, 28)
    colour = np.stack([x[:, 0], x[:, 0] // 2, x[:, 0] // 4], axis=1)
    out = shift_batch(colour, torch.Generator().manual_seed(1))
    # One offset per image, the same for all its channels.
    assert np.array_equal(out[:, 0] // 2, out[:, 1]) and np.array_equal(out[:, 0] // 4, out[:, 2])


def test_shift_changes_training_batches_but_not_validation(small_data, tmp_path, monkeypatch):
    shapes = []
    real = loop.shift_batch

    def spy(x, generator, pixels):
        shapes.append(x.shape[0])
        return real(x, generator, pixels)

    monkeypatch.setattr(loop, "shift_batch", spy)
    config = TrainConfig(epochs=2, batch_size=32)
    shifted = train(data=small_data, config=config, seed=1, checkpoint_dir=tmp_path / "shift", device="cpu")
    assert shapes == [32] * 7 + [16] + [32] * 7 + [16]  # every training batch (240 images), nothing else
    shapes.clear()
    plain = train(
        data=small_data,
        config=dataclasses.replace(config, augmentation="none"),
        seed=1,
        checkpoint_dir=tmp_path / "none",
        device="cpu",
    )
    assert shapes == [] and metrics(shifted) != metrics(plain)
    # Validation saw the images unshifted: a predictor (which never augments) gets the same accuracy.
    probs = Predictor.load(tmp_path / "shift" / "epoch-2.pt").predict_proba(np.asarray(small_data.val_x))
    assert (probs.argmax(1) == small_data.val_y).mean() == shifted.epochs[-1].val_accuracy
    assert load_checkpoint(tmp_path / "shift" / "epoch-2.pt")["config"]["augmentation"] == "shift"


def test_shift_is_reproducible_per_seed(small_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=32, augmentation="shift")
    a = train(data=small_data, config=config, seed=11, checkpoint_dir=tmp_path / "a", device="cpu")
    b = train(data=small_data, config=config, seed=11, checkpoint_dir=tmp_path / "b", device="cpu")
    c = train(data=small_data, config=config, seed=12, checkpoint_dir=tmp_path / "c", device="cpu")
    assert metrics(a) == metrics(b) and metrics(a) != metrics(c)
    wa = load_checkpoint(tmp_path / "a" / "epoch-2.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "epoch-2.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_with_shift_continues_exactly(small_data, tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, augmentation="shift", lr_step_epochs=1, lr_gamma=0.5)
    full = train(data=small_data, config=config, seed=5, checkpoint_dir=tmp_path / "full", device="cpu")
    resumed = train(
        data=small_data,
        config=config,
        seed=5,
        checkpoint_dir=tmp_path / "resumed",
        device="cpu",
        resume_from=tmp_path / "full" / "epoch-1.pt",
    )
    assert [e.epoch for e in resumed.epochs] == [2, 3]
    assert metrics(resumed) == metrics(full)[1:]
    wf = load_checkpoint(tmp_path / "full" / "epoch-3.pt")["model"]
    wr = load_checkpoint(tmp_path / "resumed" / "epoch-3.pt")["model"]
    assert all(torch.equal(wf[k], wr[k]) for k in wf)


def test_a_run_resumes_with_the_augmentation_it_started_with(small_data, tmp_path):
    plain = TrainConfig(epochs=2, batch_size=32, augmentation="none")
    full = train(data=small_data, config=plain, seed=2, checkpoint_dir=tmp_path / "full", device="cpu")
    resumed = train(
        data=small_data,
        config=dataclasses.replace(plain, augmentation="shift"),
        seed=2,
        checkpoint_dir=tmp_path / "resumed",
        device="cpu",
        resume_from=tmp_path / "full" / "epoch-1.pt",
    )
    assert metrics(resumed) == metrics(full)[1:]
