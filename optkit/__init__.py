"""optkit: turn a trained PyTorch model into deploy artifacts and measure what every step changed.

Importing this package is cheap: no torch, onnxruntime or other heavy backend is imported here.
"""
__version__ = "0.1.0"


def load(path, threads: int = 0):
    """Open an artifact for inference on its own backend; see ``optkit.api``."""
    from optkit.api import load as _load

    return _load(path, threads)
