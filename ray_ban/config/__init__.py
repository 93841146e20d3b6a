"""Search spaces, recipes and search specs as plain data: no torch, no Ray."""
