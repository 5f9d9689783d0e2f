"""Which executor a command's ``--executor`` names: the one module that knows both, so neither imports the other."""
from __future__ import annotations

from optkit.engine.executor import Executor, LocalExecutor
from optkit.types.errors import UsageError
from optkit.types.ui import UI

EXECUTORS = ("local", "ray")


def make_executor(kind: str, address: str | None = None, ui: UI | None = None) -> Executor:
    """``local`` or ``ray`` (``address``: an existing cluster's, else a local one in this process)."""
    if kind == "local":
        if address:
            raise UsageError("--ray-address needs --executor ray", hint="Add --executor ray, or drop --ray-address")
        return LocalExecutor()
    if kind == "ray":
        from optkit.engine.ray_executor import RayExecutor

        return RayExecutor(address, ui=ui)
    raise UsageError(f"--executor {kind!r}: unknown", hint=f"Use one of {', '.join(EXECUTORS)}")
