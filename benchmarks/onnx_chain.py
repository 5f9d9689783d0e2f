"""ONNX chain benchmark: both CPU recipes, step by step, accuracy and p50 ratios, in one run.

    python benchmarks/onnx_chain.py [--budget-s 2] [--threads 1]

For each recipe (export -> simplify -> fuse -> quantize) every step's artifact is measured by
optkit itself with one timing method at batch 1 and 8; this script prints, per step, top-1 and
the p50 ratio vs the original torch model and vs the fp32 ONNX model (the export), then the int8
modes side by side on the fused model, the two simplifier engines, and the issue's acceptance checks.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from _common import ROOT, optkit_json, print_checks, print_machine
RECIPES = {"digits_cnn": ROOT / "recipes/digits_cnn_cpu.yaml", "digits_vit": ROOT / "recipes/digits_vit_cpu.yaml"}


def lat(row: dict, bs: int) -> float:
    return next(x["p50_ms"] for x in row["latency_all"] if x["batch_size"] == bs)


def run_recipe(name: str, out: Path, budget: float, threads: int) -> list[dict]:
    raw = yaml.safe_load(RECIPES[name].read_text())
    raw["model"] = str((RECIPES[name].parent / raw["model"]).resolve())
    raw["output_dir"] = str(out / name)
    raw["measure"] = {"batch_sizes": [1, 8], "threads": threads, "budget_s": budget}
    recipe = out / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    return optkit_json("run", str(recipe))["steps"]


def print_chain(name: str, steps: list[dict]) -> None:
    torch_row, fp32 = steps[0], next(s for s in steps if s["step"] == "export")
    print(f"\n## {name}: per step (p50 ratio < 1 is faster)")
    print(f"  {'step':9s} {'top-1':>7s} {'Δ vs fp32':>9s}  {'bs1 ms':>7s} {'/torch':>7s} {'/fp32':>6s}  "
          f"{'bs8 ms':>7s} {'/torch':>7s} {'/fp32':>6s}  what changed")
    for s in steps:
        acc = s["accuracy"]["value"]
        cells = []
        for bs in (1, 8):
            p = lat(s, bs)
            cells.append(f"{p:7.3f} {p / lat(torch_row, bs):7.2f} {p / lat(fp32, bs):6.2f}")
        print(f"  {s['step']:9s} {100 * acc:6.2f}% {100 * (acc - fp32['accuracy']['value']):+8.2f}pt  "
              f"{cells[0]}  {cells[1]}  {s['summary'][:110]}")


def int8_modes(name: str, out: Path, budget: float, threads: int) -> dict[str, dict]:
    fused = out / name / "02_fuse.onnx"
    rows = {}
    for mode in ("static", "dynamic"):
        rows[mode] = optkit_json("quantize", str(fused), "-o", str(out / f"{name}_{mode}.onnx"), "--mode", mode,
                            "--max-drop", "100", "--no-guard", "--batch-sizes", "1,8", "--threads", str(threads),
                            "--budget-s", str(budget))["steps"][-1]
    return rows


def simplifiers(name: str, out: Path) -> None:
    exported = out / name / "00_export.onnx"
    for engine in ("onnxslim", "onnxsim"):
        start = time.perf_counter()
        row = optkit_json("simplify", str(exported), "-o", str(out / f"{name}_{engine}.onnx"), "--engine", engine,
                     "--no-measure")["steps"][-1]
        wall = time.perf_counter() - start
        car = json.loads((out / f"{name}_{engine}.onnx.optkit.json").read_text())["record"]["details"]
        print(f"  {name:11s} {engine:9s} nodes {car['nodes_before']:4d} -> {car['nodes_after']:4d}   "
              f"size {row['size_bytes'] / 1024:7.1f} KB   {wall:5.1f} s (whole command)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print_machine()
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        chains = {name: run_recipe(name, out, args.budget_s, args.threads) for name in RECIPES}
        for name, steps in chains.items():
            print_chain(name, steps)

        print("\n## int8 modes on the fused model, side by side (vs the fp32 ONNX export)")
        best = {}
        for name, steps in chains.items():
            fp32 = next(s for s in steps if s["step"] == "export")
            for mode, row in int8_modes(name, out, args.budget_s, args.threads).items():
                drop = 100 * (fp32["accuracy"]["value"] - row["accuracy"]["value"])
                r1, r8 = lat(row, 1) / lat(fp32, 1), lat(row, 8) / lat(fp32, 8)
                print(f"  {name:11s} {mode:8s} top-1 {100 * row['accuracy']['value']:6.2f}% (drop {drop:+.2f}pt)  "
                      f"p50 bs1 {lat(row, 1):.3f} ms ({r1:.2f}x)  bs8 {lat(row, 8):.3f} ms ({r8:.2f}x)")
                best.setdefault(name, []).append((mode, drop, r1, r8))

        print("\n## simplifier engines on the exported models")
        for name in chains:
            simplifiers(name, out)

        cnn = chains["digits_cnn"]
        fp32, q = next(s for s in cnn if s["step"] == "export"), cnn[-1]
        drop = 100 * (fp32["accuracy"]["value"] - q["accuracy"]["value"])
        checks.append(("digits_cnn static int8: top-1 drop <= 0.5 pt vs fp32", drop <= 0.5, f"{drop:+.2f} pt"))
        for bs in (1, 8):
            ratio = lat(q, bs) / lat(fp32, bs)
            checks.append((f"digits_cnn static int8: p50 <= 0.6x fp32 ONNX at batch {bs}", ratio <= 0.6, f"{ratio:.3f}x"))
        vit_ok = [(m, d, r1, r8) for m, d, r1, r8 in best["digits_vit"] if d <= 1.0 and r1 < 1 and r8 < 1]
        checks.append(("digits_vit best int8: drop <= 1 pt and faster than fp32 ONNX at batch 1 and 8", bool(vit_ok),
                       ", ".join(f"{m}: {d:+.2f}pt, {r1:.2f}x/{r8:.2f}x" for m, d, r1, r8 in best["digits_vit"])))
        fused = json.loads((out / "digits_vit" / "02_fuse.onnx.optkit.json").read_text())["record"]["details"]["transformer"]["fused"]
        checks.append(("digits_vit fusions fire: Attention and LayerNorm counts > 0", fused.get("Attention", 0) > 0 and
                       fused.get("LayerNormalization", 0) + fused.get("SkipLayerNormalization", 0) > 0, json.dumps(fused)))
    print_checks(checks)


if __name__ == "__main__":
    main()
