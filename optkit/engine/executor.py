"""Where optkit's work runs: in this process (``local``, the default) or on a Ray cluster (``ray_executor``).

Work comes in two kinds. A *build* (export, quantize, compile: a recipe's steps) may run anywhere and next to other
builds: its outputs are files in the step cache, the same wherever they were made. A *measurement* (a timing pass)
is only true on the target hardware and alone, so an executor runs one at a time per machine and records which
machine measured. Both take a plain function and its arguments, so the same code runs in either executor.
"""
from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Protocol

MEASURE_PREFIX = "optkit_measure:"
EXECUTORS = ("local", "ray")


def measure_resource(cpu_model: str | None = None) -> str:
    """The custom resource a timing task needs: one per machine of a CPU model, e.g. ``optkit_measure:AMD_EPYC``."""
    if cpu_model is None:
        from optkit.types.machine import cpu_info

        cpu_model = str(cpu_info().get("model") or "unknown")
    return MEASURE_PREFIX + (re.sub(r"[^A-Za-z0-9.-]+", "_", cpu_model).strip("_") or "unknown")


def node_info() -> dict[str, Any]:
    """The machine a task ran on, as the report names it."""
    from optkit.types.machine import cpu_info

    cpu = cpu_info()
    return {"host": platform.node(), "pid": os.getpid(), "cpu": cpu.get("model"), "simd": cpu.get("simd") or [],
            "cores": cpu.get("logical_cores")}


@dataclass
class TaskRun:
    """One task of a run's timeline: what it was, where and when it ran (wall-clock seconds since the epoch)."""

    name: str
    kind: str  # build | measure
    host: str
    pid: int
    start: float
    end: float
    node_id: str | None = None
    cpu: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Job:
    """A build: ``fn(*args)`` under ``name``, with the CPUs it needs."""

    name: str
    fn: Callable[..., Any]
    args: tuple
    num_cpus: float = 1.0


class Executor(Protocol):
    name: str
    parallel: bool
    timeline: list[TaskRun]

    def builds(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        """Run ``jobs``; yield each with its result as it finishes (an exception is yielded as the result)."""

    def measure(self, name: str, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0) -> Any:
        """Run one timing task alone on a measurement machine; its result."""

    def close(self) -> None: ...


class LocalExecutor:
    """Everything in this process, in order: what optkit always did."""

    name, parallel = "local", False

    def __init__(self) -> None:
        self.timeline: list[TaskRun] = []

    def _timed(self, name: str, kind: str, fn: Callable[..., Any], args: tuple) -> Any:
        start = time.time()
        try:
            return fn(*args)
        finally:
            self.timeline.append(TaskRun(name, kind, platform.node(), os.getpid(), start, time.time(),
                                         cpu=node_info()["cpu"]))

    def builds(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        for job in jobs:
            try:
                yield job, self._timed(job.name, "build", job.fn, job.args)
            except Exception as exc:  # noqa: BLE001 - the caller judges a failed build like any other
                yield job, exc

    def measure(self, name: str, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0) -> Any:
        return self._timed(name, "measure", fn, args)

    def close(self) -> None:
        pass


def make_executor(kind: str, address: str | None = None, ui: Any = None) -> Executor:
    """``local`` or ``ray`` (``address``: an existing cluster's, else a local one in this process)."""
    from optkit.types.errors import UsageError

    if kind == "local":
        if address:
            raise UsageError("--ray-address needs --executor ray", hint="Add --executor ray, or drop --ray-address")
        return LocalExecutor()
    if kind == "ray":
        from optkit.engine.ray_executor import RayExecutor

        return RayExecutor(address, ui=ui)
    raise UsageError(f"--executor {kind!r}: unknown", hint=f"Use one of {', '.join(EXECUTORS)}")
