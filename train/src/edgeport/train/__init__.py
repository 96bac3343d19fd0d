"""edgeport-train: models, data, training loop and safetensors checkpoints."""
