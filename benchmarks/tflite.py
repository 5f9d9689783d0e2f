"""LiteRT (TFLite) beside ONNX Runtime: every .tflite variant and ORT fp32/int8, one interleaved `optkit compare`.

    python benchmarks/tflite.py [--models digits_cnn,digits_vit] [--budget-s 2]

For each sample model, built as a user would with the CLI:
  - ORT fp32 (`optkit export`) and ORT int8 (`optkit quantize`, its default for this CPU; on digits_vit, where
    that default finds no int8 faster than fp32 and refuses, `--mode dynamic`);
  - `optkit compile --target tflite` at fp32, fp16, int8-dynamic and int8 (full integer, calibrated on the model's
    calibration split), NCHW as converted; digits_cnn also with `--layout nhwc` (fp32, int8): which layout is faster;
  - a model whose dynamic batch does not convert (digits_vit: litert-torch cannot lower its cls-token expand to a
    symbolic batch) gets each .tflite twice, at `--fixed-batch 1` and `--fixed-batch 8`.
Then one `optkit compare` of the torch model and all of them at batch 1 and 8, 1 thread (rounds interleaved so drift
hits all alike). Prints the CPU model and SIMD flags, the table (p50 at batch 1 and 8, top-1, size), and the checks:
fp32 .tflite matches torch within the compile step's tolerance (its recorded max |diff|), int8 within 1 point top-1.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _common import ROOT, optkit_json, print_checks, print_machine, run_optkit

sys.path.insert(0, str(ROOT))


def build(model: str, work: Path) -> list[tuple[str, Path]]:
    folder = ROOT / "sample_models" / model
    fp32, int8 = work / f"{model}.onnx", work / f"{model}_int8.onnx"
    run_optkit("export", str(folder), "-o", str(fp32), "--no-measure")
    mode = ["--mode", "dynamic"] if model == "digits_vit" else []  # auto finds no int8 faster on the ViT: keep one
    run_optkit("quantize", str(fp32), "-o", str(int8), "--no-measure", *mode)
    built = [("ORT fp32", fp32), (f"ORT int8{' dynamic' if mode else ''}", int8)]
    variants = [("fp32", "nchw"), ("fp16", "nchw"), ("int8-dynamic", "nchw"), ("int8", "nchw")]
    if model == "digits_cnn":
        variants += [("fp32", "nhwc"), ("int8", "nhwc")]
    for precision, layout in variants:
        out = work / f"{model}_{precision}_{layout}.tflite"
        run_optkit("compile", str(folder), "-o", str(out), "--target", "tflite", "--precision", precision,
                   "--layout", layout, "--no-measure")
        record = json.loads(Path(f"{out}.optkit.json").read_text())["record"]["details"]["tflite"]
        if record["batch"] == "dynamic":
            built.append((f"tflite {precision} {layout}", out))
            continue
        built.append((f"tflite {precision} {layout} (batch 1)", out))
        out8 = work / f"{model}_{precision}_{layout}_b8.tflite"
        run_optkit("compile", str(folder), "-o", str(out8), "--target", "tflite", "--precision", precision,
                   "--layout", layout, "--fixed-batch", "8", "--no-measure")
        built.append((f"tflite {precision} {layout} (batch 8)", out8))
    return built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_cnn,digits_vit")
    ap.add_argument("--budget-s", default="2")
    args = ap.parse_args()
    print_machine()
    work = Path(tempfile.mkdtemp(prefix="optkit_tflite_"))
    checks = []
    for model in args.models.split(","):
        built = build(model, work)
        folder = ROOT / "sample_models" / model
        doc = optkit_json("compare", str(folder), *[str(p) for _, p in built], "--batch-sizes", "1,8",
                          "--threads", "1", "--budget-s", args.budget_s)
        rows = doc["artifacts"]
        names = ["torch (eager)"] + [name for name, _ in built]
        torch_acc = rows[0]["accuracy"]["value"]
        print(f"\n## {model}: one interleaved `optkit compare`, 1 thread, p50 ms")
        print("| artifact | batch 1 | batch 8 | top-1 | size |")
        print("|---|---|---|---|---|")
        for name, row in zip(names, rows):
            lat = {e["batch_size"]: e["p50_ms"] for e in row["latency"] or []}
            acc = row["accuracy"]["value"] if row.get("accuracy") else None
            print(f"| {name} | {'-' if 1 not in lat else f'{lat[1]:.3f}'} | "
                  f"{'-' if 8 not in lat else f'{lat[8]:.3f}'} | {'-' if acc is None else f'{100 * acc:.2f}%'} | "
                  f"{row['size_bytes'] / 1024:.0f} KB |")
        for (name, path), row in zip(built, rows[1:]):
            if not name.startswith("tflite"):
                continue
            details = json.loads(Path(f"{path}.optkit.json").read_text())["record"]["details"]
            acc = row["accuracy"]["value"]
            if " fp32 " in f" {name} ":
                check = details["check"]  # the compile step verified it element by element, or failed
                checks.append((f"{model} {name} matches torch (atol {check['atol']:g}, rtol {check['rtol']:g})",
                               check["max_abs_diff"] <= check["atol"] + check["rtol"], f"max |diff| "
                               f"{check['max_abs_diff']:.2e} at batch {', '.join(map(str, check['batch_sizes']))}"))
            if " int8 " in f" {name} ":
                checks.append((f"{model} {name} within 1 point top-1 of torch", torch_acc - acc <= 0.01,
                               f"{100 * acc:.2f}% vs {100 * torch_acc:.2f}%"))
        if model == "digits_cnn":
            lat = {name: {e["batch_size"]: e["p50_ms"] for e in row["latency"]} for name, row in zip(names, rows)}
            for precision in ("fp32", "int8"):
                nchw, nhwc = lat[f"tflite {precision} nchw"], lat[f"tflite {precision} nhwc"]
                print(f"{model} {precision}: NHWC / NCHW p50 = {nhwc[1] / nchw[1]:.2f}x at batch 1, "
                      f"{nhwc[8] / nchw[8]:.2f}x at batch 8 (below 1: NHWC faster)")
    print_checks(checks)


if __name__ == "__main__":
    main()
