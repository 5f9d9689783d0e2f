"""optkit: turn a trained PyTorch model into deploy artifacts and measure what every step changed.

Importing this package is cheap: no torch, onnxruntime or other heavy backend is imported here.
"""
__version__ = "0.1.0"
