"""nst-engine: neural style transfer (Gatys et al. 2016) with ONNX Runtime targets and torch autograd."""

__version__ = "0.1.0"
