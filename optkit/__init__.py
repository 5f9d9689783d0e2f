"""optkit: turn a trained PyTorch model into deploy artifacts and measure what every step changed.

Importing this package is cheap: no torch, onnxruntime or other heavy backend is imported here.
"""
from optkit._version import __version__  # noqa: F401


def load(path, threads: int = 0):
    """Open an artifact for inference on its own backend; see ``optkit.api``."""
    from optkit.api import load as _load

    return _load(path, threads)


def compile(model, *, dynamic=None, **options):
    """``torch.compile(model, backend="optkit", options=options)``: see ``optkit.torch_backend``."""
    from optkit.torch_backend import compile as _compile

    return _compile(model, dynamic=dynamic, **options)
