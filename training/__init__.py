"""Training code: data preparation and the training loops of the three models."""
