"""Accuracy guard benchmark: which layers hurt, and keeping only those in float.

    python benchmarks/accuracy_guard.py [--budget-s 1.0]

1. The guard's test model (sample_models/outlier_mlp.py, width 256, ~10 s to build): plain static
   per-tensor int8 vs ``--max-drop 0.5``: accuracy, nodes kept in float, and batch-1 latency of the
   fp32 model, plain int8 and guarded int8 measured interleaved (``optkit compare``); then the
   OpenVINO int8 path: plain NNCF vs NNCF quantization with accuracy control.
2. digits_vit: ``optkit debug`` on fp32 vs plain static int8, then the top-ranked group excluded
   alone, and as a control the median-ranked group excluded alone: output drift vs fp32 of each.
3. digits_cnn: ``quantize --engine inc`` (Neural Compressor PT2E autotune -> QDQ ONNX) next to the
   ONNX Runtime static int8 path and fp32, interleaved.
Every figure is measured in this run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT, optkit_json, print_checks, run_optkit, print_machine

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sample_models"))
from optkit.report.compare import compare_markdown  # noqa: E402


def _drift(ref_path: Path, path: Path, x: np.ndarray) -> dict:
    import onnxruntime as ort

    def run(p: Path) -> np.ndarray:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    ref, got = run(ref_path).astype(np.float64), run(path).astype(np.float64)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    return {"max_abs": float(np.abs(ref - got).max()), "mean_abs": float(np.abs(ref - got).mean()),
            "cosine": float(cos.mean())}


def outlier_model(tmp: Path, budget: str, checks: list) -> None:
    from outlier_mlp import make

    folder = make(tmp / "outlier_mlp", width=256)
    fp32, plain, guarded = tmp / "om_fp32.onnx", tmp / "om_plain.onnx", tmp / "om_guarded.onnx"
    fast = ["--budget-s", "0.2"]
    run_optkit("export", str(folder), "-o", str(fp32), "--atol", "0.01", *fast)
    plain_res = optkit_json("quantize", str(fp32), "-o", str(plain), "--mode", "static", "--per-tensor",
                            "--max-drop", "100", "--no-guard", *fast)
    guard_res = optkit_json("quantize", str(fp32), "-o", str(guarded), "--mode", "static", "--per-tensor",
                            "--max-drop", "0.5", "--guard", *fast)
    table = optkit_json("compare", str(fp32), str(plain), str(guarded), "--batch-sizes", "1,8", "--budget-s", budget)
    print("## outlier_mlp (width 256): fp32 vs plain static int8 vs guarded static int8 (--max-drop 0.5)\n")
    print(compare_markdown(table["artifacts"]))
    guard = json.loads((guarded.parent / (guarded.name + ".optkit.json")).read_text())["record"]["details"]["guard"]
    print(f"guard: searched on the {guard['searched_on']}; plain {guard['plain']['text']}; trials: "
          + "; ".join(f"{t['nodes']} node(s) float -> {t['text']}" for t in guard["trials"]))
    print(f"kept in float: {guard['kept_float']} ({guard['kept_float_fraction']:.1%} of "
          f"{guard['quantized_nodes_plain']} quantized nodes) because {guard['groups'][0]['why']}\n")
    acc = {r["artifact"]: r["accuracy"]["value"] for r in table["artifacts"]}
    p50 = {(r["artifact"], lat["batch_size"]): lat["p50_ms"] for r in table["artifacts"] for lat in r["latency"]}
    fp32, plain, guarded = (p.resolve() for p in (fp32, plain, guarded))
    base, pl, gd = (acc[str(p)] for p in (fp32, plain, guarded))
    ov_plain, ov_guard = tmp / "om_ov_plain.xml", tmp / "om_ov_guarded.xml"
    run_optkit("compile", str(fp32), "-o", str(ov_plain), "--target", "openvino-cpu", "--precision", "int8",
               "--max-drop", "100", "--no-accuracy-control", *fast)
    run_optkit("compile", str(fp32), "-o", str(ov_guard), "--target", "openvino-cpu", "--precision", "int8",
               "--max-drop", "1.0", *fast)
    ov = optkit_json("compare", str(fp32), str(ov_plain), str(ov_guard), "--batch-sizes", "1", "--budget-s", budget)
    print("OpenVINO int8 of the same model: plain NNCF vs NNCF with accuracy control (--max-drop 1.0)\n")
    print(compare_markdown(ov["artifacts"]))
    control = json.loads(ov_guard.with_name(ov_guard.name + ".optkit.json").read_text())["record"]["details"]["accuracy_control"]
    print(f"NNCF kept in float: {control['kept_float_compute_ops']}\n")
    ov_acc = {r["artifact"]: r["accuracy"]["value"] for r in ov["artifacts"]}
    checks.append(("OpenVINO int8 path: plain NNCF outside 1 pt, accuracy control within it",
                   100 * (base - ov_acc[str(ov_plain.resolve())]) > 1.0 and 100 * (base - ov_acc[str(ov_guard.resolve())]) <= 1.0,
                   f"{100 * ov_acc[str(ov_plain.resolve())]:.2f}% -> {100 * ov_acc[str(ov_guard.resolve())]:.2f}% "
                   f"({len(control['kept_float_compute_ops'])} compute op(s) float)"))
    checks += [
        ("plain per-tensor static int8 exceeds the 0.5-point budget", 100 * (base - pl) > 0.5,
         f"{100 * base:.2f}% -> {100 * pl:.2f}%"),
        ("guarded int8 within the budget", 100 * (base - gd) <= 0.5, f"{100 * base:.2f}% -> {100 * gd:.2f}%"),
        ("<= 10% of quantized nodes kept in float", guard["kept_float_fraction"] <= 0.10,
         f"{len(guard['kept_float'])}/{guard['quantized_nodes_plain']}"),
        ("guarded int8 faster than fp32 at batch 1", p50[(str(guarded), 1)] < p50[(str(fp32), 1)],
         f"{p50[(str(guarded), 1)]:.3f} vs {p50[(str(fp32), 1)]:.3f} ms "
         f"({p50[(str(guarded), 1)] / p50[(str(fp32), 1)]:.2f}x)"),
    ]
    del plain_res, guard_res


def vit_debug(tmp: Path, checks: list) -> None:
    fast = ["--budget-s", "0.2"]
    fp32, simple, plain = tmp / "vit.onnx", tmp / "vit_simple.onnx", tmp / "vit_plain.onnx"
    run_optkit("export", "sample_models/digits_vit", "-o", str(fp32), *fast)
    run_optkit("simplify", str(fp32), "-o", str(simple), *fast)
    run_optkit("quantize", str(simple), "-o", str(plain), "--mode", "static", "--max-drop", "100", "--no-guard", *fast)
    ranking = optkit_json("debug", str(simple), str(plain))
    groups = ranking["groups"]
    print("## digits_vit: optkit debug (fp32 simplified vs plain static int8), top 5 layers\n")
    print("| # | kind | tensor | SQNR dB (median ch) | accumulated dB | nodes |\n|---:|---|---|---:|---:|---|")
    for i, e in enumerate(ranking["layers"][:5], 1):
        acc = e.get("accumulated_sqnr_db")
        print(f"| {i} | {e['kind']} | {e['tensor']} | {e['sqnr_db']:.1f} | {'—' if acc is None else f'{acc:.1f}'} | "
              f"{', '.join(e['nodes'])} |")
    x = np.load(ROOT / "sample_models/digits_vit/eval.npz")["input"]
    results = {"plain int8": _drift(simple, plain, x)}
    for label, group in (("top group excluded", groups[0]), ("median group excluded (control)", groups[len(groups) // 2])):
        out = tmp / f"vit_{label.split()[0]}.onnx"
        args = [a for n in group["nodes"] for a in ("--exclude", n)]
        run_optkit("quantize", str(simple), "-o", str(out), "--mode", "static", "--max-drop", "100", "--no-guard", *args, *fast)
        results[f"{label}: {', '.join(group['nodes'])}"] = _drift(simple, out, x)
    print("\n| int8 model | max abs diff vs fp32 | mean abs diff | mean cosine |\n|---|---:|---:|---:|")
    for label, d in results.items():
        print(f"| {label} | {d['max_abs']:.4f} | {d['mean_abs']:.5f} | {d['cosine']:.6f} |")
    top = next(v for k, v in results.items() if k.startswith("top"))
    checks.append(("debug's top entry excluded alone reduces drift vs plain int8 (mean abs diff)",
                   top["mean_abs"] < results["plain int8"]["mean_abs"],
                   f"{results['plain int8']['mean_abs']:.5f} -> {top['mean_abs']:.5f} "
                   f"({top['mean_abs'] / results['plain int8']['mean_abs']:.2f}x)"))


def inc_vs_ort(tmp: Path, budget: str, checks: list) -> None:
    fast = ["--budget-s", "0.2"]
    fp32, ort_q, inc_q = tmp / "cnn.onnx", tmp / "cnn_ort_int8.onnx", tmp / "cnn_inc_int8.onnx"
    run_optkit("export", "sample_models/digits_cnn", "-o", str(fp32), *fast)
    run_optkit("quantize", str(fp32), "-o", str(ort_q), "--mode", "static", "--max-drop", "0.5", "--no-guard", *fast)
    inc = optkit_json("quantize", "sample_models/digits_cnn", "-o", str(inc_q), "--engine", "inc", "--mode", "static",
                      "--max-drop", "0.5", "--no-guard", *fast)
    table = optkit_json("compare", str(fp32), str(ort_q), str(inc_q), "--batch-sizes", "1,8", "--budget-s", budget)
    print("\n## digits_cnn: fp32 ONNX vs ONNX Runtime static int8 vs Neural Compressor (PT2E autotune) int8\n")
    print(compare_markdown(table["artifacts"]))
    details = inc["steps"][-1]
    record = json.loads((inc_q.parent / (inc_q.name + ".optkit.json")).read_text())["record"]["details"]
    print(f"inc ledger row: {details['summary']}")
    drop = record["check"]["drop_points"]
    checks.append(("INC int8 QDQ ONNX for digits_cnn within its tolerance (0.5 pt), trial log in the sidecar",
                   record["check"]["ok"] and len(record["inc_trials"]) >= 2,
                   f"top-1 {100 * record['check']['input_accuracy']:.2f}% -> {100 * record['check']['accuracy']:.2f}% "
                   f"(drop {drop:.2f} pt); trials: " + ", ".join(f"{t['config']} {100 * t['top1']:.2f}%"
                                                                 for t in record["inc_trials"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", default="1.0", help="seconds of timing per artifact and batch size")
    args = parser.parse_args()
    print_machine()
    checks: list = []
    with tempfile.TemporaryDirectory() as tmp:
        outlier_model(Path(tmp), args.budget_s, checks)
        vit_debug(Path(tmp), checks)
        inc_vs_ort(Path(tmp), args.budget_s, checks)
    print_checks(checks)


if __name__ == "__main__":
    main()
