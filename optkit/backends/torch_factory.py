"""A user's model code: a factory (``file.py:build`` or ``package.module:build``) imported and called, and a
state_dict read with ``torch.load(weights_only=True)``, so nothing in it is unpickled.

User code may call ``sys.exit`` or ``os._exit`` while it is imported or run: either becomes a UsageError naming
the factory, never the end of optkit with nothing written.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from optkit.types.errors import UsageError, first_line
from optkit.types.lazy import require


def _torch() -> Any:
    return require("torch", "PyTorch models")


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


class _FactoryExit(BaseException):
    """Raised in place of ``os._exit`` while a user's factory module is imported or called."""


@contextlib.contextmanager
def _no_process_exit() -> Iterator[None]:
    """User code may call ``sys.exit`` (SystemExit, caught by the caller) or ``os._exit``, which would end
    optkit with that code having written nothing: ``os._exit`` raises instead while user code runs."""
    real = os._exit

    def refuse(status: int = 0) -> NoReturn:
        raise _FactoryExit(status)

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


def _user_code_exited(ref: str, exc: BaseException, when: str) -> UsageError:
    code = exc.code if isinstance(exc, SystemExit) else exc.args[0] if exc.args else 0
    how = "os._exit" if isinstance(exc, _FactoryExit) else "sys.exit"
    hint = ("Move script code under `if __name__ == \"__main__\":` so importing the module only defines the model"
            if when == "during import" else "The factory must return the model, not end the process")
    return UsageError(f"the factory '{ref}' exited {when} ({how}({code!r}))", hint=hint)


def import_factory(ref: str) -> Callable[[], Any]:
    """``/abs/file.py:build`` or ``pkg.module:build`` -> the callable."""
    from optkit.backends.model_spec import check_factory_ref

    check_factory_ref(ref)  # never os:abort and the like
    target, _, attr = ref.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            # a stable name keeps exported graphs' metadata byte-identical; registered in sys.modules
            # because torch.export / PT2E quantizers resolve classes through it
            name = f"optkit_user_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:  # only for a name that is not a Python source file
                raise UsageError(f"cannot import factory '{ref}': {path.name} is not a Python module",
                                 hint="Name a .py file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                with _on_path(path.parent), _no_process_exit():
                    spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            with _no_process_exit():
                module = importlib.import_module(target)
    except (SystemExit, _FactoryExit) as exc:
        raise _user_code_exited(ref, exc, "during import") from None
    except Exception as exc:  # a user's module can raise anything at import time
        raise UsageError(f"cannot import factory '{ref}': {first_line(exc, 200)}",
                         hint="Fix the module or its dependencies, then retry") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"factory '{ref}': '{attr}' is not a callable in {target}", hint="Name a function that builds the model")
    return factory


def load_state_dict(path: Path) -> dict[str, Any]:
    torch = _torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or type(exc).__name__ == "UnpicklingError":
            raise UsageError(
                f"{path} is a full pickle checkpoint (it stores Python objects, not only tensors); optkit loads "
                "weights with weights_only=True and will not unpickle it",
                hint="Re-save it with torch.save(model.state_dict(), path)") from exc
        raise UsageError(f"cannot read weights {path}: {first_line(exc, 200)}", hint="Pass a state_dict saved with torch.save") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} is not a state_dict (a mapping of names to tensors)",
                         hint="Save weights with torch.save(model.state_dict(), path)")
    return state



def build_from_factory(ref: str) -> Any:
    """The model ``ref``'s factory builds (an ``nn.Module``), seeded: a factory without weights (random init, e.g.
    a transformer built from a config) must build the same model every time it is loaded, or the export would be
    checked against another model."""
    torch = _torch()
    factory = import_factory(ref)
    try:
        with _no_process_exit(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = factory()
    except (SystemExit, _FactoryExit) as exc:
        raise _user_code_exited(ref, exc, "while building the model") from None
    except Exception as exc:
        raise UsageError(f"factory '{ref}' failed: {first_line(exc, 200)}",
                         hint="The factory must build the model without arguments") from exc
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"factory '{ref}' returned {type(model).__name__}, not a torch.nn.Module")
    return model
