"""One ``optkit loadtest``: load the target (a running server, or a sweep of servers optkit starts for an artifact),
judge the points against the p99 SLO, write and print the result, record the best setting in the artifact's
sidecar. Exit status 3 when an SLO was given and no point met it."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optkit.serve import report
from optkit.serve.loadtest import Load, LoadPoint, LoadtestResult, check_url, fetch_json, requests_from, run_load
from optkit.serve.sweep import SweepPlan, best_point, sweep
from optkit.types.errors import UsageError


@dataclass(frozen=True)
class LoadtestRun:
    """What the command was asked: the target and its load, the sweep (an artifact only), the SLO, where results go."""
    target: str
    load: Load = field(default_factory=Load)
    sweep: SweepPlan = field(default_factory=SweepPlan)
    slo_p99_ms: float | None = None
    model: str | None = None  # the model's name on a running server (default: the one it serves)
    eval_data: Path | None = None
    record: bool = True
    output: Path | None = None
    json_out: bool = False

    @property
    def is_url(self) -> bool:
        return self.target.startswith(("http://", "https://")) or (":" in self.target and not Path(self.target).exists())

    def say(self, text: str) -> None:
        """Progress, on stdout unless the command prints JSON."""
        if not self.json_out:
            print(text)


def _data(eval_data: Path | None, artifact: str | None) -> dict[str, np.ndarray] | None:
    path = eval_data
    if path is None and artifact is not None:
        from optkit.backends.opening import open_artifact

        path = open_artifact(artifact).eval_data
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "labels"}


def _against_url(run: LoadtestRun) -> list[LoadPoint]:
    """Every load point against the running server at ``run.target``."""
    base = check_url(run.target)
    try:
        name = run.model or (fetch_json(f"{base}/v2").get("models") or [None])[0]
    except OSError as exc:
        raise UsageError(f"{run.target}: no server answers ({exc})", hint="Start one with 'optkit serve ARTIFACT'") from None
    if not name:
        raise UsageError(f"{run.target}: the server does not say which model it serves", hint="Give --model NAME")
    bodies = requests_from(fetch_json(f"{base}/v2/models/{name}"), _data(run.eval_data, None), run.load.rows)
    points = []
    load = run.load
    for level in (load.rates or load.concurrencies):
        point = run_load(base, name, bodies, concurrency=None if load.rates else int(level),
                         rate=float(level) if load.rates else None, duration_s=load.duration_s,
                         warmup_s=load.warmup_s)
        points.append(point)
        run.say(f"  {'rate ' + str(level) + '/s' if load.rates else str(level) + ' clients'}: "
                f"{point.throughput:.0f}/s, p50 {point.p50_ms} ms, p99 {point.p99_ms} ms, mean batch {point.mean_batch}"
                + (f", errors {point.errors}" if point.errors else ""))
    return points


def _swept(run: LoadtestRun) -> list[LoadPoint]:
    """Every load point of every setting the sweep serves the artifact ``run.target`` under."""
    if not Path(run.target).exists():
        raise UsageError(f"{run.target}: neither a file nor an http://127.0.0.1:PORT URL",
                         hint="Give an artifact optkit wrote or the URL of a running optkit serve")
    if run.load.rates:
        raise UsageError("--rate sweeps a running server only", hint="Start 'optkit serve ARTIFACT' and give its URL")
    plan, load = run.sweep, run.load
    run.say(f"sweeping {len(plan.max_batches)} max-batch x {len(plan.delays_ms)} delay settings x "
            f"{len(load.concurrencies)} concurrencies, {load.duration_s:g}s each")
    return sweep(run.target, plan, load, _data(run.eval_data, run.target), say=run.say)


def measure(run: LoadtestRun) -> LoadtestResult:
    """Load the target, and judge the points: the best is the highest throughput within the SLO."""
    from optkit.types.machine import cpu_info

    points = _against_url(run) if run.is_url else _swept(run)
    return LoadtestResult(run.target, points, best_point(points, run.slo_p99_ms), run.slo_p99_ms, cpu_info())


def record_best(run: LoadtestRun, result: LoadtestResult, best: LoadPoint) -> str | None:
    """The best setting into the artifact's sidecar, where ``optkit report`` shows it; None without a sidecar."""
    from optkit.backends.opening import open_artifact
    from optkit.types.sidecar import record_serving
    from optkit.types.records import Serving

    artifact = open_artifact(run.target)
    if artifact.record is None:
        run.say(f"not recorded: {artifact.path.name} has no optkit sidecar")
        return None
    serving = Serving(config=best.setting(), throughput=best.throughput, p50_ms=best.p50_ms, p99_ms=best.p99_ms,
                      concurrency=best.concurrency, rows_per_request=run.load.rows, slo_p99_ms=run.slo_p99_ms,
                      settings_tried=result.settings_tried, cpu=result.cpu_text,
                      measured_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = record_serving(artifact, serving)
    run.say(f"recorded the best setting in {path.name} ('optkit report {run.target}' shows it)")
    return str(path)


def run_loadtest(run: LoadtestRun) -> int:
    """The command: measure and judge, write the files (before the sidecar: a refused folder records nothing),
    record the best setting, print; the exit status."""
    result = measure(run)
    if run.output is not None:
        report.write(run.output, result)
    recording = None
    if run.record and not run.is_url and result.best is not None and result.best.config is not None:
        recording = report.Recording(record_best(run, result, result.best))
    report.show(result, recording, json_out=run.json_out, output=run.output)
    return 3 if run.slo_p99_ms is not None and result.best is None else 0
