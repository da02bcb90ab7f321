"""Training helpers: distributed setup, optimiser and schedule, checkpoints, logging, inference."""
