"""edgeport-export: ONNX and TensorRT export gated by parity checks."""
