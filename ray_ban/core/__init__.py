"""Pure PyTorch: one generation's engine, losses, metrics, precision, and the chain runner."""
