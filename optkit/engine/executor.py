"""Where optkit's work runs: in this process (``local``, the default) or on a Ray cluster (``ray_executor``).

Work comes in two kinds. A *build* (export, quantize, compile: a recipe's steps) may run anywhere and next to other
builds: its outputs are files in the step cache, the same wherever they were made. A *measurement* (a timing pass)
is only true on the target hardware and alone, so an executor runs one at a time per machine and records which
machine measured. Both take a plain function and its arguments, so the same code runs in either executor.

``LocalExecutor.build_until`` runs one build in a child process of its own (``spawn``: nothing of this process's
threads or runtimes is copied), so a build that runs past its deadline is stopped: SIGTERM to its process group
(the step unwinds, its staged files are deleted), SIGKILL after ``TERM_GRACE_S`` (native code that never returns
to Python), then the temp files a killed process left in its output folders are removed.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from optkit.types.files import remove_stale_temp

MEASURE_PREFIX = "optkit_measure:"
TERM_GRACE_S = 3.0  # a stopped build's time to unwind after SIGTERM, before SIGKILL


def measure_resource(cpu_model: str | None = None) -> str:
    """The custom resource a timing task needs: one per machine of a CPU model, e.g. ``optkit_measure:AMD_EPYC``."""
    if cpu_model is None:
        from optkit.types.machine import cpu_info

        cpu_model = cpu_info().model
    return MEASURE_PREFIX + (re.sub(r"[^A-Za-z0-9.-]+", "_", cpu_model).strip("_") or "unknown")


@dataclass(frozen=True)
class NodeInfo:
    """The machine (and process) a task ran on, as the report names it."""

    host: str
    pid: int
    cpu: str | None


def node_info() -> NodeInfo:
    from optkit.types.machine import cpu_info

    return NodeInfo(platform.node(), os.getpid(), cpu_info().model)


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
    """A build: ``fn(*args)`` under ``name``, with the CPUs it needs. ``probe``: the build's answer when it can be
    had at once in this process (a build the step cache serves whole), else None; an executor may try it first."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    num_cpus: float = 1.0
    probe: Callable[[], Any] | None = None


class Stopped(Exception):
    """A build stopped at its deadline, after running ``seconds``."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"{name}: stopped at its deadline after {seconds:.0f}s")
        self.seconds = seconds


class Executor(Protocol):
    name: str
    parallel: bool
    timeline: list[TaskRun]

    def builds(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        """Run ``jobs``; yield each with its result as it finishes (an exception is yielded as the result)."""

    def build(self, job: Job, deadline: float | None, cleanup: Iterable[Path] = ()) -> Any:
        """Run one ``job`` by ``deadline`` (a ``time.perf_counter()`` value): its result, or its exception raised
        here; ``Stopped`` when the deadline came first. ``cleanup``: the folders it writes into."""

    def measure(self, name: str, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0) -> Any:
        """Run one timing task alone on a measurement machine; its result."""

    def close(self) -> None: ...


class LocalExecutor:
    """Everything in this process, in order: what optkit always did."""

    name, parallel = "local", False

    def __init__(self) -> None:
        self.timeline: list[TaskRun] = []

    def _timed(self, name: str, kind: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        start = time.time()
        try:
            return fn(*args)
        finally:
            self.timeline.append(TaskRun(name, kind, platform.node(), os.getpid(), start, time.time(),
                                         cpu=node_info().cpu))

    def builds(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        for job in jobs:
            try:
                yield job, self._timed(job.name, "build", job.fn, job.args)
            except Exception as exc:  # noqa: BLE001 - the caller judges a failed build like any other
                yield job, exc

    def measure(self, name: str, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0) -> Any:
        return self._timed(name, "measure", fn, args)

    def build(self, job: Job, deadline: float | None, cleanup: Iterable[Path] = ()) -> Any:
        """``job``'s probe answered here when it can (no process to start: a rerun would pay a second or more per
        build), else ``build_until``."""
        answer = job.probe() if job.probe is not None else None
        return answer if answer is not None else self.build_until(job, deadline, cleanup)

    def build_until(self, job: Job, deadline: float | None, cleanup: Iterable[Path] = ()) -> Any:
        """``job`` in a child process, stopped at ``deadline`` (a ``time.perf_counter()`` value; None: never): its
        result, or its exception raised here; ``Stopped`` when the deadline came first. ``cleanup``: the folders it
        writes into, swept of the temp files a killed build leaves."""
        child = _Child(job)
        try:
            return child.wait(deadline)
        finally:
            child.end()
            for folder in cleanup:
                remove_stale_temp(Path(folder))
            self.timeline.append(TaskRun(job.name, "build", platform.node(), child.pid or os.getpid(), child.start,
                                         time.time(), cpu=node_info().cpu))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Payload:
    """What a build's process reads from its stdin: the parent's import path, its plugin registries (dotted paths:
    one registered at run time, a test's fake backend, is seen by the child too) and the pickled job."""

    path: list[str]
    steps: dict[str, str]
    backends: dict[str, str]
    job: bytes

    @classmethod
    def of(cls, job: Job) -> _Payload:
        import pickle
        import sys

        from optkit.backends import BACKENDS
        from optkit.steps.base import STEPS

        return cls(list(sys.path), dict(STEPS), dict(BACKENDS), pickle.dumps((job.fn, job.args)))


def child_entry(fd: int) -> None:
    """A build's process (``python -c``, so no ``__main__`` of the parent is imported again): reads the build from
    stdin, writes its outcome to ``fd``. Its own session (stopping it stops whatever it started); SIGTERM unwinds it
    like Ctrl-C (staged files and scratch folders are deleted on the way out); it ends itself if its parent dies."""
    import pickle
    import signal
    import sys
    import threading

    from optkit.types.noise import silence_third_party

    silence_third_party()
    parent = os.getppid()

    build = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != build:  # a fork of the build (it inherits this handler): it just ends
            os._exit(128 + signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)

    def orphaned() -> None:  # nobody waits for this build any more: stop at once
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    payload: _Payload = pickle.loads(sys.stdin.buffer.read())
    sys.path[:] = payload.path  # the parent's: where its plugins (and a test's fakes) import from
    from optkit.backends import BACKENDS
    from optkit.steps.base import STEPS

    for registry, entries in ((STEPS, payload.steps), (BACKENDS, payload.backends)):
        registry.update(entries)
    try:
        fn, args = pickle.loads(payload.job)
        outcome: tuple[str, Any] = ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which judges it like any failed build
        outcome = ("error", exc)
    except KeyboardInterrupt:  # stopped (SIGTERM): unwound, nothing to hand back
        sys.exit(128 + signal.SIGTERM)
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - a result or an error that cannot be pickled: its one line
        from optkit.types.errors import StepError, first_line

        what = first_line(outcome[1]) if outcome[0] == "error" else "its result"
        data = pickle.dumps(("error", StepError(f"{what} (could not be handed back: {first_line(exc)})")))
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class _Child:
    """One build in a process of its own, and its end: waited for, or stopped."""

    def __init__(self, job: Job) -> None:
        import pickle
        import subprocess
        import sys

        self.job, self.start, self.t0 = job, time.time(), time.perf_counter()
        self.answered = False
        read, write = os.pipe()
        payload = pickle.dumps(_Payload.of(job))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", f"from optkit.engine.executor import child_entry; child_entry({write})"],
                stdin=subprocess.PIPE, pass_fds=(write,), start_new_session=True)
        finally:
            os.close(write)
        self.pid = self.proc.pid
        self.read = read
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(payload)
            self.proc.stdin.close()
        except BrokenPipeError:  # it died at once: wait() says how
            pass

    def wait(self, deadline: float | None) -> Any:
        import pickle
        import select

        from optkit.types.errors import StepError

        data = bytearray()
        while True:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                raise Stopped(self.job.name, time.perf_counter() - self.t0)
            ready, _, _ = select.select([self.read], [], [], 0.5 if left is None else min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(self.read, 1 << 20)
            if chunk:
                data += chunk
                continue
            break  # EOF: it wrote its outcome and closed, or it ended without one
        if data:
            kind, value = pickle.loads(bytes(data))
            self.answered = True
            if kind == "error":
                raise value
            return value
        code = self.proc.wait(10)
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise StepError(f"{self.job.name}: its build process ended without a result ({how})",
                        hint="A crash in a runtime's native code, or the system ran out of memory (dmesg says)")

    def end(self) -> None:
        """Stop the process (and its session) if it still runs: SIGTERM, then SIGKILL after ``TERM_GRACE_S``."""
        import signal
        import subprocess

        os.close(self.read)
        if self.answered:  # it is on its way out: let it close its runtimes
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10.0)
        for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, sig)  # its session's group: the build and what it started
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        if self.proc.returncode is not None and self.proc.returncode < 0:  # killed: what is left of its group too
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
