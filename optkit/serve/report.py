"""``optkit loadtest``: run the load (against a URL, or a sweep of servers optkit starts), print the table, write
loadtest.json / loadtest.md / serve.yaml (the best setting as a recipe's ``serve:`` section). Exit 3 when a p99 SLO
was given and no point met it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optkit.serve.loadtest import LoadPoint, check_url, fetch_json, requests_from, run_load
from optkit.serve.sweep import best_point, sweep
from optkit.types.errors import UsageError
from optkit.types.files import Staging

MARK = "written by optkit loadtest"


def _data(eval_data: Path | None, artifact: str | None) -> dict | None:
    import numpy as np

    path = eval_data
    if path is None and artifact is not None:
        from optkit.backends.opening import open_artifact

        path = open_artifact(artifact).data.get("eval")
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "labels"}


def _markdown(points: list[LoadPoint], best: LoadPoint | None, slo: float | None, cpu: str) -> str:
    lines = [f"<!-- {MARK} -->", f"# Load test ({cpu})", "",
             "| max batch | delay ms | policy | load | throughput/s | p50 ms | p90 ms | p99 ms | mean batch | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        load = f"{p.concurrency} clients" if p.mode == "closed" else f"{p.rate:g}/s open"
        mark = " **best**" if p is best else ""
        lines.append(f"| {p.config.get('max_batch', '-')} | {p.config.get('max_queue_delay_ms', '-')} | "
                     f"{p.config.get('batch_policy', '-')} | {load} | "
                     f"{p.throughput:.0f}{mark} | {p.p50_ms} | {p.p90_ms} | {p.p99_ms} | {p.mean_batch} | "
                     f"{sum(p.errors.values()) or 0} |")
    if slo is not None:
        lines += ["", f"p99 SLO: {slo:g} ms - " + ("met by the best row" if best else "no row meets it")]
    return "\n".join(lines) + "\n"


def _serve_yaml(best: LoadPoint) -> str:
    import yaml

    section = {k: v for k, v in best.config.items()
               if k in ("max_batch", "max_queue_delay_ms", "batch_policy", "threads", "instances")}
    return f"# {MARK}: the highest throughput within the SLO ({best.throughput:.0f}/s, p99 {best.p99_ms} ms at " \
           f"{best.concurrency or best.rate} {'clients' if best.mode == 'closed' else '/s'})\n" + \
           yaml.safe_dump({"serve": section}, sort_keys=False)


def _write(output: Path, doc: dict[str, Any], md: str, serve_yaml: str | None) -> None:
    files = {output / "loadtest.json": json.dumps(doc, indent=2) + "\n", output / "loadtest.md": md}
    if serve_yaml:
        files[output / "serve.yaml"] = serve_yaml
    for path in files:
        old = path.read_text(errors="replace") if path.exists() else None
        if old is not None and MARK not in old[:400] and '"written_by": "optkit loadtest"' not in old:
            raise UsageError(f"{path} exists and optkit did not write it", hint="Choose another -o folder")
    with Staging() as stage:
        for path, text in files.items():
            stage.write_text(path, text)
        stage.commit()


def _record(artifact_path: str, best: LoadPoint, points: list[LoadPoint], slo: float | None, rows: int,
            cpu_text: str, say) -> str | None:
    """The best setting into the artifact's sidecar, where ``optkit report`` shows it; None without a sidecar."""
    import datetime

    from optkit.backends.opening import open_artifact
    from optkit.types.sidecar import record_serving
    from optkit.types.records import Serving

    artifact = open_artifact(artifact_path)
    if artifact.record is None:
        say(f"not recorded: {artifact.path.name} has no optkit sidecar")
        return None
    serving = Serving(config=dict(best.config), throughput=best.throughput, p50_ms=best.p50_ms, p99_ms=best.p99_ms,
                      concurrency=best.concurrency, rows_per_request=rows, slo_p99_ms=slo,
                      settings_tried=len({tuple(sorted(p.config.items())) for p in points}), cpu=cpu_text,
                      measured_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = record_serving(artifact, serving)
    say(f"recorded the best setting in {path.name} ('optkit report {artifact_path}' shows it)")
    return str(path)


def run_loadtest(target: str, *, concurrencies: list[int], rates: list[float] | None, duration_s: float,
                 warmup_s: float, slo_p99_ms: float | None, model: str | None, eval_data: Path | None, rows: int,
                 max_batches: list[int], delays_ms: list[float], threads: int, instances: int,
                 output: Path | None, json_out: bool, policies: list[str] | None = None, record: bool = True) -> int:
    from optkit.report.run import cpu_info

    say = (lambda text: None) if json_out else print
    is_url = target.startswith(("http://", "https://")) or (":" in target and not Path(target).exists())
    points: list[LoadPoint] = []
    if is_url:
        base = check_url(target)
        try:
            name = model or (fetch_json(f"{base}/v2").get("models") or [None])[0]
        except OSError as exc:
            raise UsageError(f"{target}: no server answers ({exc})", hint="Start one with 'optkit serve ARTIFACT'") from None
        if not name:
            raise UsageError(f"{target}: the server does not say which model it serves", hint="Give --model NAME")
        meta = fetch_json(f"{base}/v2/models/{name}")
        bodies = requests_from(meta, _data(eval_data, None), rows)
        for load in (rates or concurrencies):
            point = run_load(base, name, bodies, concurrency=None if rates else int(load),
                             rate=float(load) if rates else None, duration_s=duration_s, warmup_s=warmup_s)
            points.append(point)
            say(f"  {'rate ' + str(load) + '/s' if rates else str(load) + ' clients'}: {point.throughput:.0f}/s, "
                f"p50 {point.p50_ms} ms, p99 {point.p99_ms} ms, mean batch {point.mean_batch}"
                + (f", errors {point.errors}" if point.errors else ""))
    else:
        if not Path(target).exists():
            raise UsageError(f"{target}: neither a file nor an http://127.0.0.1:PORT URL",
                             hint="Give an artifact optkit wrote or the URL of a running optkit serve")
        if rates:
            raise UsageError("--rate sweeps a running server only", hint="Start 'optkit serve ARTIFACT' and give its URL")
        say(f"sweeping {len(max_batches)} max-batch x {len(delays_ms)} delay settings x {len(concurrencies)} "
            f"concurrencies, {duration_s:g}s each")
        points = sweep(target, max_batches=max_batches, delays_ms=delays_ms, concurrencies=concurrencies,
                       threads=threads, instances=instances, duration_s=duration_s, warmup_s=warmup_s,
                       data=_data(eval_data, target), rows=rows, say=say, policies=policies or ["adaptive"])
    best = best_point(points, slo_p99_ms)
    cpu = cpu_info()
    cpu_text = f"{cpu.get('model')}, {cpu.get('logical_cores')} cores, {' '.join(cpu.get('simd') or [])}"
    doc = {"written_by": "optkit loadtest", "target": target, "cpu": cpu, "slo_p99_ms": slo_p99_ms,
           "points": [p.to_dict() for p in points], "best": best.to_dict() if best else None}
    md = _markdown(points, best, slo_p99_ms, cpu_text)
    if output is not None:
        _write(output, doc, md, _serve_yaml(best) if best and best.config else None)
    if record and not is_url and best is not None and best.config:
        doc["recorded_in"] = _record(target, best, points, slo_p99_ms, rows, cpu_text, say)
    if json_out:
        print(json.dumps(doc, indent=2))
    else:
        print(md, end="")
        if output is not None:
            say(f"wrote {output / 'loadtest.json'}, loadtest.md" + (", serve.yaml" if best and best.config else ""))
    if slo_p99_ms is not None and best is None:
        if not json_out:
            print(f"no setting met p99 <= {slo_p99_ms:g} ms", flush=True)
        return 3
    return 0
