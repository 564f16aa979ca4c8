"""Training: the fit loop and cross-validation, checkpoints, scoring."""
