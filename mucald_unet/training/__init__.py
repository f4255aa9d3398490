"""Training: data sampling, augmentation, losses, validation, checkpoints, logs and the round loop."""
