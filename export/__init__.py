"""The ONNX side of nst-engine: export the feature network, validate it, run it with ONNX Runtime."""
