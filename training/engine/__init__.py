"""Plain PyTorch: networks, the training loop, checkpoints and inference. No Django here."""
