"""The Ray executor: builds are Ray tasks anywhere in the cluster; timing tasks run alone on a measurement node.

- A local cluster by default (``ray.init()`` in this process, every CPU of this machine, this machine tagged as its
  measurement node), or an existing cluster by ``address`` (``ray start --head`` and ``ray start --address``).
- Builds ask for ``num_cpus`` (1 by default) and are retried (``max_retries``) when their worker dies: a step writes
  under a temporary name and renames, and the step cache checks every file's sha256, so an attempt cut short leaves
  nothing a later one could use by mistake.
- A timing task needs ``{"optkit_measure:<cpu model>": 1}``, a custom resource each measurement node offers once,
  and every CPU of such a node: two timing passes never share a machine, no build runs beside one, and all the
  candidates for one target are timed on machines of one CPU model. The timeline records which node ran what.
- A small actor (``_Board``) hears when each task starts, for the live count of queued / building / measuring / done.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator

from optkit.engine.executor import MEASURE_PREFIX, Job, TaskRun, measure_resource, node_info
from optkit.types.errors import MissingDependencyError, StepError, UsageError, first_line
from optkit.types.ui import UI

MAX_RETRIES = 3
_Refs = dict[Any, tuple[str, str, Any]]  # a task's object ref -> (board key, build | measure, what it runs)
OBJECT_STORE_BYTES = 256 * 2**20  # artifacts travel as files in the shared cache, not through the object store


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--executor ray needs Ray", hint="pip install 'optkit[ray]'") from None
    return ray


def _cluster_messages_to_stderr() -> None:
    """Ray's driver prints the cluster's messages (a worker died, say) on stdout, where optkit's results go (--json):
    send them to stderr. Ray's own hook for this is private; if it moves, its messages simply stay where they were."""
    try:
        from ray._private import worker

        original = worker.print_to_stdstream
        if getattr(original, "optkit", False):
            return

        def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
            original({**data, "is_err": True}, ignore_prefix)

        setattr(to_stderr, "optkit", True)
        worker.print_to_stdstream = to_stderr
    except (ImportError, AttributeError):
        pass


def start_local_cluster(num_cpus: int | None = None) -> None:
    """A Ray cluster in this process: this machine's CPUs, and this machine as the measurement node of its CPU."""
    ray = require_ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, resources={measure_resource(): 1},
             include_dashboard=False,
             object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.ERROR, log_to_driver=False)


def _task(board: Any, key: str, name: str, kind: str, fn: Callable[..., Any], args: tuple[Any, ...]
          ) -> tuple[Any, TaskRun]:
    """What every task runs on its worker: tell the board it started, run ``fn``, say where and when."""
    import ray

    if board is not None:
        board.started.remote(key)
    info, start = node_info(), time.time()
    result = fn(*args)
    return result, TaskRun(name, kind, info.host, info.pid, start, time.time(),
                           ray.get_runtime_context().get_node_id(), info.cpu)


class _Board:
    """The keys of the tasks that have started (a task retried after a crash starts again under the same key)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def started(self, key: str) -> None:
        self.seen.add(key)

    def snapshot(self) -> list[str]:
        return sorted(self.seen)


class RayExecutor:
    name, parallel = "ray", True

    def __init__(self, address: str | None = None, ui: UI | None = None, num_cpus: int | None = None) -> None:
        ray = require_ray()
        self.ui = ui
        self.owned = not ray.is_initialized()
        if self.owned:
            if address:
                os.environ.setdefault("RAY_DEDUP_LOGS", "0")
                try:
                    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise UsageError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}",
                                     hint="Start it with 'ray start --head' and pass the address it prints; a cluster "
                                          "with token auth needs its token here too (ray get-auth-token, "
                                          "RAY_AUTH_TOKEN)") from None
            else:
                start_local_cluster(num_cpus)
        _cluster_messages_to_stderr()
        self.address = address or "local"
        self.resource, self.measure_cpus = self._measurement_nodes(ray)
        self._remote = ray.remote(_task)
        self._board = ray.remote(_Board).options(num_cpus=0).remote()
        self.timeline: list[TaskRun] = []
        self._counter = 0
        self._done = 0  # tasks finished in this run, every wave together: the live count's "done"
        self._announced = False

    def _measurement_nodes(self, ray: Any) -> tuple[str, float]:
        """The measure resource for this machine's CPU model (or the cluster's only one) and the CPUs such a node
        has: a timing task takes them all."""
        wanted = measure_resource()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        kinds = sorted({k for n in nodes for k in n.get("Resources", {}) if k.startswith(MEASURE_PREFIX)})
        start = f"ray start --address <head> --resources '{{\"{wanted}\": 1}}'"
        if not kinds:
            raise UsageError(f"no node of the Ray cluster at {self.address} is a measurement node (none offers a "
                             f"'{MEASURE_PREFIX}<cpu>' resource)", hint=f"On the machine to time on, run: {start}")
        if wanted in kinds:
            resource = wanted
        elif len(kinds) == 1:
            resource = kinds[0]
            if self.ui is not None:
                self.ui.info(f"ray: timing on the nodes tagged {resource} (this machine is {wanted})")
        else:
            raise UsageError(f"the Ray cluster has measurement nodes of several CPUs ({', '.join(kinds)}) and none "
                             f"of this machine's ({wanted})", hint="Run optkit on a machine of the CPU you target")
        self.largest_node_cpus = max(n.get("Resources", {}).get("CPU", 1.0) for n in nodes)
        tagged = [n["Resources"] for n in nodes if resource in n.get("Resources", {})]
        if any(r[resource] > 1 for r in tagged) and self.ui is not None:
            self.ui.warn(f"a node offers {resource} more than once: it could run two timing passes at once")
        return resource, min(r.get("CPU", 1.0) for r in tagged)

    def _submit(self, name: str, kind: str, fn: Callable[..., Any], args: tuple[Any, ...], **options: Any
                ) -> tuple[Any, str]:
        self._counter += 1
        key = f"{kind}:{self._counter}:{name}"
        ref = self._remote.options(max_retries=MAX_RETRIES, retry_exceptions=False, name=f"optkit {kind} {name}",
                                   **options).remote(self._board, key, name, kind, fn, args)
        return ref, key

    def _collect(self, refs: _Refs) -> Iterator[tuple[Any, Any]]:
        """Yield (payload, result or exception) as tasks finish, keeping the live count up to date. The count is
        the run's: "done" goes on from the build wave through every timing pass, and "starting tasks" is said once."""
        import ray

        pending = list(refs)
        with self._progress(refs, pending) as update:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                update(self._counts(refs, pending))
                for ref in ready:
                    self._done += 1
                    payload = refs[ref][2]
                    try:
                        result, run = ray.get(ref)
                        self.timeline.append(run)
                    except Exception as exc:  # noqa: BLE001 - the task's own error, or its worker died for good
                        result = _unwrap(exc, payload)
                    update(self._counts(refs, pending))
                    yield payload, result

    def _counts(self, refs: _Refs, pending: list[Any], started: set[str] | None = None) -> str:
        if started is None:
            import ray

            try:
                started = set(ray.get(self._board.snapshot.remote(), timeout=5))
            except Exception:  # noqa: BLE001 - the count is a display; never fail a run for it
                started = set()
        running = [refs[r] for r in pending if refs[r][0] in started]
        building = sum(1 for _, kind, _ in running if kind == "build")
        measuring = len(running) - building
        return (f"ray ({self.address}): {len(pending) - len(running)} queued · {building} building · "
                f"{measuring} measuring · {self._done} done")

    def _progress(self, refs: _Refs, pending: list[Any]) -> ContextManager[Callable[[str], None]]:
        from contextlib import nullcontext

        if self.ui is None:
            return nullcontext(lambda text: None)
        if self._announced:  # a later wave (a timing pass) opens on the run's count, not a second "starting"
            return self.ui.progress(self._counts(refs, pending, started=set()))
        self._announced = True
        return self.ui.progress("ray: starting tasks")

    def builds(self, jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        refs = {}
        for job in jobs:
            # never more than a node has: Ray would hold such a task forever
            ref, key = self._submit(job.name, "build", job.fn, job.args,
                                    num_cpus=min(job.num_cpus, self.largest_node_cpus))
            refs[ref] = (key, "build", job)
        yield from self._collect(refs)

    def build(self, job: Job, deadline: float | None, cleanup: Iterable[Path] = ()) -> Any:
        """One build as a task; a running Ray task is not stopped, so the deadline only bounds what starts."""
        for _, result in self.builds([job]):
            if isinstance(result, Exception):
                raise result
            return result
        raise StepError(f"{job.name}: its Ray task gave no result")

    def measure(self, name: str, fn: Callable[..., Any], *args: Any, num_cpus: float = 1.0) -> Any:
        ref, key = self._submit(name, "measure", fn, args, num_cpus=max(num_cpus, self.measure_cpus),
                                resources={self.resource: 1})
        for _, result in self._collect({ref: (key, "measure", name)}):
            if isinstance(result, Exception):
                raise result
            return result

    def close(self) -> None:
        if self.owned:
            import ray

            ray.shutdown()


def _unwrap(exc: Exception, payload: Any) -> Exception:
    """The exception a task raised (RayTaskError wraps it), or a StepError when its worker kept dying."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception):
        return cause
    name = getattr(payload, "name", payload)
    return StepError(f"{name}: its Ray task failed {MAX_RETRIES + 1} times ({first_line(exc, 200)})",
                     hint="See the Ray logs of the node that ran it (/tmp/ray/session_latest/logs)")
