"""Serving benchmark: dynamic batching vs no batching, the same int8 artifact, one run, windows interleaved.

    python benchmarks/serving.py [--concurrency 1,2,4,8,16] [--window 4] [--rounds 2] [--slo-p99-ms 25]

1. Builds digits_cnn int8 as a user would (`optkit export`, then `optkit quantize`: its default int8 for this CPU).
2. Times the artifacts themselves, no server, 1 thread, interleaved: ms per row at batch 1, 4, 8 and 16 - what the
   model gains from batching on this CPU, the ceiling of what any batcher can add beyond saving per-request work.
3. Starts `optkit serve` processes on 127.0.0.1, each with 1 instance and 1 inference thread: for the ONNX Runtime
   int8 model and for the OpenVINO int8 IR (`optkit compile --target openvino-cpu --precision int8`), `--max-batch 16
   --max-queue-delay-ms 2` (the defaults: dynamic batching, adaptive policy), the same with `--batch-policy delay`
   (Triton's: always wait the delay; ORT only) and `--max-batch 1` (none); and an Identity model of the same input
   with `--max-batch 1`: what the HTTP round trip plus one runtime call per request allows here. And a wide MLP
   (fp32, 24 MB of weights, ORT) with and without batching: a model whose cost per row does fall with the batch (at
   batch 1 every request streams all its weights), to show what the batcher gives where the model allows it.
4. For each concurrency, closed-loop load (optkit loadtest's client: keep-alive HTTP/1.1 on uvloop, binary tensors,
   one request = one image) in windows that alternate A B C ... C B A so drift hits all alike; the load client runs on
   the same 2-core machine, as it would in a sidecar. Per side: requests/s (mean of windows), p50 (median of
   windows), p99 (worst window), mean rows per run from the server's /metrics, and the CPU the server process and
   the client spent per answered request.
Prints the CPU model and SIMD flags, the tables, and the check: >= 2x throughput at concurrency 8 with p99 within the
stated SLO.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, cpu_seconds, print_checks, print_machine, run_optkit
from serving_stack import identity_model

sys.path.insert(0, str(ROOT))
from optkit.serve.loadtest import fetch_json, requests_from, run_load  # noqa: E402
from optkit.serve.sweep import start_server, stop_server  # noqa: E402
from optkit.types.serve_config import ServeConfig  # noqa: E402


def build(work: Path) -> tuple[Path, Path, Path]:
    """(ORT int8, OpenVINO int8, an Identity model of the same input: what HTTP alone costs)."""
    fp32, int8, ov = work / "digits_cnn.onnx", work / "digits_cnn_int8.onnx", work / "digits_cnn_int8_ov.xml"
    run_optkit("export", "sample_models/digits_cnn", "-o", str(fp32), "--no-measure")
    run_optkit("quantize", str(fp32), "-o", str(int8), "--no-measure")
    run_optkit("compile", str(fp32), "-o", str(ov), "--target", "openvino-cpu", "--precision", "int8", "--no-measure")
    return int8, ov, identity_model(work)


def wide_mlp(work: Path, hidden: int = 2048) -> Path:
    """An MLP over the same 1x32x32 input: 1024 -> 2048 -> 2048 -> 10, fp32, random weights (24 MB)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [1024, hidden, hidden, 10]
    inits = [numpy_helper.from_array(np.array([-1, 1024], np.int64), "flat")]
    nodes = [helper.make_node("Reshape", ["input", "flat"], ["h0"])]
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"))
        last = i == len(dims) - 2
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], ["output" if last else f"m{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"]))
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])
    path = work / "wide_mlp.onnx"
    graph = helper.make_graph(nodes, "wide_mlp", [x], [y], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def row_costs(ort_int8: Path, ov_int8: Path, mlp: Path, sizes=(1, 4, 8, 16),
              budget_s: float = 0.6) -> dict[str, dict[int, float]]:
    """ms per row of each artifact at each batch size, 1 thread, the runtimes called directly, rounds interleaved."""
    import openvino as ov
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(ort_int8), so, providers=["CPUExecutionProvider"])
    wide = ort.InferenceSession(str(mlp), so, providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(ov_int8), "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1})
    name = session.get_inputs()[0].name
    runs = {"ORT": lambda x: session.run(None, {name: x}), "OpenVINO": lambda x: compiled({0: x}),
            "ORT wide MLP": lambda x: wide.run(None, {"input": x})}
    times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in sizes} for k in runs}
    rng = np.random.default_rng(0)
    feeds = {b: rng.random((b, 1, 32, 32), dtype=np.float32) for b in sizes}
    for _ in range(3):  # rounds: every (runtime, batch) timed in each, so drift hits all alike
        for b in sizes:
            for k, run in runs.items():
                for _ in range(5):
                    run(feeds[b])
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < budget_s / 3:
                    run(feeds[b])
                    n += 1
                times[k][b].append((time.perf_counter() - t0) / n / b * 1e3)
    return {k: {b: min(v) for b, v in per.items()} for k, per in times.items()}


def own_cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


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
    mlp = wide_mlp(work)
    costs = row_costs(ort_int8, ov_int8, mlp)
    print("\n## the artifacts alone: ms per row, 1 thread, no server (best of 3 interleaved rounds)")
    print("| runtime | " + " | ".join(f"batch {b}" for b in next(iter(costs.values()))) + " | batch 1 / best per row |")
    print("|---|" + "---|" * (len(next(iter(costs.values()))) + 1))
    for k, per in costs.items():
        print(f"| {k} | " + " | ".join(f"{v:.3f}" for v in per.values()) + f" | {per[1] / min(per.values()):.2f}x |")
    batching = {"max_batch": 16, "max_queue_delay_ms": 2, "threads": 1}
    delay = {**batching, "batch_policy": "delay"}
    single = {"max_batch": 1, "threads": 1}
    sides = {"ORT int8, dynamic batching (max 16, 2 ms)": (ort_int8, batching),
             "ORT int8, dynamic batching, delay policy": (ort_int8, delay),
             "ORT int8, no batching (max 1)": (ort_int8, single),
             "OpenVINO int8, dynamic batching (max 16, 2 ms)": (ov_int8, batching),
             "OpenVINO int8, no batching (max 1)": (ov_int8, single),
             "Identity model, no batching (HTTP + a call)": (identity, single),
             "wide MLP fp32 (ORT), dynamic batching (max 16, 2 ms)": (mlp, batching),
             "wide MLP fp32 (ORT), no batching (max 1)": (mlp, single)}
    servers = {name: start_server(artifact, ServeConfig(**cfg)) for name, (artifact, cfg) in sides.items()}
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
                    run_load(s.base, s.model, bodies[name], concurrency=c, duration_s=0.5, warmup_s=0)  # warm-up
                    server0, client0 = cpu_seconds(s.proc.pid), own_cpu_seconds()
                    point = run_load(s.base, s.model, bodies[name], concurrency=c, duration_s=args.window,
                                     warmup_s=0)
                    point.config = {"server_cpu_s": cpu_seconds(s.proc.pid) - server0,
                                    "client_cpu_s": own_cpu_seconds() - client0, "answered": point.ok}
                    got[name].append(point)
            for name in names:
                pts = got[name]
                rows.append({"side": name, "concurrency": c,
                             "throughput": statistics.mean(p.throughput for p in pts),
                             "p50": statistics.median(p.p50_ms for p in pts),
                             "p99": max(p.p99_ms for p in pts),
                             "batch": statistics.mean(p.mean_batch or 0 for p in pts),
                             "server_ms": 1e3 * sum(p.config["server_cpu_s"] for p in pts) / sum(p.config["answered"] for p in pts),
                             "client_ms": 1e3 * sum(p.config["client_cpu_s"] for p in pts) / sum(p.config["answered"] for p in pts),
                             "errors": sum(sum(p.errors.values()) for p in pts)})
    finally:
        for s in servers.values():
            stop_server(s.proc)
    print(f"\n## digits_cnn int8 ({ort_int8.name}, {ov_int8.name}) and a wide MLP, 1 server instance x 1 thread, closed loop, "
          f"{args.rounds} x {args.window:g}s windows per point")
    print("| concurrency | side | requests/s | p50 ms | p99 ms | mean rows per run | server CPU ms/request | "
          "client CPU ms/request | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['side']} | {r['throughput']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['batch']:.1f} | {r['server_ms']:.3f} | {r['client_ms']:.3f} | {r['errors']} |")
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
              f"client and server on this machine) tops out at {floor['throughput']:.0f} requests/s at concurrency 8.")
    dyn = at8.get("wide MLP fp32 (ORT), dynamic batching (max 16, 2 ms)")
    one = at8.get("wide MLP fp32 (ORT), no batching (max 1)")
    if dyn and one:
        print(f"The wide MLP, whose cost per row falls with the batch: dynamic batching "
              f"{dyn['throughput'] / one['throughput']:.2f}x the throughput of no batching at concurrency 8 "
              f"({dyn['throughput']:.0f} vs {one['throughput']:.0f} requests/s, p99 {dyn['p99']:.2f} vs "
              f"{one['p99']:.2f} ms).")
    for runtime, per in costs.items():
        best = min(per.values())
        print(f"{runtime}: the model alone runs {per[1]:.3f} ms per row at batch 1 and {best:.3f} at its best batch: "
              f"batching can save at most that compute ({per[1] / best:.2f}x) plus the per-request serving work; "
              f"one inference thread at the best batch serves at most {1e3 / best:.0f} requests/s.")
    checks.append(("no errors", all(r["errors"] == 0 for r in rows), str(sum(r["errors"] for r in rows))))
    print_checks(checks)


if __name__ == "__main__":
    main()
