"""Plain PyTorch: networks, the training loop, checkpoints and inference. No Django here."""

from training.engine.inference import Predictor
from training.engine.loop import (
    LR_POLICIES,
    OPTIMIZERS,
    SCALE,
    EpochResult,
    TrainConfig,
    TrainData,
    TrainResult,
    load_checkpoint,
    train,
)
from training.engine.networks import NETWORKS, build_network

__all__ = [
    "LR_POLICIES",
    "NETWORKS",
    "OPTIMIZERS",
    "SCALE",
    "EpochResult",
    "Predictor",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "build_network",
    "load_checkpoint",
    "train",
]
