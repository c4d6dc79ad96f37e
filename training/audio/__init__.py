"""Audio tagging models (PANNs) and their conversion to ONNX."""
