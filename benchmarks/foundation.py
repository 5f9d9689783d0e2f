"""Foundation benchmark: CLI start-up time, export time, and torch-vs-ONNX Runtime latency.

    python benchmarks/foundation.py [--budget-s 2] [--repeats 10]

Everything is measured in this run, on this machine. Latency figures come from `optkit export`'s
own ledger, which measures the original torch model and the exported ONNX model with the same
timing method, the same evaluation data and the same thread count, one after the other.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, optkit_cmd, print_machine

MODELS = ["digits_cnn", "digits_vit"]


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def startup(repeats: int) -> None:
    print("## CLI start-up (wall seconds, median of %d; min)" % repeats)
    for label, cmd in [("python -c pass", [sys.executable, "-c", "pass"]),
                       ("optkit --help", optkit_cmd() + ["--help"]),
                       ("optkit export --help", optkit_cmd() + ["export", "--help"])]:
        wall(cmd)  # warm the file cache
        times = [wall(cmd) for _ in range(repeats)]
        print(f"  {label:24s} {statistics.median(times):.3f} s   (min {min(times):.3f} s)")


def export_and_latency(budget_s: float, threads: int) -> None:
    print(f"\n## export time and batch-1 / batch-8 latency, {threads} thread(s), {budget_s}s budget per measurement")
    header = f"  {'model':12s} {'MACs':>8s} {'torch top-1':>11s} {'onnx top-1':>10s} {'export s':>8s}" \
             f" {'bs':>3s} {'torch p50 ms':>12s} {'ort p50 ms':>10s} {'ort/torch':>9s}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            out = Path(tmp) / f"{name}.onnx"
            # export alone (no measurement): the cost of tracing, converting, checking and verifying
            export_s = wall(optkit_cmd() + ["export", f"sample_models/{name}", "-o", str(out), "--no-measure"])
            out.unlink()
            proc = subprocess.run(optkit_cmd() + ["export", f"sample_models/{name}", "-o", str(out), "--json",
                                                  "--batch-sizes", "1,8", "--threads", str(threads),
                                                  "--budget-s", str(budget_s)],
                                  check=True, capture_output=True, text=True, cwd=ROOT)
            torch_row, onnx_row = json.loads(proc.stdout)["steps"]
            for t_lat, o_lat in zip(torch_row["latency_all"], onnx_row["latency_all"]):
                print(f"  {name:12s} {torch_row['macs'] / 1e6:7.1f}M {100 * torch_row['accuracy']['value']:10.2f}%"
                      f" {100 * onnx_row['accuracy']['value']:9.2f}% {export_s:8.1f} {t_lat['batch_size']:3d}"
                      f" {t_lat['p50_ms']:12.3f} {o_lat['p50_ms']:10.3f} {o_lat['p50_ms'] / t_lat['p50_ms']:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print_machine()
    print(f"# optkit foundation benchmark ({os.cpu_count()} logical CPUs, python {sys.version.split()[0]})\n")
    startup(args.repeats)
    export_and_latency(args.budget_s, args.threads)


if __name__ == "__main__":
    main()
