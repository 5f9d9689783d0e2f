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


@pytest.mark.slow
def test_import_noise_is_silenced_and_optkit_debug_shows_it():
    pytest.importorskip("torchao")
    pytest.importorskip("transformers")
    quiet = _stderr({"HEAVY": "1"})
    assert "Failed to load" not in quiet and "_pytree" not in quiet and "deprecation" not in quiet, quiet
    assert "optkit's own line stays" in quiet
    loud = _stderr({"OPTKIT_DEBUG": "1"})
    assert "Failed to load some_kernel.so" in loud and "a library's own deprecation" in loud, loud


def test_silencing_sets_the_import_loggers_and_keeps_the_users_settings(monkeypatch):
    import logging
    import warnings

    from optkit.types import noise

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in (
        "OPTKIT_DEBUG", "HF_HUB_DISABLE_PROGRESS_BARS")})  # what it sets stays in this test
    os.environ["TRANSFORMERS_VERBOSITY"] = "info"  # the user's own choice stands
    loggers = {name: logging.getLogger(name) for name in noise.IMPORT_LOGGERS}
    saved = {name: lg.level for name, lg in loggers.items()}
    try:
        with warnings.catch_warnings():
            noise.silence_third_party()
            assert all(lg.level >= logging.ERROR for lg in loggers.values())
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                noise.silence_third_party()  # the filters it adds come first again
                warnings.warn_explicit("chatter", FutureWarning, "m.py", 1, module="onnxscript.ir")
                warnings.warn_explicit("optkit's own", UserWarning, "m.py", 1, module="optkit.steps.x")
            assert [str(w.message) for w in seen] == ["optkit's own"]
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    finally:
        for name, lg in loggers.items():
            lg.setLevel(saved[name])


def test_optkit_debug_leaves_every_library_as_it_was(monkeypatch):
    import logging

    from optkit.types import noise

    monkeypatch.setenv("OPTKIT_DEBUG", "1")
    before = logging.getLogger("torchao").level
    noise.silence_third_party()
    assert logging.getLogger("torchao").level == before
