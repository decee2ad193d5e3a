"""Predictions from a checkpoint, with the same input transform as training (its mean and scale)."""

from pathlib import Path

import numpy as np
import torch

from training.engine.loop import MEMORY_FORMAT, SCALE, load_checkpoint, resolve_device, to_input
from training.engine.networks import build_network


class Predictor:
    """A trained network loaded from a checkpoint written by `training.engine.loop.train`."""

    def __init__(self, checkpoint: dict, *, device: str = "cpu"):
        self.meta = dict(checkpoint["meta"])
        self.epoch = int(checkpoint["epoch"])
        self.device = resolve_device(device)
        # Initial weights are overwritten at once; fork the RNG so building does not move the caller's.
        with torch.random.fork_rng(devices=[]):
            model = build_network(
                self.meta["network"],
                channels=self.meta["channels"],
                height=self.meta["height"],
                width=self.meta["width"],
                num_classes=self.meta["num_classes"],
            )
        model.load_state_dict(checkpoint["model"])
        self.model = model.to(self.device, memory_format=MEMORY_FORMAT).eval()
        # The transform training applied: (x - mean) * scale; format 1 checkpoints: no mean, 1/255.
        mean = checkpoint.get("mean")
        self.mean = None if mean is None else mean.to(self.device)
        self.scale = float(checkpoint.get("scale", SCALE))

    @classmethod
    def load(cls, path: Path, *, device: str = "cpu") -> "Predictor":
        return cls(load_checkpoint(path), device=device)

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Class probabilities, (N, num_classes) float32, for uint8 images shaped (N, C, H, W)."""
        expected = (self.meta["channels"], self.meta["height"], self.meta["width"])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected or x.dtype != np.uint8:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"expected uint8 images shaped (N, {shape}), got {x.dtype} {tuple(x.shape)}")
        out = []
        for i in range(0, len(x), batch_size):
            inputs = to_input(x[i : i + batch_size], self.device, self.mean, self.scale)
            out.append(torch.softmax(self.model(inputs), dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, self.meta["num_classes"]), dtype=np.float32)
        return np.concatenate(out)
