"""Serving benchmark: dynamic batching vs no batching, the same int8 artifact, one run, windows interleaved.

    python benchmarks/serving.py [--concurrency 1,2,4,8,16] [--window 4] [--rounds 2] [--slo-p99-ms 25]

1. Builds digits_cnn int8 as a user would (`optkit export`, then `optkit quantize`: its default int8 for this CPU).
2. Starts `optkit serve` processes on 127.0.0.1, each with 1 instance and 1 inference thread: for the ONNX Runtime
   int8 model and for the OpenVINO int8 IR (`optkit compile --target openvino-cpu --precision int8`), `--max-batch 16
   --max-queue-delay-ms 2` (the defaults: dynamic batching) and `--max-batch 1` (none); and an Identity model of the
   same input with `--max-batch 1`: what the HTTP round trip plus one runtime call per request allows here.
3. For each concurrency, closed-loop load (optkit loadtest's client: aiohttp, binary tensors, one request = one
   image) in windows that alternate A B B A ... so drift hits both alike; the load client runs on the same 2-core
   machine, as it would in a sidecar. Per side: requests/s (mean of windows), p50 (median of windows), p99 (worst
   window), mean rows per run from the server's /metrics.
Prints the CPU model and SIMD flags, the table, and the check: >= 2x throughput at concurrency 8 with p99 within the
stated SLO.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import ROOT, print_checks, print_machine, run_optkit

sys.path.insert(0, str(ROOT))
from optkit.serve.loadtest import fetch_json, requests_from, run_load  # noqa: E402
from optkit.serve.sweep import start_server, stop_server  # noqa: E402


def build(work: Path) -> tuple[Path, Path, Path]:
    """(ORT int8, OpenVINO int8, an Identity model of the same input: what HTTP alone costs)."""
    import onnx
    from onnx import TensorProto, helper

    fp32, int8, ov = work / "digits_cnn.onnx", work / "digits_cnn_int8.onnx", work / "digits_cnn_int8_ov.xml"
    run_optkit("export", "sample_models/digits_cnn", "-o", str(fp32), "--no-measure")
    run_optkit("quantize", str(fp32), "-o", str(int8), "--no-measure")
    run_optkit("compile", str(fp32), "-o", str(ov), "--target", "openvino-cpu", "--precision", "int8", "--no-measure")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [x], [y])
    identity = work / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), identity)
    return int8, ov, identity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--window", type=float, default=4.0, help="seconds per measured window")
    ap.add_argument("--rounds", type=int, default=2, help="windows per side and concurrency (alternating)")
    ap.add_argument("--slo-p99-ms", type=float, default=25.0)
    args = ap.parse_args()
    print_machine()
    work = Path(tempfile.mkdtemp(prefix="optkit_serving_"))
    ort_int8, ov_int8, identity = build(work)
    with np.load(ROOT / "sample_models" / "digits_cnn" / "eval.npz") as npz:
        data = {"input": npz["input"]}
    batching = {"max_batch": 16, "max_queue_delay_ms": 2, "threads": 1}
    single = {"max_batch": 1, "threads": 1}
    sides = {"ORT int8, dynamic batching (max 16, 2 ms)": (ort_int8, batching),
             "ORT int8, no batching (max 1)": (ort_int8, single),
             "OpenVINO int8, dynamic batching (max 16, 2 ms)": (ov_int8, batching),
             "OpenVINO int8, no batching (max 1)": (ov_int8, single),
             "Identity model, no batching (HTTP + a call)": (identity, single)}
    servers = {name: start_server(artifact, cfg) for name, (artifact, cfg) in sides.items()}
    try:
        bodies = {name: requests_from(fetch_json(f"{s.base}/v2/models/{s.model}"), data, 1)
                  for name, s in servers.items()}
        names = list(sides)
        rows = []
        for c in [int(v) for v in args.concurrency.split(",")]:
            got: dict[str, list] = {n: [] for n in names}
            for r in range(args.rounds):
                order = names if r % 2 == 0 else names[::-1]  # A B C ... then ... C B A
                for name in order:
                    s = servers[name]
                    got[name].append(run_load(s.base, s.model, bodies[name], concurrency=c, duration_s=args.window,
                                              warmup_s=0.5))
            for name in names:
                pts = got[name]
                rows.append({"side": name, "concurrency": c,
                             "throughput": statistics.mean(p.throughput for p in pts),
                             "p50": statistics.median(p.p50_ms for p in pts),
                             "p99": max(p.p99_ms for p in pts),
                             "batch": statistics.mean(p.mean_batch or 0 for p in pts),
                             "errors": sum(sum(p.errors.values()) for p in pts)})
    finally:
        for s in servers.values():
            stop_server(s.proc)
    print(f"\n## digits_cnn int8 ({ort_int8.name}, {ov_int8.name}), 1 server instance x 1 thread, closed loop, "
          f"{args.rounds} x {args.window:g}s windows per point")
    print("| concurrency | side | requests/s | p50 ms | p99 ms | mean rows per run | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['side']} | {r['throughput']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['batch']:.1f} | {r['errors']} |")
    at8 = {r["side"]: r for r in rows if r["concurrency"] == 8}
    checks = []
    for runtime in ("ORT", "OpenVINO"):
        dyn = at8.get(f"{runtime} int8, dynamic batching (max 16, 2 ms)")
        one = at8.get(f"{runtime} int8, no batching (max 1)")
        if not dyn or not one:
            continue
        ratio = dyn["throughput"] / one["throughput"]
        checks.append((f"{runtime}: dynamic batching >= 2x the throughput of no batching at concurrency 8",
                       ratio >= 2.0, f"{ratio:.2f}x ({dyn['throughput']:.0f} vs {one['throughput']:.0f} requests/s)"))
        checks.append((f"{runtime}: its p99 within the SLO of {args.slo_p99_ms:g} ms", dyn["p99"] <= args.slo_p99_ms,
                       f"{dyn['p99']:.2f} ms (no batching: {one['p99']:.2f} ms)"))
    floor = at8.get("Identity model, no batching (HTTP + a call)")
    if floor:
        print(f"\nAn Identity model served without batching (the HTTP round trip plus one runtime call per request, "
              f"client and server on this machine) tops out at {floor['throughput']:.0f} requests/s at concurrency 8: "
              "that per-request cost, not the model, bounds what batching can gain here.")
    checks.append(("no errors", all(r["errors"] == 0 for r in rows), str(sum(r["errors"] for r in rows))))
    print_checks(checks)


if __name__ == "__main__":
    main()
