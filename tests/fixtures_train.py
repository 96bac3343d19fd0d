"""Session fixtures for training: filled in by the train work."""
