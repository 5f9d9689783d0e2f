"""Compile-targets benchmark: every CPU target and precision of both sample models, one compare each.

    python benchmarks/compile_targets.py [--budget-s 2]

Builds, per model: the fp32 ONNX (export -> simplify -> fuse), ONNX Runtime int8 (quantize),
ort-cpu compiles of both, OpenVINO IR fp32 / bf16 / int8 (NNCF from fp32, and from the QDQ model);
then `optkit compare` times them interleaved in one run and prints the table and the checks.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import ROOT, optkit_json, print_checks, run_optkit, print_machine

sys.path.insert(0, str(ROOT))
from optkit.report.compare import compare_markdown  # noqa: E402  (same table as 'optkit compare --markdown')


def build(name: str, out: Path) -> list[Path]:
    q = "static" if name == "digits_cnn" else "auto"
    run_optkit("export", f"sample_models/{name}", "-o", str(out / "fp32_export.onnx"), "--no-measure")
    run_optkit("simplify", str(out / "fp32_export.onnx"), "-o", str(out / "fp32_simplified.onnx"), "--no-measure")
    run_optkit("fuse", str(out / "fp32_simplified.onnx"), "-o", str(out / "fp32.onnx"), "--no-measure")
    fp32 = out / "fp32.onnx"
    run_optkit("quantize", str(fp32), "-o", str(out / "ort_int8.onnx"), "--mode", q, "--no-measure")
    arts = [fp32, out / "ort_int8.onnx"]
    for src, dst in ((fp32, "ortcpu_fp32.onnx"), (out / "ort_int8.onnx", "ortcpu_int8.onnx")):
        run_optkit("compile", str(src), "-o", str(out / dst), "--target", "ort-cpu", "--no-measure")
        arts.append(out / dst)
    plain = out / "fp32_simplified.onnx"  # OpenVINO gets standard ops, not ONNX Runtime's fused contrib ops
    targets = [("fp32", plain, "ov_fp32.xml"), ("bf16", plain, "ov_bf16.xml"), ("int8", plain, "ov_int8_nncf.xml")]
    if q == "static":  # a QDQ model: OpenVINO reads it as int8 directly (dynamic int8 uses ORT-only ops)
        targets.append(("int8", out / "ort_int8.onnx", "ov_int8_qdq.xml"))
    for precision, src, dst in targets:
        run_optkit("compile", str(src), "-o", str(out / dst), "--target", "openvino-cpu", "--precision", precision,
               "--max-drop", "100", "--no-accuracy-control", "--no-measure")  # the table shows accuracy; don't stop
        arts.append(out / dst)
    return arts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print_machine()
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("digits_cnn", "digits_vit"):
            out = Path(tmp) / name
            out.mkdir()
            arts = build(name, out)
            common = ["--batch-sizes", "1,8", "--threads", str(args.threads), "--budget-s", str(args.budget_s)]
            result = optkit_json("compare", *map(str, arts), *common)["artifacts"]
            print(f"\n## {name}: compare (first row = fp32 ONNX Runtime baseline)")
            print(compare_markdown(result))
            rows = {Path(r["artifact"]).name: r for r in result}
            base = rows["fp32.onnx"]
            for lat_i, bs in enumerate((1, 8)):
                ort = rows["ortcpu_fp32.onnx"]["latency"][lat_i]["p50_ms"] / base["latency"][lat_i]["p50_ms"]
                checks.append((f"{name} ort-cpu compile not slower than its fp32 input at batch {bs}", ort <= 1.02, f"{ort:.3f}x"))
            if name == "digits_cnn":
                ov = rows["ov_int8_nncf.xml"]
                drop = 100 * (base["accuracy"]["value"] - ov["accuracy"]["value"])
                ratio = ov["latency"][0]["p50_ms"] / base["latency"][0]["p50_ms"]
                checks.append(("digits_cnn OpenVINO int8: top-1 drop <= 0.5 pt", drop <= 0.5, f"{drop:+.2f} pt"))
                checks.append(("digits_cnn OpenVINO int8: batch-1 p50 <= 0.5x fp32 ONNX Runtime", ratio <= 0.5, f"{ratio:.3f}x"))
    print_checks(checks, "acceptance (ort-cpu tolerance: 2% for timing noise)")


if __name__ == "__main__":
    main()
