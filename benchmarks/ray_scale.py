"""Scale-out benchmark: four recipes built with the local executor and on a local Ray cluster, alternating.

    python benchmarks/ray_scale.py [--rounds 2] [--budget-s 0.2]

The four recipes: both sample models (digits_cnn, digits_vit) x two targets (ONNX Runtime static int8, OpenVINO
NNCF int8), each export -> int8, measured as every optkit run is. Each round runs `optkit run R1 R2 R3 R4 --no-cache`
once with `--executor local` and once with `--executor ray` (a local cluster started inside the optkit process, all
of this machine's CPUs), in alternating order (local, ray, then ray, local...), and times the whole command - the
Ray side pays for its cluster's start. Prints the CPU, the wall times and their ratio, and the last Ray run's task
timeline: builds side by side, each timing pass alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import ROOT, optkit_cmd, print_checks, print_machine

TARGETS = {
    "ort": "  - quantize: {{mode: static, method: minmax, per_channel: true}}\n",
    "openvino": "  - compile: {{target: openvino-cpu, precision: int8, max_drop: 2.0, accuracy_control: false}}\n",
}
RECIPE = """\
model: {model}
output_dir: {out}
measure: {{batch_sizes: [1], threads: 1, budget_s: {budget}}}
steps:
  - export: {{opset: 18, dynamic_batch: true}}
"""


def write_recipes(work: Path, side: str, budget: float) -> list[Path]:
    paths = []
    for model in ("digits_cnn", "digits_vit"):
        for target, step in TARGETS.items():
            path = work / f"{model}_{target}_{side}.yaml"
            path.write_text(RECIPE.format(model=ROOT / "sample_models" / model, out=work / "out" / f"{side}_{model}_{target}",
                                          budget=budget) + step.format())
            paths.append(path)
    return paths


def run_side(recipes: list[Path], executor: str) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    proc = subprocess.run(optkit_cmd() + ["run", *map(str, recipes), "--no-cache", "--executor", executor, "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"optkit run --executor {executor} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def print_timeline(reports: list[dict]) -> list[dict]:
    tasks = sorted((t for r in reports for t in (r.get("executor") or {}).get("tasks", [])), key=lambda t: t["start"])
    if not tasks:
        return tasks
    t0, t1 = tasks[0]["start"], max(t["end"] for t in tasks)
    width = 60
    print("\n## the last Ray run's tasks (time runs left to right; B build, M timing pass)")
    print(f"| task | kind | worker pid | host | start s | end s | {'timeline':<{width}} |")
    print("|---|---|---|---|---|---|---|")
    for t in tasks:
        a = int((t["start"] - t0) / (t1 - t0) * width)
        b = max(a + 1, int((t["end"] - t0) / (t1 - t0) * width))
        bar = " " * a + ("B" if t["kind"] == "build" else "M") * (b - a)
        print(f"| {t['name']} | {t['kind']} | {t['pid']} | {t['host']} | {t['start'] - t0:.1f} | {t['end'] - t0:.1f} | "
              f"`{bar:<{width}}` |")
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=0.2, help="timing budget per artifact (the recipes' measure)")
    args = ap.parse_args()
    print_machine()
    work = Path(tempfile.mkdtemp(prefix="optkit_ray_scale_"))
    sides = {"local": write_recipes(work, "local", args.budget_s), "ray": write_recipes(work, "ray", args.budget_s)}
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    last: list[dict] = []
    for r in range(args.rounds):
        for side in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
            wall, reports = run_side(sides[side], side)
            walls[side].append(wall)
            if side == "ray":
                last = reports
            print(f"round {r + 1}: {side:5s} {wall:6.1f} s", flush=True)
    local, ray = statistics.mean(walls["local"]), statistics.mean(walls["ray"])
    print("\n## four recipes (digits_cnn, digits_vit x ONNX Runtime int8, OpenVINO int8), --no-cache, wall time")
    print("| executor | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | mean |")
    print("|---|" + "---|" * (args.rounds + 1))
    for side, values in walls.items():
        print(f"| {side} | " + " | ".join(f"{v:.1f} s" for v in values) + f" | {statistics.mean(values):.1f} s |")
    print(f"\nlocal / ray: {local / ray:.2f}x (above 1: Ray faster). The Ray side includes starting its cluster.")
    tasks = print_timeline(last)
    builds = [t for t in tasks if t["kind"] == "build"]
    measures = [t for t in tasks if t["kind"] == "measure"]
    overlapping = any(a["start"] < b["end"] and b["start"] < a["end"] for i, a in enumerate(builds) for b in builds[i + 1:])
    alone = all(not (m["start"] < t["end"] and t["start"] < m["end"]) for m in measures for t in tasks if t is not m)
    print_checks([
        ("every recipe passed on both executors", all(r["status"] == "passed" for r in last), f"{len(last)} reports"),
        ("builds ran side by side on Ray", overlapping, f"{len(builds)} builds on {len({t['pid'] for t in builds})} workers"),
        ("every timing pass ran alone", alone and bool(measures), f"{len(measures)} timing passes"),
    ], title="checks")


if __name__ == "__main__":
    main()
