"""One training run on Ray Train: the driver, the worker function, and the plain-PyTorch epoch, step,
optimiser and checkpoints they use."""
