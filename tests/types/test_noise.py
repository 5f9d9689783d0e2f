"""Third-party import noise stays off the user's screen, unless OPTKIT_DEBUG asks for it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

# what a command's first heavy import (transformers, which pulls in torchao) printed before optkit's own lines
SCRIPT = """
import logging, os, warnings
from optkit.types.noise import silence_third_party
silence_third_party()
if os.environ.get("HEAVY"):
    import transformers, torchao  # noqa: F401
warnings.warn_explicit("a library's own deprecation", FutureWarning, "x.py", 1, module="transformers.x")
logging.getLogger("torchao").warning("Failed to load some_kernel.so")
logging.getLogger("optkit.torch").error("optkit's own line stays")
"""


def _stderr(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPTKIT_DEBUG"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env={**env, **env_extra},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_import_noise_is_silenced_and_optkit_debug_shows_it():
    pytest.importorskip("torchao")
    pytest.importorskip("transformers")
    quiet = _stderr({"HEAVY": "1"})
    assert "Failed to load" not in quiet and "_pytree" not in quiet and "deprecation" not in quiet, quiet
    assert "optkit's own line stays" in quiet
    loud = _stderr({"OPTKIT_DEBUG": "1"})
    assert "Failed to load some_kernel.so" in loud and "a library's own deprecation" in loud, loud
