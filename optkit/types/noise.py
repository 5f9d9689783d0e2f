"""Third-party import noise kept off the user's screen.

Importing transformers pulls in torchao, which logs "Failed to load ....so" for every optional kernel library it
cannot load here, and torch logs a deprecation line per Enum that torchao registers with ``_pytree``; libraries add
FutureWarnings and progress bars of their own. None of it is about the user's model, and it came before optkit's
own lines on every command. ``silence_third_party()`` sets those loggers to errors only, hides warnings raised
from third-party modules and turns off Hugging Face's progress bars, before anything heavy is imported.
``OPTKIT_DEBUG=1`` leaves everything as the libraries set it. Standard library only: the CLI calls this first.
"""
from __future__ import annotations

import logging
import os
import warnings

# loggers that speak at import time, not about the model being worked on
IMPORT_LOGGERS = ("torchao", "torch.utils._pytree", "torch._subclasses", "torch.distributed", "transformers",
                  "huggingface_hub", "datasets", "nncf", "tensorflow", "absl", "jax")
# modules whose warnings are library chatter (optkit's own warnings are its 'warning:' lines, never these)
THIRD_PARTY = (r"(torch|torchao|torchvision|transformers|huggingface_hub|tokenizers|onnx|onnxscript|onnxruntime|"
               r"onnxslim|onnxsim|nncf|openvino|neural_compressor|timm|accelerate|tqdm|sentence_transformers|"
               r"litert_torch|ai_edge_litert|ai_edge_quantizer|tensorflow|jax|ray|pydantic|google)(\.|$)")


def debugging() -> bool:
    return bool(os.environ.get("OPTKIT_DEBUG"))


def silence_third_party() -> None:
    """Quiet what libraries print when imported (see the module doc); a no-op under ``OPTKIT_DEBUG``."""
    if debugging():
        return
    for name in IMPORT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.ERROR:
            logger.setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=THIRD_PARTY)
    warnings.filterwarnings("ignore", message=r".*_pytree.*")
    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TF_CPP_MIN_LOG_LEVEL", "3"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(var, value)
