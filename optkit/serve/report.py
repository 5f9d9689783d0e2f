"""``optkit loadtest``'s output: the table it prints, and loadtest.json / loadtest.md / serve.yaml (the best setting
as a recipe's ``serve:`` section) in an output folder. It writes what it is given; ``loadtest_run`` measures."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from optkit.serve.loadtest import LoadPoint, LoadtestResult
from optkit.types.errors import UsageError
from optkit.types.files import Staging

MARK = "written by optkit loadtest"


@dataclass(frozen=True)
class Recording:
    """The best setting was recorded in the artifact's sidecar: its path, or None when the artifact has none."""
    sidecar: str | None


def markdown(result: LoadtestResult) -> str:
    lines = [f"<!-- {MARK} -->", f"# Load test ({result.cpu_text})", "",
             "| max batch | delay ms | policy | load | throughput/s | p50 ms | p90 ms | p99 ms | mean batch | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result.points:
        load = f"{p.concurrency} clients" if p.mode == "closed" else f"{p.rate:g}/s open"
        mark = " **best**" if p is result.best else ""
        c = p.config
        setting = f"{c.max_batch} | {c.max_queue_delay_ms} | {c.batch_policy}" if c is not None else "- | - | -"
        lines.append(f"| {setting} | {load} | {p.throughput:.0f}{mark} | {p.p50_ms} | {p.p90_ms} | {p.p99_ms} | "
                     f"{p.mean_batch} | {sum(p.errors.values()) or 0} |")
    if result.slo_p99_ms is not None:
        lines += ["", f"p99 SLO: {result.slo_p99_ms:g} ms - " + ("met by the best row" if result.best
                                                                  else "no row meets it")]
    return "\n".join(lines) + "\n"


def serve_yaml(best: LoadPoint) -> str:
    import yaml

    section: str = yaml.safe_dump({"serve": best.setting()}, sort_keys=False)
    return f"# {MARK}: the highest throughput within the SLO ({best.throughput:.0f}/s, p99 {best.p99_ms} ms at " \
           f"{best.concurrency or best.rate} {'clients' if best.mode == 'closed' else '/s'})\n" + section


def _best_setting(result: LoadtestResult) -> LoadPoint | None:
    """The best point, when it came from a server loadtest started (so it has a setting to write)."""
    return result.best if result.best is not None and result.best.config is not None else None


def write(output: Path, result: LoadtestResult) -> None:
    """The files into ``output``, all or none; a file of the same name optkit did not write is refused."""
    best = _best_setting(result)
    files = {output / "loadtest.json": json.dumps(result.to_json(), indent=2) + "\n",
             output / "loadtest.md": markdown(result)}
    if best is not None:
        files[output / "serve.yaml"] = serve_yaml(best)
    for path in files:
        old = path.read_text(errors="replace") if path.exists() else None
        if old is not None and MARK not in old[:400] and '"written_by": "optkit loadtest"' not in old:
            raise UsageError(f"{path} exists and optkit did not write it", hint="Choose another -o folder")
    with Staging() as stage:
        for path, text in files.items():
            stage.write_text(path, text)
        stage.commit()


def show(result: LoadtestResult, recording: Recording | None, *, json_out: bool, output: Path | None) -> None:
    """The result on stdout: the JSON document, or the table and what was written."""
    if json_out:
        recorded = {"recorded_in": recording.sidecar} if recording is not None else {}
        print(json.dumps({**result.to_json(), **recorded}, indent=2))
    else:
        print(markdown(result), end="")
        if output is not None:
            print(f"wrote {output / 'loadtest.json'}, loadtest.md"
                  + (", serve.yaml" if _best_setting(result) is not None else ""))
    if result.slo_p99_ms is not None and result.best is None and not json_out:
        print(f"no setting met p99 <= {result.slo_p99_ms:g} ms", flush=True)
