"""Training on Ray Train (loop, optimiser, checkpoints) and its plain-PyTorch engine."""
