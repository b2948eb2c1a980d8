"""Training: optimizer and learning-rate schedules, checkpoints, metric logs."""
