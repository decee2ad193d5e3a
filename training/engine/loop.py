"""The training loop over memory-mapped uint8 shards, with exact checkpoints.

Batches are gathered by index straight from the shard (N x C x H x W uint8, usually a memmap), less
the training split's mean when the config asks for one (DIGITS' "Subtract Mean"), times the
network's input scale (1/255), so no data-loader processes and no decoded copy of the data set are
needed (encoded-image shards of large images decode just the batch's rows: curation.shards); with
the "shift" augmentation (the default) each training image is first translated by a
random offset drawn from the run's seeded generator (validation and inference never augment). The
mean is computed once from the training shard, exactly, and kept with the scale in every checkpoint,
so resuming and inference transform inputs exactly as training did. Every epoch writes a checkpoint
holding the model, optimizer and scheduler state and every random state, so a resumed run continues
exactly where the first one stopped, and on CPU a run repeated with the same seed (and the same
thread count) repeats its metrics bit for bit.
"""

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curation.shards import EncodedImages
from training.engine.networks import NETWORKS, build_network, input_scale

# The input scale of format 1 checkpoints, which kept neither a scale nor a mean: 1/255, no mean.
SCALE = 1.0 / 255.0
# Format 2 adds "mean" (the mean subtracted from every input, or None) and "scale" (the factor then
# applied); format 1 checkpoints are read as trained with no mean and a scale of SCALE.
CHECKPOINT_FORMAT = 2
OPTIMIZERS = ("sgd", "adam")
LR_POLICIES = ("fixed", "step")
# DIGITS' "Subtract Mean" choices: the training split's mean image, its mean per channel ("pixel"),
# or nothing. DIGITS defaults to the image; Crucible to nothing, which measured as well on the
# LeNet demo (bench/bench_accuracy.py) and keeps runs recorded before this setting existed valid.
MEAN_SUBTRACTIONS = ("image", "pixel", "none")
# Training-time augmentation, drawn from the run's seeded generator (so CPU runs repeat bit for bit
# and resuming from a checkpoint, which keeps the generator's state, is exact): "shift" translates
# each training image by a random whole number of pixels, up to SHIFT_PIXELS in x and in y
# independently, filling the uncovered border with 0. Validation and inference never augment.
# "shift" is the default for new runs: without it LeNet memorises the 3750-digit demo within 10
# epochs and ends at 0.959-0.962 validation accuracy over seeds 1-5; with it, 0.970-0.976
# (bench/bench_accuracy.py). A configuration recorded without the key trained with "none"
# (training.services reads it so, and a resumed checkpoint keeps the augmentation it started with).
AUGMENTATIONS = ("shift", "none")
SHIFT_PIXELS = 2
MEAN_CHUNK = 4096  # images summed at a time when computing the mean of a (memory-mapped) shard
# ... at most this many bytes of them: an encoded shard decodes each chunk into memory.
MEAN_CHUNK_BYTES = 64 * 1024 * 1024
# Convolutions and max pooling run 1.6-1.7x faster channels-last on CPU (LeNet, one thread: NCHW max
# pooling alone takes a fifth of the step); the values are the same, only the layout differs.
MEMORY_FORMAT = torch.channels_last
PROGRESS_INTERVAL_S = 0.5
STOP_POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes, apart from the data and the seed."""

    network: str = "lenet"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.01
    lr_policy: str = "step"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    mean_subtraction: str = "none"
    augmentation: str = "shift"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> dict[str, str]:
        """Problems with this configuration, by field (empty when it is usable)."""
        problems = {}
        if self.network not in NETWORKS:
            problems["network"] = f"unknown network {self.network!r}; one of {', '.join(NETWORKS)}"
        if not 1 <= self.epochs <= 1000:
            problems["epochs"] = "epochs must be between 1 and 1000"
        if self.batch_size < 1:
            problems["batch_size"] = "batch_size must be at least 1"
        if not self.lr > 0 or not math.isfinite(self.lr):
            problems["lr"] = "lr must be a positive number"
        if self.lr_policy not in LR_POLICIES:
            problems["lr_policy"] = f"unknown lr_policy {self.lr_policy!r}; one of {', '.join(LR_POLICIES)}"
        if self.lr_step_epochs < 1:
            problems["lr_step_epochs"] = "lr_step_epochs must be at least 1"
        if not 0 < self.lr_gamma <= 1:
            problems["lr_gamma"] = "lr_gamma must be in (0, 1]"
        if self.optimizer not in OPTIMIZERS:
            problems["optimizer"] = f"unknown optimizer {self.optimizer!r}; one of {', '.join(OPTIMIZERS)}"
        if not 0 <= self.momentum < 1:
            problems["momentum"] = "momentum must be in [0, 1)"
        if self.weight_decay < 0:
            problems["weight_decay"] = "weight_decay must not be negative"
        if self.mean_subtraction not in MEAN_SUBTRACTIONS:
            problems["mean_subtraction"] = (
                f"unknown mean_subtraction {self.mean_subtraction!r}; one of {', '.join(MEAN_SUBTRACTIONS)}"
            )
        if self.augmentation not in AUGMENTATIONS:
            problems["augmentation"] = f"unknown augmentation {self.augmentation!r}; one of {', '.join(AUGMENTATIONS)}"
        return problems


@dataclass
class TrainData:
    """Train and validation arrays: x is (N, C, H, W) uint8, y is (N,) int64 class indices.

    x is an array (usually a memmap) or, for encoded shards, an `EncodedImages` that decodes the rows
    it is indexed with; the loop only ever indexes it with an integer array or a slice."""

    train_x: np.ndarray | EncodedImages
    train_y: np.ndarray
    val_x: np.ndarray | EncodedImages
    val_y: np.ndarray
    num_classes: int

    @classmethod
    def from_dir(cls, path: Path, *, num_classes: int | None = None) -> "TrainData":
        """Memory-map the `train_*` and `val_*` shards of a materialized dataset folder: `{split}_x.npy`
        arrays, or encoded images (`{split}_x.bin` and `{split}_offsets.npy`) where the folder has them."""
        path = Path(path)
        arrays: dict[str, Any] = {}
        for split in ("train", "val"):
            y = np.load(path / f"{split}_y.npy")
            if (path / f"{split}_x.bin").exists():
                arrays[f"{split}_x"] = EncodedImages.open(path, split)
            else:
                # An empty array cannot be memory-mapped (and costs nothing to load).
                arrays[f"{split}_x"] = np.load(path / f"{split}_x.npy", mmap_mode="r" if len(y) else None)
            arrays[f"{split}_y"] = y.astype(np.int64, copy=False)
        if num_classes is None:
            num_classes = int(max(arrays["train_y"].max(initial=0), arrays["val_y"].max(initial=0))) + 1
        return cls(num_classes=num_classes, **arrays)

    @property
    def shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.train_x.shape
        return c, h, w


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float
    images_per_sec: float  # training images per second of this epoch
    seconds: float  # the whole epoch, validation included


@dataclass
class TrainResult:
    epochs: list[EpochResult] = field(default_factory=list)
    stopped: bool = False  # should_stop() asked to stop before the last epoch
    device: str = ""
    skipped_weights: list[str] = field(default_factory=list)  # fine-tune: keys whose shapes differ


ProgressFn = Callable[[int, int, float], None]
StopFn = Callable[[], bool]
EpochFn = Callable[[EpochResult, Path], None]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("this worker has no CUDA device")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; one of {', '.join(OPTIMIZERS)}")


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if config.lr_policy == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
    if config.lr_policy == "fixed":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown lr_policy {config.lr_policy!r}; one of {', '.join(LR_POLICIES)}")


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # Tensors and plain values only, so that checkpoints load with torch.load(weights_only=True).
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def _restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["generator"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `train` (tensors on the CPU). Loads no code, only tensors and values."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy the weights whose names and shapes match; returns the keys left at their initial values."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(k for k in own if k not in usable)


def compute_mean(x: np.ndarray | EncodedImages, mode: str) -> torch.Tensor | None:
    """The mean `mode` subtracts from inputs drawn from `x` (uint8, N x C x H x W), in pixel units:
    float32 (C, H, W) for "image", (C, 1, 1) for "pixel", None for "none" or an empty `x`.

    Sums are exact integers, so the result does not depend on chunking or thread count."""
    if mode not in MEAN_SUBTRACTIONS:
        raise ValueError(f"unknown mean_subtraction {mode!r}; one of {', '.join(MEAN_SUBTRACTIONS)}")
    if mode == "none" or len(x) == 0:
        return None
    total = np.zeros(x.shape[1:], dtype=np.int64)
    chunk = max(1, min(MEAN_CHUNK, MEAN_CHUNK_BYTES // max(1, math.prod(x.shape[1:]))))
    for start in range(0, len(x), chunk):
        total += np.asarray(x[start : start + chunk]).sum(axis=0, dtype=np.int64)
    count = len(x)
    if mode == "pixel":
        total = total.sum(axis=(1, 2), keepdims=True)
        count *= x.shape[2] * x.shape[3]
    return torch.from_numpy((total / count).astype(np.float32))


def shift_batch(x: np.ndarray, generator: torch.Generator, pixels: int = SHIFT_PIXELS) -> np.ndarray:
    """Each image of `x` (uint8, N x C x H x W) translated by its own random offset of -pixels to
    +pixels in y and in x (drawn from `generator`, two integers per image), the uncovered border
    filled with 0. Vectorised: pad once, then gather every crop with one advanced index."""
    n, c, h, w = x.shape
    if n == 0 or pixels == 0:
        return x
    padded = F.pad(torch.from_numpy(np.ascontiguousarray(x)), (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator)
    rows = offsets[:, :1] + torch.arange(h)  # (N, H): the rows of the padded image each crop takes
    cols = offsets[:, 1:] + torch.arange(w)  # (N, W)
    out = padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return out.numpy()


def to_input(
    x: np.ndarray, device: torch.device, mean: torch.Tensor | None = None, scale: float = SCALE
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 on `device`: (x - mean) * scale, as Caffe's data transformer
    does (the conversion happens on the device). `mean` (pixel units, broadcastable to (C, H, W)) must
    already be on `device`; None subtracts nothing."""
    if not (x.flags.c_contiguous and x.flags.writeable):
        x = np.array(x)  # a slice of a read-only memmap: torch wants its own writable copy
    out = torch.from_numpy(x).to(device, non_blocking=True).float()
    if mean is not None:
        out.sub_(mean)
    out.mul_(scale)
    return out.contiguous(memory_format=MEMORY_FORMAT)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: np.ndarray | EncodedImages,
    y: np.ndarray,
    *,
    device: torch.device,
    batch_size: int = 512,
    mean: torch.Tensor | None = None,
    scale: float = SCALE,
) -> tuple[float | None, float | None]:
    """Mean cross-entropy loss and accuracy over (x, y); (None, None) when there is nothing to evaluate."""
    if len(y) == 0:
        return None, None
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(y), batch_size):
        xb = to_input(x[start : start + batch_size], device, mean, scale)
        yb = torch.from_numpy(np.array(y[start : start + batch_size])).to(device)
        out = model(xb)
        loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    return float(loss_sum) / len(y), int(correct) / len(y)


def train(
    *,
    data: TrainData,
    config: TrainConfig,
    seed: int,
    checkpoint_dir: Path,
    device: str = "auto",
    init_from: Path | None = None,
    resume_from: Path | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    on_epoch: EpochFn | None = None,
    deterministic: bool = True,
) -> TrainResult:
    """Train `config.network` on `data`, writing `checkpoint_dir/epoch-N.pt` after every epoch.

    init_from: a checkpoint whose weights start this run (fine-tuning: fresh optimizer and schedule).
    resume_from: this run's own checkpoint; training continues after its epoch with every state restored
        (its input transform included: a run resumes with the mean, scale and augmentation it started
        with).
    on_progress(done_batches, total_batches, images_per_sec): counts over the whole run, at most ~2x/s.
    should_stop(): polled at most every 0.5 s; when true the loop stops after the current batch.
    on_epoch(result, checkpoint_path): after each epoch's checkpoint is written.
    The caller sets torch's thread count.
    """
    problems = config.check()
    if problems:
        raise ValueError("; ".join(problems.values()))
    dev = resolve_device(device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    if deterministic and dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    try:
        return _train(
            data=data,
            config=config,
            seed=seed,
            checkpoint_dir=Path(checkpoint_dir),
            dev=dev,
            init_from=init_from,
            resume_from=resume_from,
            on_progress=on_progress,
            should_stop=should_stop,
            on_epoch=on_epoch,
        )
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        torch.backends.cudnn.benchmark = was_benchmark


def _train(
    *,
    data: TrainData,
    config: TrainConfig,
    seed: int,
    checkpoint_dir: Path,
    dev: torch.device,
    init_from: Path | None,
    resume_from: Path | None,
    on_progress: ProgressFn | None,
    should_stop: StopFn | None,
    on_epoch: EpochFn | None,
) -> TrainResult:
    channels, height, width = data.shape
    n = len(data.train_y)
    if n == 0:
        raise ValueError("the training split is empty")
    meta = {
        "network": config.network,
        "channels": channels,
        "height": height,
        "width": width,
        "num_classes": data.num_classes,
    }
    seed_everything(seed)
    model = build_network(
        config.network, channels=channels, height=height, width=width, num_classes=data.num_classes
    ).to(dev, memory_format=MEMORY_FORMAT)
    optimizer = make_optimizer(config, model.parameters())
    scheduler = make_scheduler(config, optimizer)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult(device=device_name(dev))
    start_epoch = 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        if ckpt["meta"] != meta:
            raise ValueError(f"checkpoint {Path(resume_from).name} is for {ckpt['meta']}, not {meta}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _restore_rng(ckpt["rng"], generator)
        start_epoch = int(ckpt["epoch"])
        # A run resumes with the input transform it started with (format 1: no mean, 1/255).
        mean, scale = ckpt.get("mean"), float(ckpt.get("scale", SCALE))
        # ... and with its augmentation (checkpoints from before the setting: none).
        augmentation = ckpt.get("config", {}).get("augmentation", "none")
    else:
        if init_from is not None:
            ckpt = load_checkpoint(init_from)
            if ckpt["meta"]["network"] != config.network:
                raise ValueError(f"cannot start a {config.network} from {ckpt['meta']['network']} weights")
            result.skipped_weights = load_weights(model, ckpt["model"])
        # Fine-tuning too takes the mean of its own training data, as DIGITS does.
        mean, scale = compute_mean(data.train_x, config.mean_subtraction), input_scale(config.network)
        augmentation = config.augmentation
    mean_on_device = None if mean is None else mean.to(dev)

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    bs = config.batch_size
    batches_per_epoch = math.ceil(n / bs)
    total_batches = batches_per_epoch * config.epochs
    done = start_epoch * batches_per_epoch
    train_x, train_y = data.train_x, data.train_y
    run_started = time.monotonic()
    done_at_start = done
    next_progress = next_stop_poll = 0.0

    for epoch in range(start_epoch + 1, config.epochs + 1):
        epoch_started = time.perf_counter()
        learning_rate = optimizer.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(n, generator=generator).numpy()
        loss_sum = torch.zeros((), device=dev)
        for b in range(batches_per_epoch):
            # Sorted indices read the memmap front to back within a batch; order inside a batch does
            # not change the mean gradient.
            idx = np.sort(order[b * bs : (b + 1) * bs])
            xb_raw = train_x[idx]
            if augmentation == "shift":
                xb_raw = shift_batch(xb_raw, generator, SHIFT_PIXELS)
            xb = to_input(xb_raw, dev, mean_on_device, scale)
            yb = torch.from_numpy(train_y[idx]).to(dev, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum.add_(loss.detach(), alpha=len(idx))
            done += 1
            now = time.monotonic()
            if on_progress is not None and now >= next_progress:
                next_progress = now + PROGRESS_INTERVAL_S
                elapsed = now - run_started
                rate = (done - done_at_start) * bs / elapsed if elapsed > 0 else 0.0
                on_progress(done, total_batches, rate)
            if should_stop is not None and now >= next_stop_poll:
                next_stop_poll = now + STOP_POLL_INTERVAL_S
                if should_stop():
                    result.stopped = True
                    return result
        train_seconds = time.perf_counter() - epoch_started
        train_loss = float(loss_sum) / n
        val_loss, val_accuracy = evaluate(
            model, data.val_x, data.val_y, device=dev, batch_size=max(bs, 512), mean=mean_on_device, scale=scale
        )
        scheduler.step()
        epoch_result = EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            learning_rate=learning_rate,
            images_per_sec=n / train_seconds if train_seconds > 0 else 0.0,
            seconds=time.perf_counter() - epoch_started,
        )
        path = checkpoint_dir / f"epoch-{epoch}.pt"
        _save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "meta": meta,
                "mean": mean,
                "scale": scale,
                "config": {**config.to_dict(), "augmentation": augmentation},  # what this run did
                "seed": seed,
                "metrics": dataclasses.asdict(epoch_result),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(generator),
            },
            path,
        )
        result.epochs.append(epoch_result)
        if on_epoch is not None:
            on_epoch(epoch_result, path)
    return result
